"""Which directions carry the anomaly? The eigen-spectrum of the normal covariance and, for every
principal component, how well its squared whitened coordinate separates the test set's normal and
anomalous images; then the Mahalanobis score over the top-k against the bottom-k components.

Rippel et al. (2020) found the low-variance components separate best on MVTec AD (their NPCA keeps
the components past 99 % of the variance); `holds` says whether that is so here. All n_train - 1
observed components are used (beyond them the covariance is not observed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from latentad.analysis.collect import Collected
from latentad.analysis.normal_model import auroc, fit_normal
from latentad.report.figures import plt, save_figure


def separation(train: np.ndarray, test: np.ndarray, labels: np.ndarray) -> dict:
    """Per-component AUROCs and top / bottom / NPCA Mahalanobis AUROCs of one embedding."""
    model = fit_normal(train)
    r = model.basis.shape[1]
    w2 = model.whitened(test) ** 2
    per = [auroc(labels, w2[:, j]) for j in range(r)]
    k = max(1, r // 10)
    cum = np.cumsum(model.sample_var) / model.sample_var.sum()
    npca = np.flatnonzero(cum > 0.99)
    return {
        "dim": r,
        "k": k,
        "eigenvalues": model.sample_var.tolist(),
        "per_component_auroc": per,
        "auroc_all": auroc(labels, w2.sum(1)),
        "auroc_top_k": auroc(labels, w2[:, :k].sum(1)),
        "auroc_bottom_k": auroc(labels, w2[:, -k:].sum(1)),
        "npca_components": int(len(npca)),
        "auroc_npca": auroc(labels, w2[:, npca].sum(1)) if len(npca) else None,
        "variance_99_at": int(np.searchsorted(cum, 0.99) + 1),
    }


def answer(c: Collected, figdir: Path) -> dict:
    s = separation(c.train, c.test, c.labels)
    if s["auroc_all"] is None:
        return {**s, "holds": None, "summary": "the test set lacks normal or anomalous images: no separation"}
    holds = s["auroc_bottom_k"] > s["auroc_top_k"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.4))
    idx = np.arange(1, s["dim"] + 1)
    a1.semilogy(idx, s["eigenvalues"])
    a1.set(xlabel="component", ylabel="variance", title=f"{c.name}: spectrum")
    a2.plot(idx, [np.nan if v is None else v for v in s["per_component_auroc"]], ".", ms=3)
    a2.axhline(0.5, color="k", lw=0.8)
    a2.set(xlabel="component (by variance)", ylabel="AUROC", title="separation per component")
    fig_name = f"{c.name}_components.png"
    save_figure(fig, figdir / fig_name)
    out = {
        **s,
        "holds": bool(holds),
        "figure": fig_name,
        "summary": f"top-{s['k']} components AUROC {s['auroc_top_k']:.3f}, bottom-{s['k']} "
        f"{s['auroc_bottom_k']:.3f} (all {s['auroc_all']:.3f}): Rippel's low-variance finding "
        + ("holds" if holds else "does not hold")
        + ".",
    }
    if c.before is not None:  # the self-supervised encoder before its fine-tuning, same images
        b = separation(c.before["train"], c.before["test"], c.labels)
        out["before_finetune"] = {k: b[k] for k in ("dim", "auroc_all", "auroc_top_k", "auroc_bottom_k")}
        out["summary"] += f" Before fine-tuning the same Mahalanobis AUROC was {b['auroc_all']:.3f}."
    return out
