"""Calibration kept apart from the model: a decision threshold and a heat-map scale set from normal
images only. Raw scores never change; recalibrating (`latentad calibrate`) rewrites only this file.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from latentad import io
from latentad.metrics.thresholds import threshold_for_fpr

# the pixel threshold's false-positive rate on normal pixels: the upper end of the range AUPIMO
# (Bertoldo et al.) deems relevant for inspection, fixed in advance, not tuned on any test set
PIXEL_FPR = 1e-4


@dataclass
class Calibration:
    """image_threshold: score above which an image is called anomalous, chosen so that at most
    `target_fpr` of the calibration (normal) images lie above it. map_low / map_high: the median
    and the 99.9th percentile of normal pixels' map values, used to colour heat maps the same way
    for every image. pixel_threshold: the map value above which a pixel is marked defective (masks,
    regions), set at PIXEL_FPR of the calibration images' normal pixels (pixel_fpr: the share measured
    there). min_fpr: the smallest false-positive rate `n_images` normal images can promise,
    1 / (n + 1) (the expected rate when the threshold is their maximum, which it is whenever
    target_fpr < 1 / n)."""

    image_threshold: float
    target_fpr: float
    map_low: float | None
    map_high: float | None
    n_images: int
    source: str
    min_fpr: float | None = None
    pixel_threshold: float | None = None  # a pixel above it is marked defective (masks and regions)
    pixel_fpr: float | None = None  # the share of the calibration images' normal pixels above it
    score_median: float | None = None  # the calibration images' median score: what drift is measured against
    normal_scores: list[float] | None = None  # the calibration images' scores (recalibration with feedback)

    @staticmethod
    def from_normal(scores: np.ndarray, maps: np.ndarray | None, target_fpr: float, source: str) -> Calibration:
        low = high = pixel = pixel_fpr = None
        if maps is not None:
            low, high, pixel = (float(v) for v in np.quantile(pixel_sample(maps), [0.5, 0.999, 1 - PIXEL_FPR]))
            pixel_fpr = held_out_pixel_fpr(maps)
        n = len(scores)
        if target_fpr < 1.0 / n:
            warnings.warn(
                f"calibration: {n} normal image{'s' * (n != 1)} cannot back a target FPR of {target_fpr:g}; the "
                f"threshold is their maximum score and the smallest false-positive rate {n} image{'s' * (n != 1)} "
                f"support{'s' * (n == 1)} is "
                f"1/{n + 1} = {1 / (n + 1):.3g} (hold out more normal images, or set a target FPR >= {1 / n:.3g})",
                stacklevel=2,
            )
        return Calibration(threshold_for_fpr(scores, target_fpr), target_fpr, low, high, n, source, 1.0 / (n + 1),
                           pixel, pixel_fpr, float(np.median(scores)), [float(v) for v in scores])

    def save(self, path: str | Path) -> None:
        io.write_json(path, asdict(self))

    @staticmethod
    def load(path: str | Path) -> Calibration:
        values = io.read_json(path)
        if values.get("min_fpr") is None and values.get("n_images"):
            values["min_fpr"] = 1.0 / (int(values["n_images"]) + 1)  # files written before it was recorded
        return Calibration(**values)


def pixel_sample(maps: np.ndarray) -> np.ndarray:
    """The maps' values, flattened; a fixed-stride sample of 2 M when larger (plenty for quantiles)."""
    flat = maps.reshape(-1)
    return flat[:: flat.size // 2_000_000 + 1] if flat.size > 2_000_000 else flat


def held_out_pixel_fpr(maps: np.ndarray) -> float | None:
    """The share of normal pixels above a pixel threshold set as `from_normal` sets it, measured on
    images it was not set on: set on every other image, measured on the rest, both ways, averaged.
    Measured on the pixels it was set on, the share is PIXEL_FPR by construction and says nothing.
    None with fewer than two images."""
    if len(maps) < 2:
        return None
    rates = []
    for fit, held in ((maps[0::2], maps[1::2]), (maps[1::2], maps[0::2])):
        cut = np.quantile(pixel_sample(fit), 1 - PIXEL_FPR)
        rates.append(float(np.mean(pixel_sample(held) > cut)))
    return float(np.mean(rates))


def with_more_normals(cal: Calibration, scores: list[float], source: str) -> Calibration:
    """`cal` with its threshold recomputed over its own normal scores and `scores` (more good parts,
    e.g. false alarms an operator marked); the map scale and pixel threshold stay."""
    if not cal.normal_scores:
        from latentad.errors import ConfigError

        raise ConfigError("calibrate/feedback: this calibration keeps no normal scores (recalibrate from good "
                          "images once first)")
    pool = np.array([*cal.normal_scores, *scores])
    n = len(pool)
    return Calibration(threshold_for_fpr(pool, cal.target_fpr), cal.target_fpr, cal.map_low, cal.map_high, n, source,
                       1.0 / (n + 1), cal.pixel_threshold, cal.pixel_fpr, float(np.median(pool)), pool.tolist())
