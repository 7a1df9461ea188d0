"""How Gaussian is normality? The squared Mahalanobis distances of held-out normal images against the
chi-squared law of their dimension, Mardia's multivariate skewness and kurtosis, and the share of
whitened dimensions a univariate test rejects.

Held-out normal images = the run's calibration hold-out plus the test set's normal images (neither
was used to fit). The Gaussian is fitted on the training vectors in their top k = n_train // 4
principal components (`normal_model`): enough images per dimension for the covariance to be
estimated, so a misfit is the data's, not the estimator's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import stats

from latentad.analysis.collect import Collected
from latentad.analysis.normal_model import fit_normal
from latentad.report.figures import plt, save_figure

ALPHA = 0.01


def mardia(z: np.ndarray) -> dict[str, float]:
    """Mardia's (1970) skewness b1 and kurtosis b2 of vectors z (n, k), with their p-values."""
    z = z - z.mean(0)
    cov = np.cov(z, rowvar=False, bias=True).reshape(z.shape[1], z.shape[1])
    w = z @ np.linalg.pinv(cov)
    n, k = z.shape
    g = w @ z.T
    b1 = float((g**3).mean())
    b2 = float((np.einsum("ij,ij->i", w, z) ** 2).mean())
    df = k * (k + 1) * (k + 2) / 6
    kz = (b2 - k * (k + 2)) / np.sqrt(8 * k * (k + 2) / n)
    return {
        "skewness_b1": b1,
        "skewness_p": float(stats.chi2.sf(n * b1 / 6, df)),
        "kurtosis_b2": b2,
        "kurtosis_expected": float(k * (k + 2)),
        "kurtosis_z": float(kz),
        "kurtosis_p": float(2 * stats.norm.sf(abs(kz))),
    }


def answer(c: Collected, figdir: Path) -> dict:
    held = np.concatenate([c.heldout, c.test[c.labels == 0]]) if len(c.heldout) else c.test[c.labels == 0]
    n = len(c.train)
    model = fit_normal(c.train, max(2, n // 4))
    k = model.basis.shape[1]
    d2 = model.d2(held)
    ks = stats.kstest(d2, stats.chi2(k).cdf)
    z = model.coords(c.train) / np.sqrt(model.sample_var)
    per_dim = [stats.shapiro(z[:, j]).pvalue for j in range(k)] if n >= 3 else []
    rejected = float(np.mean(np.array(per_dim) < ALPHA)) if per_dim else None

    fig, ax = plt.subplots(figsize=(4.2, 4))
    q = stats.chi2(k).ppf((np.arange(len(d2)) + 0.5) / len(d2))
    ax.scatter(q, np.sort(d2), s=8)
    top = max(q.max(), d2.max())
    ax.plot([0, top], [0, top], "k--", lw=1)
    ax.set(xlabel=f"chi-squared({k}) quantiles", ylabel="held-out normal d²", title=f"{c.name}: QQ plot")
    fig_name = f"{c.name}_gaussianity.png"
    save_figure(fig, figdir / fig_name)

    ratio = float(d2.mean() / k)
    verdict = (
        "consistent with a Gaussian"
        if ks.pvalue >= ALPHA
        else f"not Gaussian: held-out normals sit {ratio:.1f}x further than the law expects"
        if ratio > 1
        else "not Gaussian"
    )
    return {
        "embedding": c.image_key,
        "ambient_dim": model.ambient,
        "dim": k,
        "n_train": n,
        "n_heldout": int(len(held)),
        "d2_mean": float(d2.mean()),
        "d2_expected": float(k),
        "d2_ratio": ratio,
        "ks_statistic": float(ks.statistic),
        "ks_p": float(ks.pvalue),
        "mardia": mardia(z) if n > k else None,
        "per_dimension_rejected_share": rejected,
        "per_dimension_test": f"Shapiro-Wilk at {ALPHA}",
        "figure": fig_name,
        "summary": f"KS {ks.statistic:.2f} (p={ks.pvalue:.2g}) against chi2({k}): {verdict}; "
        + (
            f"{rejected * 100:.0f} % of whitened dimensions rejected as normal at 1 %."
            if rejected is not None
            else "too few images for the per-dimension test."
        ),
    }
