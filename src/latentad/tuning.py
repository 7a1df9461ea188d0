"""Choosing options without test images: a validation split of the normal training images, each
validation image scored as it is and once with a synthetic defect (`data.defects`, exact masks).

Published numbers often come from settings picked on the test set they are reported on. Here a
choice (levels, resolution, an improvement switched on or off) is made by fitting each candidate on
the rest of the normal training images and scoring the validation set; the winner, every candidate's
figures and the data they were measured on go into the run's config (`fit_run(tune=...)`), so the
choice can be audited. The test images are never read.
"""

from __future__ import annotations

import time
import tomllib
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentad.data.base import ImageSet, Record
from latentad.data.defects import ALL_KINDS, KINDS, add_defect
from latentad.errors import ConfigError

CRITERIA = ("auto", "image_auroc", "pixel_auroc", "mean")


@dataclass
class TuneSpec:
    """candidates: option sets to try (each merged over the run's options); criterion: what decides
    (auto = pixel AUROC for a localising method, else image AUROC; mean = their average); fraction:
    share of the normal training images held out for validation; kinds: synthetic defect kinds."""

    candidates: list[dict[str, Any]]
    criterion: str = "auto"
    fraction: float = 0.2
    kinds: tuple[str, ...] = KINDS

    @staticmethod
    def parse(raw: dict[str, Any], where: str = "tune") -> TuneSpec:
        """Check a `tune` table ({candidates = [...], criterion = ..., fraction = ..., kinds = [...]})."""
        known = {"candidates", "criterion", "fraction", "kinds"}
        extra = sorted(set(raw) - known)
        if extra:
            raise ConfigError(f"{where}: unknown key {extra[0]!r} (known: {', '.join(sorted(known))})")
        cands = raw.get("candidates")
        if not isinstance(cands, list) or len(cands) < 2 or not all(isinstance(c, dict) for c in cands):
            raise ConfigError(f"{where}: candidates must be a list of at least two option tables")
        criterion = raw.get("criterion", "auto")
        if criterion not in CRITERIA:
            raise ConfigError(f"{where}: criterion = {criterion!r} must be one of {', '.join(CRITERIA)}")
        fraction = raw.get("fraction", 0.2)
        if not isinstance(fraction, int | float) or isinstance(fraction, bool) or not 0 < fraction < 1:
            raise ConfigError(f"{where}: fraction = {fraction!r} must be a number in (0, 1)")
        kinds = raw.get("kinds", list(KINDS))
        if not isinstance(kinds, list) or not kinds or any(k not in ALL_KINDS for k in kinds):
            raise ConfigError(f"{where}: kinds = {kinds!r} must be a non-empty list of {', '.join(ALL_KINDS)}")
        return TuneSpec([dict(c) for c in cands], criterion, float(fraction), tuple(kinds))


def read_tune_file(path: Path) -> dict[str, Any]:
    """The `[tune]` table of a TOML file (or the whole file when it has no such table), checked."""
    if not path.is_file():
        raise ConfigError(f"--tune {path}: file not found")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--tune {path}: not valid TOML ({exc})") from None
    table = raw.get("tune", raw)
    TuneSpec.parse(table, f"--tune {path}")
    return table


def _with_defect(rec: Record, seed: int, kinds: tuple[str, ...], donors: list[Record]) -> Record:
    """`rec` carrying one synthetic defect, drawn from a generator seeded by (seed, path): the same
    defect whatever the order images are read in; `graft` takes its band from one of `donors`."""

    def load(*_: Any) -> tuple[np.ndarray, np.ndarray]:
        image = rec.load()[0]
        image = image if image.ndim == 3 else image[:, :, None]
        rng = np.random.default_rng([seed, zlib.crc32(rec.path.encode())])
        kind = kinds[int(rng.integers(len(kinds)))]
        donor = donors[int(rng.integers(len(donors)))].load()[0] if kind == "graft" else None
        out, mask, _ = add_defect(image, rng, kind, donor)
        return out, mask

    return Record(f"{rec.path}#synthetic", 1, "synthetic", load)


