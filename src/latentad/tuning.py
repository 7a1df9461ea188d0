"""Choosing options without test images: a validation split of the normal training images, each
validation image scored as it is and once with a synthetic defect (`data.defects`, exact masks).

Published numbers often come from settings picked on the test set they are reported on. Here a
choice (levels, resolution, an improvement switched on or off) is made by fitting each candidate on
the rest of the normal training images and scoring the validation set; the winner, every candidate's
figures and the data they were measured on go into the run's config (`fit_run(tune=...)`), so the
choice can be audited. The test images are never read.
"""

from __future__ import annotations

import json
import time
import tomllib
import warnings
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
# Below this, the best candidate's validation figure is too close to chance (0.5) to rank anything:
# seen on bottle, whose validation pixel AUROC with band / graft defects stays near chance (a band of
# another bottle is another normal bottle) and ranked an option the wrong way (docs/ANALYSIS.md).
NEAR_CHANCE = 0.65
RULES = ("best", "one_se")


@dataclass
class TuneSpec:
    """candidates: option sets to try (each merged over the run's options); criterion: what decides
    (auto = pixel AUROC for a localising method, else image AUROC; mean = their average); fraction:
    share of the normal training images held out for validation; kinds: synthetic defect kinds;
    folds: independent validation splits (each its own draw of held-out images and defects), the
    criterion averaged over them; rule: "best" keeps the highest mean, "one_se" the first candidate
    (list the simplest first) within one standard error of the best: a lead smaller than the
    split-to-split noise does not buy a more complex option (needs folds >= 2)."""

    candidates: list[dict[str, Any]]
    criterion: str = "auto"
    fraction: float = 0.2
    kinds: tuple[str, ...] = KINDS
    folds: int = 1
    rule: str = "best"

    @staticmethod
    def parse(raw: dict[str, Any], where: str = "tune") -> TuneSpec:
        """Check a `tune` table ({candidates = [...], criterion = ..., fraction = ..., kinds = [...]})."""
        known = {"candidates", "criterion", "fraction", "kinds", "folds", "rule"}
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
        folds = raw.get("folds", 1)
        if not isinstance(folds, int) or isinstance(folds, bool) or not 1 <= folds <= 20:
            raise ConfigError(f"{where}: folds = {folds!r} must be an integer from 1 to 20")
        rule = raw.get("rule", "best")
        if rule not in RULES:
            raise ConfigError(f"{where}: rule = {rule!r} must be one of {', '.join(RULES)}")
        if rule == "one_se" and folds < 2:
            raise ConfigError(f"{where}: rule = one_se needs folds >= 2 (a standard error needs several splits)")
        return TuneSpec([dict(c) for c in cands], criterion, float(fraction), tuple(kinds), folds, rule)


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
    from latentad.evaluation import score_set
    from latentad.metrics import image_auroc, pixel_auroc
    from latentad.registry import create

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
    from latentad.progress import track
    from latentad.registry import get_method

    cls = get_method(method)
    for k, cand in enumerate(spec.candidates):  # every candidate refused before the first one is fitted
        try:
            cls.config_for(preset, **{**options, **cand})
        except ConfigError as exc:
            raise ConfigError(f"tune candidate {k + 1} ({method}): {exc}") from None
    localizes = cls.localizes
    criterion = spec.criterion if spec.criterion != "auto" else ("pixel_auroc" if localizes else "image_auroc")
    if criterion == "pixel_auroc" and not localizes:
        raise ConfigError(f"tune: criterion pixel_auroc, but {method} gives no maps (use image_auroc)")
    splits = [validation_split(train, spec.fraction, seed + k, spec.kinds) for k in range(spec.folds)]
    rows = []
    for cand in track(spec.candidates, description=f"tune {method}", total=len(spec.candidates)):
        per_fold = [_score(method, preset, {**options, **cand}, fit, val, seed, device) for fit, val in splits]
        rows.append({"options": cand, **_summarise(per_fold, criterion)})
    best = _choose(rows, spec.rule)
    fit, val = splits[0]
    folds = f"{spec.folds} splits (seeds {seed}..{seed + spec.folds - 1}), rule {spec.rule}; " if spec.folds > 1 else ""
    top = max(r["value"] for r in rows)
    warning = None
    if top < NEAR_CHANCE:
        warning = (f"the best candidate scores {top:.3f} ({criterion}) on the validation split, near chance: its "
                   f"synthetic defects ({', '.join(spec.kinds)}) barely show on these images, so the choice is "
                   "unreliable (try other kinds)")
        warnings.warn(f"tune {method}: {warning}", stacklevel=2)  # the CLI and a benchmark cell show it
    return {
        "chosen": rows[best]["options"], "criterion": criterion, "candidates": rows, "warning": warning,
        "data": (f"validation split of the normal training images (seed {seed}): {folds}{len(fit)} to fit, "
                 f"{len(val) // 2} held out, each scored as it is and with one synthetic defect "
                 f"({', '.join(spec.kinds)}); no test image read"),
    }


def _summarise(per_fold: list[dict[str, Any]], criterion: str) -> dict[str, Any]:
    """One candidate's row: its figures (means over the splits), and with several splits each split's
    figures and the criterion's standard error."""
    if len(per_fold) == 1:
        return {**per_fold[0], "value": _value(per_fold[0], criterion)}
    values = np.array([_value(r, criterion) for r in per_fold])
    row: dict[str, Any] = {}
    for key in ("image_auroc", "pixel_auroc", "seconds"):
        parts = [r[key] for r in per_fold]
        row[key] = None if any(p is None for p in parts) else float(np.mean(parts))
    return {**row, "value": float(values.mean()), "se": float(values.std(ddof=1) / np.sqrt(len(values))),
            "folds": per_fold}


def _choose(rows: list[dict[str, Any]], rule: str) -> int:
    """The winner's index: the highest mean (the first on a tie), or under "one_se" the first row
    within one standard error of it."""
    best = max(range(len(rows)), key=lambda i: (rows[i]["value"], -i))
    if rule == "one_se":
        floor = rows[best]["value"] - rows[best]["se"]
        return next(i for i, r in enumerate(rows) if r["value"] >= floor)
    return best


def summary_lines(record: dict[str, Any]) -> list[str]:
    """One line per candidate (its options, validation figures, criterion ± s.e. with several splits),
    the chosen one marked: what `latentad fit --tune` prints before its `tuned:` line."""

    def fmt(v: float | None) -> str:
        return "  -  " if v is None else f"{v:.4f}"

    lines = []
    for row in record["candidates"]:
        mark = "*" if row["options"] == record["chosen"] else " "
        value = row.get("value")
        crit = "" if value is None else f" {record['criterion']} {value:.4f}" + (
            f" ± {row['se']:.4f}" if "se" in row else "")
        lines.append(f"{mark} {json.dumps(row['options'], sort_keys=True)}: image {fmt(row['image_auroc'])} "
                     f"pixel {fmt(row['pixel_auroc'])}{crit}")
    return lines
