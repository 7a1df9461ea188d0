"""The calibrations a service writes, and what it writes them from.

A single-class model has one calibration (MODEL_DIR/calibration.json); a multi-class run has one per
product (MODEL_DIR/calibrations/<product>.json), and every write names its product: the one the
predictions of that product are then judged by. Each write first keeps the calibration it replaces
in MODEL_DIR/calibration.history/<product or "run">/ (numbered, the newest last, at most
HISTORY_KEEP), so undo walks back the whole history, one write at a time.

A recalibration with feedback is rebuilt from its base, never stacked on its own previous result:
the base is the calibration in force when feedback was first used (a calibration from good images
replaces it), and the new threshold is computed over the base's normal scores and the feedback
parts' scores, each part once. The feedback cannot lift the threshold above the base's top score by
more than FEEDBACK_MARGIN of the base's spread (top minus median) unless the request says
`force`: parts the model flags far above every good calibration image are not false alarms that a
threshold should absorb. The result keeps the base's normal scores as its reference (drift,
later feedback), so pressing the button twice gives the same threshold.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from pathlib import Path

import numpy as np

from latentad import io
from latentad.calibration import Calibration
from latentad.errors import ConfigError
from latentad.metrics.thresholds import threshold_for_fpr

HISTORY_KEEP = 100
FEEDBACK_MARGIN = 0.25


def digest(cal: Calibration) -> str:
    return hashlib.sha256(repr(dataclasses.asdict(cal)).encode()).hexdigest()[:16]


def feedback_ceiling(base: Calibration) -> float:
    """The highest threshold feedback may set without `force`."""
    scores = np.asarray(base.normal_scores, dtype=np.float64)
    top, median = float(scores.max()), float(np.median(scores))
    return max(top + FEEDBACK_MARGIN * (top - median), base.image_threshold)


def with_feedback(base: Calibration, marked: list[float], force: bool) -> tuple[Calibration, float | None]:
    """The base's threshold recomputed over its normal scores and the `marked` parts' scores, capped
    at `feedback_ceiling` unless `force`; (the calibration, the ceiling it was capped at or None)."""
    if not base.normal_scores:
        raise ConfigError("calibrate/feedback: this calibration keeps no normal scores (recalibrate from good "
                          "images once first)")
    pool = np.array([*base.normal_scores, *marked], dtype=np.float64)
    threshold, capped = float(threshold_for_fpr(pool, base.target_fpr)), None
    ceiling = feedback_ceiling(base)
    if not force and threshold > ceiling:
        threshold, capped = ceiling, ceiling
    source = f"{base.source} + {len(marked)} parts an operator marked good"
    cal = dataclasses.replace(base, image_threshold=threshold, n_images=len(pool), source=source,
                              min_fpr=1.0 / (len(pool) + 1))
    return cal, capped


class Calibrations:
    """The calibration in force for each product (the key None: a single-class model's)."""

    def __init__(self, model_dir: Path, default: Calibration, products: list[str]) -> None:
        self.model_dir, self.products = Path(model_dir), list(products)
        self.lock = threading.Lock()
        self.current: dict[str | None, Calibration] = (
            {p: Calibration.load(self.path(p)) for p in products} if products else {None: default})

    def key(self, product: str | None, what: str) -> str | None:
        """The product a write or a prediction names, checked: required on a multi-class run, refused
        on a single-class one (one line naming the products)."""
        if not self.products:
            if product is not None:
                raise ConfigError(f"product {product!r}: this model is not multi-class (it has one threshold)")
            return None
        if product is None:
            raise ConfigError(f"{what}: this is a multi-class run: name the product whose calibration to write "
                              f"(product=one of {', '.join(self.products)})")
        if product not in self.products:
            raise ConfigError(f"product {product!r}: unknown (the products: {', '.join(self.products)})")
        return product

    def get(self, key: str | None) -> Calibration:
        with self.lock:
            return self.current[key]

    def path(self, key: str | None) -> Path:
        return self.model_dir / "calibration.json" if key is None else self.model_dir / "calibrations" / f"{key}.json"

    def history(self, key: str | None) -> Path:
        return self.model_dir / "calibration.history" / (key or "run")

    def entries(self, key: str | None) -> list[Path]:
        folder = self.history(key)
        return sorted(folder.glob("*.json")) if folder.is_dir() else []

    def swap(self, key: str | None, cal: Calibration) -> None:
        """Make `cal` the calibration of `key`, on disk and in use; the one it replaces joins the history."""
        with self.lock:
            kept = self.entries(key)
            number = int(kept[-1].stem) + 1 if kept else 1
            io.write_bytes(self.history(key) / f"{number:06d}.json", self.path(key).read_bytes())
            cal.save(self.path(key))
            self.current[key] = cal
            for old in kept[: max(0, len(kept) + 1 - HISTORY_KEEP)]:
                old.unlink()

    def undo(self, key: str | None) -> Calibration:
        """Restore the calibration the newest write replaced (and again, back to the first)."""
        with self.lock:
            kept = self.entries(key)
            if not kept:
                raise ConfigError("calibrate/undo: no previous calibration to restore")
            cal = Calibration.load(kept[-1])
            io.write_bytes(self.path(key), kept[-1].read_bytes())
            kept[-1].unlink()
            io.sync_folder(self.history(key))
            self.current[key] = cal
        return cal

    def feedback_base(self, key: str | None) -> Calibration:
        """The calibration feedback is added to: the stored base while the calibration in force is one
        that feedback produced from it (or an undo back to it), else the calibration in force."""
        folder = self.model_dir / "feedback" / "base"
        name = key or "run"
        state = io.read_json(folder / "derived.json") if (folder / "derived.json").is_file() else {}
        current = self.get(key)
        if (folder / f"{name}.json").is_file() and digest(current) in state.get(name, []):
            return Calibration.load(folder / f"{name}.json")
        current.save(folder / f"{name}.json")
        io.write_json(folder / "derived.json", {**state, name: [digest(current)]})
        return current

    def derived(self, key: str | None, cal: Calibration) -> None:
        """Record that `cal` came from feedback on the stored base (the next press starts there again)."""
        folder = self.model_dir / "feedback" / "base"
        name = key or "run"
        state = io.read_json(folder / "derived.json") if (folder / "derived.json").is_file() else {}
        io.write_json(folder / "derived.json", {**state, name: [*state.get(name, []), digest(cal)][-HISTORY_KEEP:]})
