"""Embed one run's data once and keep only what the questions read, so memory stays bounded.

For a fitted run and the data set it is analysed on, three passes, in this order:

1. the fit part of the normal training images (the run's own calibration hold-out replayed from its
   config): image vectors, a seeded sample of per-position vectors, per-level pooled vectors and a
   per-level bank of position vectors, VQ-VAE code counts;
2. the held-out normal images (the run's calibration hold-out): image vectors;
3. the test set: image vectors, per-position vectors labelled inside / outside the ground-truth
   defect (at latent resolution), per-level pooled vectors and per-level nearest-neighbour maps
   against the bank of pass 1 (level grids pooled to at most 28 a side), VQ-VAE codes and alignment
   distances; then the run's own image scores and maps (`evaluation.score_set`, as `evaluate`
   computes them; maps and masks on a grid of at most 128 px a side, and not kept without masks).

Batches are reduced as they come: no pass keeps whole feature maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from latentad.analysis.latents import grid_of, image_vectors, level_tensors
from latentad.data.base import ImageSet, Split
from latentad.detectors.base import Detector
from latentad.evaluation import score_set
from latentad.runs import holdout

BANK_SIZE = 5_000  # position vectors kept per level for the nearest-neighbour maps
LEVEL_GRID = 28  # level grids are average-pooled to at most this side before the nearest-neighbour search
MAP_SIDE = 128  # the run's maps and the masks are compared on a grid of at most this side
POSITION_SAMPLE = 20_000  # training position vectors kept for the questions on positions
INSIDE = 0.5  # a latent position is "inside" a defect when at least half its cell is masked


@dataclass
class LevelData:
    train: list[np.ndarray] = field(default_factory=list)  # pooled vectors, per batch
    test: list[np.ndarray] = field(default_factory=list)
    bank: list[np.ndarray] = field(default_factory=list)  # sampled position vectors
    maps: list[np.ndarray] = field(default_factory=list)  # test nearest-neighbour maps (n, h, w)


@dataclass
class Collected:
    """What one run's latents say about one data set (numpy arrays, rows in data order)."""

    name: str
    method: str
    family: str
    image_key: str
    train: np.ndarray
    heldout: np.ndarray
    test: np.ndarray
    labels: np.ndarray
    defects: list[str]
    paths: list[str]
    scores: np.ndarray
    threshold: float
    maps: np.ndarray | None
    masks: np.ndarray | None
    grid_key: str | None = None
    grid_note: str | None = None
    train_positions: np.ndarray | None = None
    test_positions: np.ndarray | None = None
    test_inside: np.ndarray | None = None
    levels: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    codebook: dict | None = None
    before: dict[str, np.ndarray] | None = None  # the self-supervised encoder before fine-tuning


def limited(images: ImageSet, limit: int | None, seed: int) -> ImageSet:
    """At most `limit` images, drawn with a seed and in their original order; every label kept."""
    if limit is None or len(images) <= limit:
        return images
    rng = np.random.default_rng(seed)
    labels = images.labels
    keep: list[int] = []
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        share = max(1, int(round(limit * len(idx) / len(labels))))
        keep += rng.choice(idx, size=min(share, len(idx)), replace=False).tolist()
    return images.subset(sorted(keep))


