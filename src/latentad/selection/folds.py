"""Validation folds made from the normal training images only: a seeded share held out, each held-out
image also shown with one synthetic defect of every kind (`data.defects`), the held-out images split
into folds so that every figure comes with its standard error.

Images are decoded once and kept reduced in memory (longer side at most `CACHE_SIDE`): every candidate
is fitted and scored on the same pixels, and a search that fits many candidates does not decode the
same files again and again. The test images are never read.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from latentad.data.base import ImageSet, Record, array_record
from latentad.data.defects import ALL_KINDS, EVERY_KIND, add_defect
from latentad.errors import ConfigError

CACHE_SIDE = 512
FOLDS = 4
FRACTION = 0.25  # share of the normal images held out for validation
MAX_HELD = 60  # held-out images beyond this sharpen the figures little and cost scoring time
MIN_FIT = 8


def min_images(folds: int = FOLDS, fraction: float = FRACTION) -> int:
    """The fewest normal images that give `folds` folds of two held-out images and MIN_FIT to fit on."""
    n = 2
    while round(n * fraction) < 2 * folds or n - round(n * fraction) < MIN_FIT:
        n += 1
    return n


def cached(images: ImageSet, side: int = CACHE_SIDE, progress: str | None = None) -> ImageSet:
    """`images` decoded once (by the data pipeline's threads), each reduced so that its longer side is at
    most `side`."""
    from latentad.data.pipeline import prefetched
    from latentad.progress import track

    def reduced(i: int) -> Record:
        rec = images.records[i]
        image = rec.load()[0]
        h, w = image.shape[:2]
        if max(h, w) > side:
            size = (max(1, round(w * side / max(h, w))), max(1, round(h * side / max(h, w))))
            pil = Image.fromarray(image.squeeze(2) if image.ndim == 3 and image.shape[2] == 1 else image)
            image = np.asarray(pil.resize(size, Image.Resampling.BILINEAR))
        return array_record(rec.path, image, rec.label, rec.defect_type)

    n = len(images.records)
    records = list(track(prefetched(range(n), reduced), progress, total=n))
    return ImageSet(records, images.size, images.channels, False, images.name, resize=images.resize)


def _defect_record(rec: Record, kind: str, seed: int, donors: list[Record]) -> Record:
    """`rec` with one defect of `kind`, drawn from (seed, the file's last two path parts, kind): the same
    whatever the order the images are read in and however the data folder is spelt."""
    where = "/".join(Path(rec.path).parts[-2:]).encode()

    def load(*_: Any) -> tuple[np.ndarray, None]:
        image = rec.load()[0]
        image = image if image.ndim == 3 else image[:, :, None]
        rng = np.random.default_rng([seed, zlib.crc32(where), EVERY_KIND.index(kind)])
        donor = donors[int(rng.integers(len(donors)))].load()[0] if kind in ("graft", "perlin") else None
        return add_defect(image, rng, kind, donor)[0], None

    return Record(f"{rec.path}#{kind}", 1, kind, load)


@dataclass
class Validation:
    """fit: the images candidates are fitted on; normal: the held-out images; defective: per kind,
    each held-out image with one defect of that kind; groups: each held-out image's fold."""

    fit: ImageSet
    normal: ImageSet
    defective: dict[str, ImageSet]
    groups: np.ndarray
    seed: int

    def describe(self) -> str:
        return (f"validation folds of the normal training images (seed {self.seed}): {len(self.fit)} to fit on, "
                f"{len(self.normal)} held out in {int(self.groups.max()) + 1} folds, each scored as it is and "
                f"with one defect of each kind ({', '.join(self.defective)}); no test image read")


def make_validation(train: ImageSet, seed: int, kinds: tuple[str, ...] = ALL_KINDS, folds: int = FOLDS,
                    fraction: float = FRACTION) -> Validation:
    """Hold out a seeded share of `train` (at most MAX_HELD images) and build the defect sets."""
    need = min_images(folds, fraction)
    if len(train) < need:
        raise ConfigError(f"auto: {len(train)} normal training images (after the calibration hold-out) are too "
                          f"few for {folds} validation folds: at least {need} are needed")
    n_val = min(MAX_HELD, int(round(len(train) * fraction)))
    order = np.random.default_rng(seed + 77_777).permutation(len(train))
    val_idx, fit_idx = sorted(order[:n_val].tolist()), sorted(order[n_val:].tolist())
    fit, held = train.subset(fit_idx), train.subset(val_idx)
    donors = fit.records
    defective = {k: ImageSet([_defect_record(r, k, seed, donors) for r in held.records], train.size,
                             train.channels, False, f"{train.name}/validation-{k}", resize=train.resize)
                 for k in kinds}
    groups = np.arange(n_val) % folds
    np.random.default_rng(seed + 88_888).shuffle(groups)
    return Validation(fit, held, defective, groups, seed)


def fold_figures(normal: np.ndarray, defective: dict[str, np.ndarray], groups: np.ndarray,
                 kinds: tuple[str, ...]) -> dict[str, Any]:
    """The criterion (image AUROC of normal against defective, the mean over `kinds`) per fold, its
    mean and standard error, and each kind's AUROC over all folds."""
    from latentad.metrics import image_auroc

    def auroc(neg: np.ndarray, pos: np.ndarray) -> float:
        return float(image_auroc(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos]))

    n_folds = int(groups.max()) + 1
    per_fold = [float(np.mean([auroc(normal[groups == f], defective[k][groups == f]) for k in kinds]))
                for f in range(n_folds)]
    values = np.array(per_fold)
    return {"value": float(values.mean()), "se": float(values.std(ddof=1) / np.sqrt(n_folds)),
            "folds": [round(v, 4) for v in per_fold],
            "per_kind": {k: round(auroc(normal, s), 4) for k, s in defective.items()}}
