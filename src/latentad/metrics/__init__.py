"""Anomaly detection metrics: image/pixel AUROC, AUPRO, AUPIMO, F1-max and FPR-based thresholds.

Scores are "higher = more anomalous"; labels (N,) in {0,1}; masks (N,H,W) bool/{0,1}; maps (N,H,W).
numpy arrays and torch tensors are both accepted.
"""

from importlib import import_module
from typing import Any

# imported on first use: scoring and calibrating need only the thresholds, and the rest pulls in
# scikit-learn and scipy.stats (1.8 s of a `latentad predict` start-up)
_WHERE = {"AUPIMOResult": "aupimo", "aupimo": "aupimo", "aupro": "aupro", "image_auroc": "auroc",
          "pixel_auroc": "auroc", "compute_metrics": "summary", "f1_max": "thresholds",
          "threshold_for_fpr": "thresholds"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'latentad.metrics' has no attribute {name!r}")
    return getattr(import_module(f"latentad.metrics.{_WHERE[name]}"), name)


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
