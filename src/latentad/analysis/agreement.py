"""Do the families agree? Over two runs or more on the same test images: Spearman rank correlation of
their image scores, the anomalous images each one misses and the normal images it flags (at the run's
own threshold, calibrated on normal images only), the images every run misses, and the AUROC of a
rank-average fusion beside each run's own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import rankdata, spearmanr

from latentad.analysis.collect import Collected
from latentad.analysis.normal_model import auroc
from latentad.errors import DataError
from latentad.report.figures import plt, save_figure


def answer(runs: list[Collected], figdir: Path) -> dict | None:
    if len(runs) < 2:
        return None
    paths = runs[0].paths
    for c in runs[1:]:
        if c.paths != paths:
            raise DataError(
                f"analyze: runs {runs[0].name} and {c.name} were not scored on the same test images "
                "(use the same --data and --limit)"
            )
    labels = runs[0].labels
    names = [c.name for c in runs]
    n = len(runs)
    rho = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            rho[i, j] = rho[j, i] = float(spearmanr(runs[i].scores, runs[j].scores).statistic)
    missed = {
        c.name: [p for p, s, y in zip(paths, c.scores, labels, strict=True) if y == 1 and s <= c.threshold]
        for c in runs
    }
    flagged = {
        c.name: [p for p, s, y in zip(paths, c.scores, labels, strict=True) if y == 0 and s > c.threshold] for c in runs
    }
    missed_by_all = sorted(set.intersection(*(set(v) for v in missed.values())))
    fused = np.mean([rankdata(c.scores) / len(c.scores) for c in runs], axis=0)
    per_run = {c.name: auroc(labels, c.scores) for c in runs}
    fusion = auroc(labels, fused)

    fig, ax = plt.subplots(figsize=(1.8 + 0.9 * n, 1.4 + 0.8 * n))
    im = ax.imshow(rho, vmin=-1, vmax=1, cmap="coolwarm")
    ax.set_xticks(range(n), names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{rho[i, j]:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("Spearman correlation of image scores", fontsize=9)
    save_figure(fig, figdir / "agreement.png")
    best = max((v for v in per_run.values() if v is not None), default=None)
    summary = (
        (f"rank-average fusion AUROC {fusion:.3f} vs best single {best:.3f}; " if fusion and best else "")
        + f"{len(missed_by_all)} anomalous images missed by every run; "
        + ", ".join(f"{k} misses {len(v)}" for k, v in missed.items())
        + "."
    )
    return {
        "runs": names,
        "spearman": rho.tolist(),
        "image_auroc": per_run,
        "fusion_rank_average_auroc": fusion,
        "missed": missed,
        "false_alarms": flagged,
        "missed_by_all": missed_by_all,
        "n_anomalous": int(labels.sum()),
        "n_normal": int((labels == 0).sum()),
        "figure": "agreement.png",
        "summary": summary,
    }
