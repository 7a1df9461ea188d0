"""AUPIMO: area under the per-image overlap curve (Bertoldo et al., BMVC 2024; github.com/jpcbertoldo/aupimo).

Pixel AUROC and AUPRO average over a whole test set; AUPIMO scores every anomalous image on its own,
at thresholds chosen only from normal images, so it says how much of each defect a detector finds
while it produces almost no false positives on normal images.

- Shared FPR(t): the mean over normal images (mask all zero) of each image's fraction of pixels
  scoring >= t. All images share H x W, so this equals the pooled fraction over normal-image pixels.
- TPR_i(t) of an anomalous image i: the fraction of its defect pixels scoring >= t.
- PIMO curve of image i: TPR_i against log(shared FPR); AUPIMO_i is its trapezoid area over
  FPR in [fpr_bounds], divided by the log-width log(hi / lo), so it lies in [0, 1] (1 = every defect
  pixel above every threshold in the range, 0 = none).

Thresholds: the reference evaluates a fine grid (300,000 thresholds across the normal scores) and
integrates between the grid points closest to the bounds. Here the default (num_thresholds=None)
evaluates the curve exactly, as the limit of an infinitely fine grid: only the top fpr_hi fraction of
normal pixels matters, so every distinct normal score in that range is a curve step (the shared FPR
changes only there) and TPR is taken just above and at each step. The curve is then cut exactly at
the bounds by interpolation in log FPR. An integer num_thresholds instead uses that many thresholds
evenly spaced between the thresholds where the shared FPR crosses the two bounds (reference style).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from latentad.metrics.aupro import clipped_trapezoid
from latentad.metrics.auroc import check_pixel_inputs


@dataclass
class AUPIMOResult:
    """mean: nanmean over anomalous images; per_image: (N,), nan for normal images;
    image_indices: indices of the anomalous images, i.e. where per_image is defined;
    fpr_bounds: the FPR range asked for; fpr_bounds_used: the range integrated over (narrowed when the
    normal pixels cannot reach the lower bound); n_normal_pixels: the pixels that set the shared FPR."""

    mean: float
    per_image: np.ndarray
    image_indices: np.ndarray
    fpr_bounds: tuple[float, float] = (1e-5, 1e-4)
    fpr_bounds_used: tuple[float, float] = (1e-5, 1e-4)
    n_normal_pixels: int = 0

    @property
    def narrowed(self) -> bool:
        return self.fpr_bounds_used != self.fpr_bounds


def aupimo(
    masks: Any,
    maps: Any,
    fpr_bounds: tuple[float, float] = (1e-5, 1e-4),
    num_thresholds: int | None = None,
) -> AUPIMOResult:
    """Per-image AUPIMO of every anomalous image and their mean (see the module docstring).

    Raises ValueError without normal or without anomalous images, and when the normal pixels cannot
    resolve the upper FPR bound (fewer than about 1 / fpr_bounds[1] normal pixels, or the top score
    shared by that many pixels). If only the lower bound is out of reach, the integration starts at the
    smallest non-zero shared FPR and is normalised by the width actually covered (with a warning).
    """
    f_lo, f_hi = (float(b) for b in fpr_bounds)
    if not 0.0 < f_lo < f_hi <= 1.0:
        raise ValueError(f"fpr_bounds must satisfy 0 < low < high <= 1, got {fpr_bounds}")
    if num_thresholds is not None and num_thresholds < 2:
        raise ValueError(f"num_thresholds must be at least 2 or None, got {num_thresholds}")
    m, a = check_pixel_inputs(masks, maps)
    anomalous = m.reshape(m.shape[0], -1).any(axis=1)
    if anomalous.all():
        raise ValueError("AUPIMO needs normal images (all-zero masks) to set the shared FPR; found none")
    if not anomalous.any():
        raise ValueError("AUPIMO needs anomalous images (masks with defect pixels); found none")

    normal_scores = a[~anomalous].ravel()
    n_px = normal_scores.size
    # the top k normal scores (with every tie of the k-th) cover shared FPRs up to at least f_hi
    k = min(n_px, max(1, math.ceil(f_hi * n_px * (1.0 - 1e-12))))
    t_cut = np.partition(normal_scores, n_px - k)[n_px - k]
    top = normal_scores[normal_scores >= t_cut].astype(np.float64)
    del normal_scores
    values, counts = np.unique(top, return_counts=True)
    values, counts = values[::-1], counts[::-1]  # descending thresholds
    fpr_at = np.cumsum(counts) / n_px  # shared FPR at threshold values[j] (ascending)

    log_lo, log_hi = math.log(f_lo), math.log(f_hi)
    log_min = math.log(fpr_at[0])
    used_lo = f_lo
    if log_min >= log_hi:
        raise ValueError(
            f"AUPIMO cannot reach a shared FPR below {fpr_at[0]:.3g} (upper bound {f_hi:g}): "
            f"{n_px} normal pixels are too few or their top score is tied"
        )
    if log_min > log_lo:
        warnings.warn(
            f"AUPIMO: the shared FPR cannot go below {fpr_at[0]:.3g} with {n_px} normal pixels; "
            f"integrating over [{fpr_at[0]:.3g}, {f_hi:g}] instead of [{f_lo:g}, {f_hi:g}]",
            stacklevel=2,
        )
        log_lo, used_lo = log_min, float(fpr_at[0])

    if num_thresholds is None:
        # Points (ascending FPR): just above values[j] -> (FPR(values[j-1]), TPR(> values[j])) and at
        # values[j] -> (FPR(values[j]), TPR(>= values[j])). The point above the top score has FPR 0
        # (log -inf) and is dropped, as in the reference.
        fpr = np.repeat(fpr_at, 2)[:-1]
        thresholds = np.repeat(values, 2)[1:]
        strict = np.tile([True, False], values.size)[1:]  # TPR(> t) just above, TPR(>= t) at t
    else:
        # grid between the lowest threshold with FPR <= f_lo (or the top score) and the k-th largest
        reach_lo = np.flatnonzero(fpr_at <= f_lo * (1.0 + 1e-12))
        t_high = values[reach_lo[-1]] if reach_lo.size else values[0]
        thresholds = np.linspace(t_high, values[-1], num_thresholds)
        idx = np.searchsorted(-values, -thresholds, side="right") - 1  # last value >= t
        fpr = fpr_at[idx]
        strict = np.zeros(num_thresholds, dtype=bool)
    x = np.log(fpr)

    per_image = np.full(m.shape[0], np.nan)
    image_indices = np.flatnonzero(anomalous)
    for i in image_indices:
        defect = np.sort(a[i][m[i]].astype(np.float64))
        # TPR(>= t) = 1 - #{< t} / n and TPR(> t) = 1 - #{<= t} / n
        below = np.where(
            strict,
            np.searchsorted(defect, thresholds, side="right"),
            np.searchsorted(defect, thresholds, side="left"),
        )
        tpr = 1.0 - below / defect.size
        area = clipped_trapezoid(x, tpr, log_lo, log_hi) / (log_hi - log_lo)
        per_image[i] = min(max(float(area), 0.0), 1.0)
    return AUPIMOResult(mean=float(np.nanmean(per_image)), per_image=per_image, image_indices=image_indices,
                        fpr_bounds=(f_lo, f_hi), fpr_bounds_used=(used_lo, f_hi), n_normal_pixels=n_px)