def _sample_rows(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= k else x[rng.choice(len(x), size=k, replace=False)]


def _positions(grid: torch.Tensor) -> np.ndarray:
    """(N, D, h, w) -> (N*h*w, D)."""
    return grid.permute(0, 2, 3, 1).reshape(-1, grid.shape[1]).numpy()


def _inside(masks: torch.Tensor | None, hw: tuple[int, int]) -> np.ndarray | None:
    """Per latent position: 1 inside a defect, 0 outside, -1 on a defect's border (left out)."""
    if masks is None:
        return None
    frac = F.adaptive_avg_pool2d(masks.float().unsqueeze(1), hw).squeeze(1).numpy()
    return np.where(frac >= INSIDE, 1, np.where(frac == 0, 0, -1)).reshape(-1)


def nearest_distance(bank: np.ndarray, queries: np.ndarray, block: int = 1 << 22) -> np.ndarray:
    """L2 distance of each query row to its nearest bank row: an exact search, in float64 so that the
    |q|^2 - 2 q.b + |b|^2 expansion loses nothing to cancellation; queries go in chunks of at most
    `block` distances at a time, so memory stays bounded whatever the sizes."""
    b = torch.from_numpy(np.ascontiguousarray(bank, dtype=np.float64))
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float64))
    if len(q) == 0:
        return np.zeros(0, dtype=np.float64)
    b_sq = (b * b).sum(1)
    step = max(1, block // max(1, len(b)))
    out = []
    for part in q.split(step):
        d2 = torch.addmm(b_sq[None], part, b.T, alpha=-2.0) + (part * part).sum(1, keepdim=True)
        out.append(d2.min(1).values.clamp_min(0).sqrt())
    return torch.cat(out).numpy()


def collect(
    name: str,
    run: Path,
    config: dict,
    detector: Detector,
    threshold: float,
    split: Split,
    limit: int | None = None,
    progress: bool = True,
) -> Collected:
    """Embed the run's fit / held-out / test images once each and reduce them (see the module doc)."""
    seed = int(config.get("seed", 0))
    cal = config.get("calibration", {})
    fit_set, held = holdout(split.train, float(cal.get("fraction", 0.1)), seed)
    fit_set = limited(fit_set, limit, seed)
    held = limited(held, limit, seed) if held is not None else None
    test = limited(split.test, limit, 0)  # one draw for every run, so their scores line up
    rng = np.random.default_rng(seed)
    levels = tuple(getattr(detector, "levels", None) or ())
    squash = detector.config.resize == "squash" and not getattr(detector, "full_resolution", False)
    shape, ch = detector.input_shape, detector.config.channels
    bs = detector.config.batch_size
    state: dict = {"grid_key": None, "codes_train": [], "image_key": None}
    lv: dict[str, LevelData] = {}

    def embed_pass(images: ImageSet, part: str) -> dict[str, list]:
        out: dict[str, list] = {
            "vec": [],
            "pos": [],
            "inside": [],
            "before": [],
            "codes": [],
            "am": [],
            "am_inside": [],
            "code_inside": [],
        }
        per_image = max(1, POSITION_SAMPLE // max(1, len(images)))
        desc = f"{name}: embed {part}" if progress else None
        for batch in images.with_size(shape, ch, shape, resize=detector.config.resize).batches(bs, desc):
            with torch.inference_mode():
                lat = {k: v.cpu() for k, v in detector.embed(batch.images).items()}
            key, vec = image_vectors(lat, levels)
            state["image_key"] = key
            out["vec"].append(vec.numpy())
            if "pooled_before" in lat:
                out["before"].append(lat["pooled_before"].float().numpy())
            grid = grid_of(lat)
            if grid is not None and squash and part != "held-out":
                state["grid_key"] = grid[0]
                g = grid[1].float()
                pos = _positions(g)
                hw = (g.shape[2], g.shape[3])
                if part == "train":
                    out["pos"].append(_sample_rows(pos, per_image * len(g), rng))
                else:
                    ins = _inside(batch.masks, hw)
                    if ins is None:
                        ins = np.where(np.repeat(batch.labels.numpy(), hw[0] * hw[1]) == 0, 0, -1)
                    keep = (ins == 1) | ((ins == 0) & (rng.random(len(ins)) < 32 / (hw[0] * hw[1])))
                    out["pos"].append(pos[keep])
                    out["inside"].append(ins[keep])
            for level, t in level_tensors(lat, levels).items():
                d = lv.setdefault(level, LevelData())
                if t.dim() == 4 and max(t.shape[2:]) > LEVEL_GRID:
                    scale = LEVEL_GRID / max(t.shape[2:])
                    t = F.adaptive_avg_pool2d(t, (max(1, round(t.shape[2] * scale)), max(1, round(t.shape[3] * scale))))
                pooled = t.mean((2, 3)) if t.dim() == 4 else t
                if part == "train":
                    d.train.append(pooled.numpy())
                    if t.dim() == 4:
                        per = max(1, BANK_SIZE // max(1, len(images)))
                        d.bank.append(_sample_rows(_positions(t), per * len(t), rng))
                elif part == "test":
                    d.test.append(pooled.numpy())
                    if t.dim() == 4 and d.bank:
                        bank = np.concatenate(d.bank)
                        dist = nearest_distance(bank, _positions(t))
                        d.maps.append(dist.reshape(len(t), t.shape[2], t.shape[3]))
            if "codes" in lat and "am" in lat:
                codes = lat["codes"].long()
                out["codes"].append(codes.numpy())
                if part == "test":
                    ins = _inside(batch.masks, tuple(codes.shape[1:]))
                    out["am"].append(lat["am"].float().numpy())
                    out["am_inside"].append(ins if ins is not None else np.full(codes.numel(), -1))
        return out

    tr = embed_pass(fit_set, "train")
    ho = embed_pass(held, "held-out") if held is not None and len(held) else None
    te = embed_pass(test, "test")
    grid = shape if max(shape) <= MAP_SIDE else tuple(max(8, round(s * MAP_SIDE / max(shape))) for s in shape)
    with torch.inference_mode():
        pred, labels, masks, paths, defects = score_set(detector, test, f"{name}: score test" if progress else None,
                                                        grid)

    if masks is None:  # no masks: no pixel question, so the maps need not be kept
        pred.anomaly_maps = None
    result = Collected(
        name=name,
        method=detector.name,
        family=detector.family,
        image_key=state["image_key"],
        train=np.concatenate(tr["vec"]),
        heldout=np.concatenate(ho["vec"]) if ho else np.zeros((0, 1)),
        test=np.concatenate(te["vec"]),
        labels=labels,
        defects=list(defects),
        paths=list(paths),
        scores=pred.image_scores,
        threshold=float(threshold),
        maps=pred.anomaly_maps,
        masks=masks,
    )
    if state["grid_key"] is not None:
        result.grid_key = state["grid_key"]
        result.train_positions = np.concatenate(tr["pos"])
        result.test_positions = np.concatenate(te["pos"])
        result.test_inside = np.concatenate(te["inside"])
    elif not squash:
        result.grid_note = f"resize={detector.config.resize} / tiling: positions are not aligned with masks"
    if tr["before"]:
        result.before = {"train": np.concatenate(tr["before"]), "test": np.concatenate(te["before"])}
    result.levels = {
        level: {
            "train": np.concatenate(d.train),
            "test": np.concatenate(d.test),
            **({"maps": np.concatenate(d.maps)} if d.maps else {}),
        }
        for level, d in lv.items()
        if d.train and d.test
    }
    if tr["codes"]:
        result.codebook = {
            "size": int(getattr(detector.config, "codebook_size", 0)) or None,
            "train_codes": np.concatenate(tr["codes"]),
            "test_codes": np.concatenate(te["codes"]),
            "test_am": np.concatenate(te["am"]),
            "test_inside": np.concatenate(te["am_inside"]),
        }
        if detector.name == "vqvae_ssim":
            result.codebook["ssim_maps"] = pred.anomaly_maps
        elif hasattr(detector, "scored_as") and detector.name == "vqvae_ssim_am":
            with torch.inference_mode():
                ssim_pred, *_ = score_set(
                    detector.scored_as("vqvae_ssim"), test, f"{name}: SSIM map" if progress else None
                )
            result.codebook["ssim_maps"] = ssim_pred.anomaly_maps
    return result