def _as_normal(rec: Record) -> Record:
    def load(*_: Any) -> tuple[np.ndarray, np.ndarray]:
        image = rec.load()[0]
        return image, np.zeros(image.shape[:2], dtype=bool)

    return Record(rec.path, 0, "good", load)


def validation_split(train: ImageSet, fraction: float, seed: int, kinds: tuple[str, ...] = KINDS
                     ) -> tuple[ImageSet, ImageSet]:
    """(images to fit on, validation set): a seeded `fraction` of the normal training images, each
    once as it is and once with a synthetic defect (masks exact)."""
    n_val = int(round(len(train) * fraction))
    if n_val < 2 or len(train) - n_val < 2:
        raise ConfigError(f"tune: {len(train)} training images are too few to hold out {fraction:.0%} for validation")
    order = np.random.default_rng(seed + 54_321).permutation(len(train))
    val_idx, fit_idx = sorted(order[:n_val].tolist()), sorted(order[n_val:].tolist())
    donors = [train.records[i] for i in fit_idx]  # graft: a band of a normal image the model is fitted on
    val_records = [r for i in val_idx for r in (_as_normal(train.records[i]),
                                                _with_defect(train.records[i], seed, kinds, donors))]
    val = ImageSet(val_records, train.size, train.channels, True, f"{train.name}/validation",
                   resize=train.resize)
    return train.subset(fit_idx), val


def _score(method: str, preset: str | None, options: dict[str, Any], fit: ImageSet, val: ImageSet,
           seed: int, device: str | None) -> dict[str, Any]:
    from latentad.detectors.base import create
    from latentad.evaluation import score_set
    from latentad.metrics import image_auroc, pixel_auroc

    t0 = time.perf_counter()
    det = create(method, preset, device=device, seed=seed, **options)
    det.fit(fit)
    with torch.inference_mode():
        pred, labels, masks, *_ = score_set(det, val, progress=None)
    row: dict[str, Any] = {"image_auroc": float(image_auroc(labels, pred.image_scores)), "pixel_auroc": None}
    if pred.anomaly_maps is not None and masks is not None:
        row["pixel_auroc"] = float(pixel_auroc(masks, pred.anomaly_maps))
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def _value(row: dict[str, Any], criterion: str) -> float:
    if criterion == "mean":
        parts = [v for v in (row["image_auroc"], row["pixel_auroc"]) if v is not None]
        return float(np.mean(parts))
    value = row[criterion]
    return float("-inf") if value is None else float(value)


def tune(method: str, preset: str | None, options: dict[str, Any], spec: TuneSpec, train: ImageSet, seed: int,
         device: str | None = None) -> dict[str, Any]:
    """Fit every candidate on the fitting part, score the validation set, keep the best (the first
    on a tie: list the simpler candidate first). Returns what goes into the run's config."""
    from latentad.detectors.base import get_method
    from latentad.progress import track

    cls = get_method(method)
    for k, cand in enumerate(spec.candidates):  # every candidate refused before the first one is fitted
        try:
            cls.from_preset(preset, **{**options, **cand})
        except ConfigError as exc:
            raise ConfigError(f"tune candidate {k + 1} ({method}): {exc}") from None
    localizes = cls.localizes
    criterion = spec.criterion if spec.criterion != "auto" else ("pixel_auroc" if localizes else "image_auroc")
    if criterion == "pixel_auroc" and not localizes:
        raise ConfigError(f"tune: criterion pixel_auroc, but {method} gives no maps (use image_auroc)")
    fit, val = validation_split(train, spec.fraction, seed, spec.kinds)
    rows = []
    for cand in track(spec.candidates, description=f"tune {method}", total=len(spec.candidates)):
        rows.append({"options": cand, **_score(method, preset, {**options, **cand}, fit, val, seed, device)})
    best = max(range(len(rows)), key=lambda i: (_value(rows[i], criterion), -i))
    return {
        "chosen": rows[best]["options"], "criterion": criterion, "candidates": rows,
        "data": (f"validation split of the normal training images (seed {seed}): {len(fit)} to fit, "
                 f"{len(val) // 2} held out, each scored as it is and with one synthetic defect "
                 f"({', '.join(spec.kinds)}); no test image read"),
    }
