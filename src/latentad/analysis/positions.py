"""Where do normal images alarm? For a run with maps (kept by `collect` on data with masks): how
much the map's normal spread varies from position to position, where the normal images' maxima sit,
and what standardising each position would do to the image score.

Why: the image score is the map's maximum, so positions whose score varies most on normal images
decide it; the std of PaDiM's distance varies several-fold across the grid on magnetic tile and by
orders of magnitude on bottle (docs/ANALYSIS.md), which motivated `padim -o standardize=position`. The what-if is
two-fold over the normal test images: each half's per-position mean and std standardise the maps of
the other half and of every defective image (averaged over the two folds), so no normal image is
scored with statistics it contributed to. It chooses nothing; it says whether the option could help.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from latentad.analysis.collect import Collected
from latentad.analysis.normal_model import auroc
from latentad.report.figures import plt, save_figure

TOP_SHARE = 0.1  # "the most variable positions": this share of them


def _standardised_scores(maps: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each image's maximum of its map standardised per position by the normal images of the other fold."""
    normal = np.flatnonzero(labels == 0)
    fold = np.zeros(len(maps), int)
    fold[normal[np.random.default_rng(seed).permutation(len(normal))[: len(normal) // 2]]] = 1
    scores = np.zeros(len(maps))
    for k in (0, 1):
        ref = maps[normal[fold[normal] == k]]
        mean, std = ref.mean(0), ref.std(0, ddof=1) + 1e-12
        z = ((maps - mean) / std).reshape(len(maps), -1).max(1)
        own = (labels == 0) & (fold == 1 - k)  # the other fold's normal images, scored once
        scores[own] = z[own]
        scores[labels != 0] += z[labels != 0] / 2  # defective images: the two folds' mean
    return scores


def answer(c: Collected, figdir: Path) -> dict | None:
    if c.maps is None or (c.labels == 0).sum() < 4 or (c.labels != 0).sum() == 0:
        return None
    normal = c.maps[c.labels == 0].astype(np.float64)
    std = normal.std(0, ddof=1)
    lo, hi = np.percentile(std, [5, 95])
    flat_std = std.reshape(-1)
    top = flat_std >= np.quantile(flat_std, 1 - TOP_SHARE)
    argmax = normal.reshape(len(normal), -1).argmax(1)
    share_top = float(top[argmax].mean())
    raw = c.maps.reshape(len(c.maps), -1).max(1)
    out = {
        "grid": list(c.maps.shape[1:]),
        "normal_images": int(len(normal)),
        "std_p5": float(lo),
        "std_p95": float(hi),
        "spread_ratio": float(hi / max(lo, 1e-12)),
        "normal_max_in_top_share": share_top,
        "top_share": TOP_SHARE,
        "image_auroc_map_max": auroc(c.labels, raw),
        "image_auroc_standardised": auroc(c.labels, _standardised_scores(c.maps.astype(np.float64), c.labels)),
    }
    fig, axes = plt.subplots(1, 2, figsize=(7.2, 3.2))
    im = axes[0].imshow(std, cmap="magma")
    fig.colorbar(im, ax=axes[0], fraction=0.046)
    axes[0].set_title("std of the map on normal images", fontsize=9)
    h, w = std.shape
    axes[1].imshow(std, cmap="gray")
    axes[1].scatter(argmax % w, argmax // w, s=8, c="tab:cyan", alpha=0.6)
    axes[1].set_title("where each normal image peaks", fontsize=9)
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"{c.name}: where normal images alarm", fontsize=10)
    out["figure"] = f"{c.name}_positions.png"
    save_figure(fig, figdir / out["figure"])
    delta = out["image_auroc_standardised"] - out["image_auroc_map_max"]
    out["summary"] = (
        f"the map's normal std varies {out['spread_ratio']:.1f}x across positions (5th-95th percentile); "
        f"{share_top:.0%} of normal images peak in the {TOP_SHARE:.0%} most variable positions; standardised "
        f"per position (two-fold over the normal test images) the image AUROC would move {delta:+.3f} "
        f"({out['image_auroc_map_max']:.3f} -> {out['image_auroc_standardised']:.3f})."
    )
    return out
