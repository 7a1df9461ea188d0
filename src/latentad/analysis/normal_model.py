"""The Gaussian of normality the questions share: PCA to the subspace the training images span, then
a Ledoit-Wolf covariance there (sklearn), as the Gaussian AD / PaDiM methods use it.

With n training images a D-dimensional covariance is only observed in an (n - 1)-dimensional
subspace; outside it every method's shrinkage invents the variance. The questions therefore work in
principal coordinates, with the number kept stated in their answers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score


@dataclass
class NormalModel:
    mean: np.ndarray  # (D,)
    basis: np.ndarray  # (D, k) principal directions, by decreasing variance
    sample_var: np.ndarray  # (k,) sample variances along them
    var: np.ndarray  # (k,) Ledoit-Wolf variances along them
    ambient: int

    def coords(self, x: np.ndarray) -> np.ndarray:
        """Principal coordinates (n, k)."""
        return (np.asarray(x, dtype=np.float64) - self.mean) @ self.basis

    def whitened(self, x: np.ndarray) -> np.ndarray:
        return self.coords(x) / np.sqrt(self.var)

    def d2(self, x: np.ndarray, components: np.ndarray | slice | None = None) -> np.ndarray:
        """Squared Mahalanobis distances, optionally over some components only."""
        w = self.whitened(x) ** 2
        return (w if components is None else w[:, components]).sum(1)


def fit_normal(train: np.ndarray, max_dim: int | None = None) -> NormalModel:
    """PCA of the training vectors (at most n - 1 and `max_dim` components), Ledoit-Wolf variances."""
    x = np.asarray(train, dtype=np.float64)
    n, d = x.shape
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    k = max(1, min(d, n - 1, max_dim or d))
    keep = s[:k] > s[0] * 1e-9 if s[0] > 0 else np.ones(k, bool)
    basis = vt[:k][keep].T
    coords = (x - mean) @ basis
    lw = LedoitWolf(assume_centered=True).fit(coords)
    var = np.clip(np.diag(lw.covariance_), 1e-12, None)
    return NormalModel(mean, basis, (s[:k][keep] ** 2) / n, var, d)


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """AUROC, or None when one class is missing (said in the answers, never a fake 0.5)."""
    labels = np.asarray(labels)
    if labels.min() == labels.max():
        return None
    return float(roc_auc_score(labels, scores))
