"""Where do defects sit in the latent space? 2-D projections of the image embeddings (PCA fitted on the
training images; UMAP on all of them when `umap-learn` is installed) coloured by normal / defect type,
with how much of the separation each view keeps (AUROC of the distance to the nearest training
image in 2-D); for localising methods, the run's own pixel scores inside vs outside the masks, and
per-position embeddings inside vs outside defects in the same PCA view.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA

from latentad.analysis.collect import Collected, nearest_distance
from latentad.analysis.normal_model import auroc
from latentad.extras import install_line
from latentad.report.figures import plt, save_figure

MAX_TRAIN_POINTS = 400
MAX_PIXELS = 200_000


def _scatter(ax, train2: np.ndarray, test2: np.ndarray, c: Collected, title: str) -> None:
    ax.scatter(train2[:, 0], train2[:, 1], s=6, c="lightgrey", label="train (normal)")
    for kind in sorted(set(c.defects)):
        sel = np.array([d == kind for d in c.defects])
        ax.scatter(test2[sel, 0], test2[sel, 1], s=9, label=kind)
    ax.set(title=title, xticks=[], yticks=[])
    ax.legend(fontsize=6, markerscale=1.5)


def umap_available() -> bool:
    return importlib.util.find_spec("umap") is not None


def answer(c: Collected, figdir: Path, use_umap: bool = True, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    train = c.train if len(c.train) <= MAX_TRAIN_POINTS else c.train[rng.choice(len(c.train), MAX_TRAIN_POINTS, False)]
    pca = PCA(2, random_state=seed).fit(c.train)
    tr2, te2 = pca.transform(train), pca.transform(c.test)
    out: dict = {
        "pca": {
            "explained_variance": pca.explained_variance_ratio_.tolist(),
            "auroc_2d": auroc(c.labels, nearest_distance(tr2, te2)),
        }
    }
    views = [("PCA", tr2, te2)]
    if use_umap and umap_available():
        import umap

        both = np.concatenate([train, c.test])
        emb = umap.UMAP(n_neighbors=min(15, len(both) - 1), random_state=seed).fit_transform(both)
        u_tr, u_te = emb[: len(train)], emb[len(train) :]
        out["umap"] = {"n_neighbors": min(15, len(both) - 1), "auroc_2d": auroc(c.labels, nearest_distance(u_tr, u_te))}
        views.append(("UMAP", u_tr, u_te))
    else:
        out["umap"] = {"skipped": f"umap-learn is not installed ({install_line('analysis')})" if use_umap
                       else "turned off (--no-umap)"}
    fig, axes = plt.subplots(1, len(views), figsize=(4.2 * len(views), 3.8), squeeze=False)
    for ax, (title, a, b) in zip(axes[0], views, strict=True):
        _scatter(ax, a, b, c, f"{c.name}: {title}")
    out["figure"] = f"{c.name}_projection.png"
    save_figure(fig, figdir / out["figure"])
    summary = f"PCA 2-D keeps AUROC {out['pca']['auroc_2d'] or float('nan'):.3f}"
    if "auroc_2d" in out["umap"]:
        summary += f", UMAP {out['umap']['auroc_2d'] or float('nan'):.3f}"

    if c.maps is not None and c.masks is not None and c.masks.any():
        m, k = c.maps.reshape(-1), c.masks.reshape(-1)
        pick = rng.choice(len(m), min(len(m), MAX_PIXELS), replace=False)
        inside, outside = m[pick][k[pick]], m[pick][~k[pick]]
        normal_cut = float(np.quantile(c.maps[c.labels == 0], 0.99)) if (c.labels == 0).any() else None
        out["patch_scores"] = {
            "inside_mean": float(inside.mean()),
            "outside_mean": float(outside.mean()),
            "inside_median": float(np.median(inside)),
            "outside_median": float(np.median(outside)),
            "auroc": auroc(np.r_[np.ones(len(inside)), np.zeros(len(outside))], np.r_[inside, outside]),
            "defect_pixels_above_normal_p99": float((inside > normal_cut).mean()) if normal_cut is not None else None,
            "n_pixels": int(len(pick)),
        }
        fig, ax = plt.subplots(figsize=(4.6, 3.2))
        ax.hist([outside, inside], bins=50, density=True, label=["outside masks", "inside masks"])
        ax.set(xlabel="pixel score (raw)", title=f"{c.name}: pixel scores")
        ax.legend(fontsize=8)
        out["patch_scores"]["figure"] = f"{c.name}_pixel_scores.png"
        save_figure(fig, figdir / out["patch_scores"]["figure"])
        summary += (
            f"; {out['patch_scores']['defect_pixels_above_normal_p99'] * 100:.0f} % of defect pixels score "
            "above the 99th percentile of normal images' pixels"
            if normal_cut is not None
            else ""
        )
    if c.test_positions is not None and c.test_inside is not None and (c.test_inside == 1).any():
        p = PCA(2, random_state=seed).fit(c.train_positions)
        ins = c.test_inside
        d_in = nearest_distance(c.train_positions, c.test_positions[ins == 1])
        d_out = nearest_distance(c.train_positions, c.test_positions[ins == 0])
        out["positions"] = {
            "embedding": c.grid_key,
            "n_inside": int((ins == 1).sum()),
            "n_outside": int((ins == 0).sum()),
            "nn_distance_inside_mean": float(d_in.mean()),
            "nn_distance_outside_mean": float(d_out.mean()),
            "auroc_nn_distance": auroc(np.r_[np.ones(len(d_in)), np.zeros(len(d_out))], np.r_[d_in, d_out]),
        }
        fig, ax = plt.subplots(figsize=(4.2, 3.8))
        tp = p.transform(
            c.train_positions[rng.choice(len(c.train_positions), min(3000, len(c.train_positions)), False)]
        )
        ax.scatter(tp[:, 0], tp[:, 1], s=2, c="lightgrey", label="train positions")
        for lab, name in ((0, "test, outside defects"), (1, "test, inside defects")):
            q = p.transform(c.test_positions[ins == lab][:3000])
            ax.scatter(q[:, 0], q[:, 1], s=3, label=name)
        ax.set(title=f"{c.name}: positions ({c.grid_key}), PCA", xticks=[], yticks=[])
        ax.legend(fontsize=6, markerscale=3)
        out["positions"]["figure"] = f"{c.name}_positions.png"
        save_figure(fig, figdir / out["positions"]["figure"])
    out["summary"] = summary + "."
    return out
