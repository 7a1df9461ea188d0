"""Area under the per-region overlap curve (AUPRO), Bergmann et al. 2020/2021 (MVTec AD).

AUROC over pixels lets large defects dominate; PRO weights every connected defect region equally.
For a threshold t, PRO(t) = mean over all ground-truth regions (of all images) of the fraction of the
region's pixels scoring >= t; FPR(t) = fraction of normal pixels (outside any defect, over all images)
scoring >= t. AUPRO = the area under PRO vs FPR for FPR in [0, fpr_limit] divided by fpr_limit, so a
perfect map gets 1.0 and a random map about fpr_limit / 2 (0.15 at the usual 0.3).

As in the MVTec AD evaluation code: regions are 8-connected components of each mask (scipy.ndimage.label
with a 3x3 structure of ones), the curve has one point per distinct score (plus the origin), points
are joined linearly (ties between normal and defect pixels give sloped segments, as in ROC curves),
and the curve is interpolated at exactly fpr_limit before the trapezoid rule.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from latentad.metrics.auroc import check_pixel_inputs


def clipped_trapezoid(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Trapezoid area under the polyline (x, y) restricted to lo <= x <= hi, interpolating at lo and hi.

    x: (K,) non-decreasing; y: (..., K). Repeated x values (vertical steps) add no area, and the
    polyline is cut exactly at the bounds, so a constant y = c over [lo, hi] gives c (hi - lo).
    Returns an array of shape y.shape[:-1].
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x0, x1 = x[:-1], x[1:]
    y0, y1 = y[..., :-1], y[..., 1:]
    a = np.maximum(x0, lo)
    b = np.minimum(x1, hi)
    used = b > a  # segments overlapping [lo, hi] with positive width
    dx = np.where(used, x1 - x0, 1.0)
    ya = y0 + (y1 - y0) * np.where(used, (a - x0) / dx, 0.0)
    yb = y0 + (y1 - y0) * np.where(used, (b - x0) / dx, 0.0)
    return np.sum(np.where(used, 0.5 * (ya + yb) * (b - a), 0.0), axis=-1)


def _regions(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected defect regions of each image, labelled 1..R across the whole set (0 = normal)."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # connect within an image only, never across the image axis
    from scipy import ndimage  # on use: its import would slow every command that only scores

    labelled, count = ndimage.label(masks, structure=structure)
    return labelled, int(count)


def aupro(masks: Any, maps: Any, fpr_limit: float = 0.3, num_thresholds: int | None = None) -> float:
    """Normalised area under PRO vs FPR up to fpr_limit; nan when there is no defect pixel.

    num_thresholds=None evaluates the curve exactly, at every distinct score (one argsort, no loop
    over thresholds). An integer instead samples it at that many thresholds evenly spaced between the
    smallest and largest score, like binned implementations (e.g. anomalib), for comparison with them.
    """
    curve = pro_curve(masks, maps, fpr_limit, num_thresholds)
    if curve is None:
        return float("nan")
    fpr, pro = curve
    return float(clipped_trapezoid(fpr, pro, 0.0, fpr_limit) / fpr_limit)


def pro_curve(masks: Any, maps: Any, fpr_limit: float = 0.3, num_thresholds: int | None = None
              ) -> tuple[np.ndarray, np.ndarray] | None:
    """The PRO curve (pixel FPR ascending from 0, PRO) up to just past fpr_limit; None without defects."""
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    if num_thresholds is not None and num_thresholds < 2:
        raise ValueError(f"num_thresholds must be at least 2 or None, got {num_thresholds}")
    m, a = check_pixel_inputs(masks, maps)
    if not m.any():
        return None
    n_neg = int(m.size - np.count_nonzero(m))
    if n_neg == 0:
        raise ValueError("AUPRO needs normal pixels to measure the false-positive rate; all are defects")

    labelled, n_regions = _regions(m)
    region_size = np.bincount(labelled.ravel(), minlength=n_regions + 1).astype(np.float64)
    # each defect pixel adds 1 / (|its region| * R) to PRO when the threshold drops below its score
    weight = np.zeros(n_regions + 1)
    weight[1:] = 1.0 / (region_size[1:] * n_regions)

    keep = None
    if num_thresholds is None and fpr_limit < 1.0:
        # Only the curve up to the first point past fpr_limit matters. With k = floor(limit n_neg) + 1
        # and t_cut the k-th largest normal score, every distinct score > t_cut has FPR <= limit and
        # the point at t_cut has FPR > limit, so pixels scoring below t_cut can be dropped before sorting.
        k = math.floor(fpr_limit * n_neg) + 1
        if k < n_neg:
            neg = a[~m]
            t_cut = np.partition(neg, n_neg - k)[n_neg - k]
            del neg
            keep = a >= t_cut
    if keep is None:
        scores, is_defect, region = a.ravel(), m.ravel(), labelled.ravel()
    else:
        scores, is_defect, region = a[keep], m[keep], labelled[keep]
    del labelled

    order = np.argsort(scores)[::-1]  # descending; order within ties is irrelevant (group sums)
    scores = scores[order]
    fp_count = np.cumsum(~is_defect[order], dtype=np.int64)
    pro = np.cumsum(weight[region[order]])
    del order
    # one curve point per distinct score: the cumulative sums at the end of each group of ties
    last = np.flatnonzero(np.diff(scores) != 0)
    last = np.append(last, scores.size - 1)
    values = scores[last]  # descending
    fpr = fp_count[last] / n_neg
    pro = np.minimum(pro[last], 1.0)

    if num_thresholds is not None:
        thresholds = np.linspace(float(a.min()), float(a.max()), num_thresholds)[::-1]
        # the point for threshold t is the last distinct value >= t
        idx = np.searchsorted(-values, -thresholds, side="right") - 1
        fpr, pro = fpr[idx], pro[idx]

    return np.concatenate(([0.0], fpr)), np.concatenate(([0.0], pro))
