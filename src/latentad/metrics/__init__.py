"""Anomaly detection metrics: image/pixel AUROC, AUPRO, AUPIMO, F1-max and FPR-based thresholds.

Scores are "higher = more anomalous"; labels (N,) in {0,1}; masks (N,H,W) bool/{0,1}; maps (N,H,W).
numpy arrays and torch tensors are both accepted.
"""

from latentad.metrics.aupimo import AUPIMOResult, aupimo
from latentad.metrics.aupro import aupro
from latentad.metrics.auroc import image_auroc, pixel_auroc
from latentad.metrics.summary import compute_metrics
from latentad.metrics.thresholds import f1_max, threshold_for_fpr

__all__ = [
    "AUPIMOResult",
    "aupimo",
    "aupro",
    "compute_metrics",
    "f1_max",
    "image_auroc",
    "pixel_auroc",
    "threshold_for_fpr",
]
