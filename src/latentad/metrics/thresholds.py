"""Image-level operating points: the F1-optimal threshold and a threshold from normal scores only.

f1_max uses labels, so it is an oracle figure for reports; threshold_for_fpr needs only normal
scores, so it is what a deployed detector can be calibrated with.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from latentad.metrics.auroc import as_numpy, check_image_inputs


def f1_max(labels: Any, scores: Any) -> tuple[float, float]:
    """(best F1, its threshold) over the thresholds of sklearn's precision_recall_curve.

    An image is predicted anomalous when score >= threshold (sklearn's rule).
    """
    y, s = check_image_inputs(labels, scores)
    if not (y == 1).any():
        raise ValueError("F1 needs at least one anomalous (1) image")
    from sklearn.metrics import precision_recall_curve  # on use: calibration alone never pays its import

    precision, recall, thresholds = precision_recall_curve(y, s)
    precision, recall = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


def threshold_for_fpr(normal_scores: Any, target_fpr: float = 0.01) -> float:
    """Threshold such that at most a target_fpr fraction of normal scores lie strictly above it.

    Rule: an image is flagged anomalous when score > threshold. With the n normal scores sorted
    x_(1) <= ... <= x_(n) and k = floor(target_fpr n) normals allowed above, the threshold is the
    order statistic x_(n-k): at most k scores exceed it (fewer with ties), and it is the smallest
    order statistic that guarantees this. When k = 0 (target_fpr < 1/n) it is max(normal_scores)
    nudged up by one ulp (np.nextafter, in the scores' float type), so that no normal score is above
    it, nor equal to it, whichever of > or >= a caller compares with. k is capped at n - 1.
    """
    if not 0.0 <= target_fpr <= 1.0:
        raise ValueError(f"target_fpr must be in [0, 1], got {target_fpr}")
    x = as_numpy(normal_scores).reshape(-1)
    if x.size == 0:
        raise ValueError("threshold_for_fpr needs at least one normal score")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError("normal scores contain NaN or infinite values")
    n = x.size
    # the tiny slack keeps e.g. 0.29 * 100 = 28.999999999999996 at k = 29
    k = min(math.floor(target_fpr * n + 1e-9), n - 1)
    if k == 0:
        top = x.max()
        return float(np.nextafter(top, np.array(np.inf, dtype=x.dtype)))
    return float(np.partition(x, n - k - 1)[n - k - 1])


def at_threshold(labels: Any, scores: Any, threshold: float) -> dict:
    """What a calibrated threshold achieves on a labelled test set (flagged when score > threshold,
    the deployed rule): its false-positive rate on the normal images, true-positive rate on the
    anomalous ones and precision among the flagged (None where a rate has no denominator)."""
    y, s = check_image_inputs(labels, scores)
    flagged = s > threshold
    normal, anomalous = y == 0, y == 1

    def rate(hits: np.ndarray, among: np.ndarray) -> float | None:
        return float(hits[among].mean()) if among.any() else None

    return {"threshold": float(threshold), "fpr": rate(flagged, normal), "tpr": rate(flagged, anomalous),
            "precision": rate(anomalous, flagged), "n_flagged": int(flagged.sum())}
