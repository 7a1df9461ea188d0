"""Which level separates? For multi-level backbones, each level alone: image AUROC of the pooled
Mahalanobis score (PCA + Ledoit-Wolf on the training images' pooled features) and, from the
per-position nearest-neighbour distance to a sampled bank of training positions (`collect`), the
image AUROC of the map's maximum and the pixel AUROC of the map upsampled to the masks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from latentad.analysis.collect import Collected
from latentad.analysis.normal_model import auroc, fit_normal
from latentad.metrics.auroc import pixel_auroc
from latentad.report.figures import plt, save_figure


def upsampled(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32)).unsqueeze(1)
    return F.interpolate(t, size=shape, mode="bilinear", align_corners=False).squeeze(1).numpy()


def answer(c: Collected, figdir: Path) -> dict | None:
    if not c.levels:
        return None
    rows = {}
    for level, d in c.levels.items():
        model = fit_normal(d["train"])
        row = {"channels": int(d["train"].shape[1]), "image_auroc_mahalanobis": auroc(c.labels, model.d2(d["test"]))}
        if "maps" in d:
            row["grid"] = list(d["maps"].shape[1:])
            row["image_auroc_knn"] = auroc(c.labels, d["maps"].reshape(len(d["maps"]), -1).max(1))
            if c.masks is not None and c.masks.any():
                row["pixel_auroc_knn"] = float(pixel_auroc(c.masks, upsampled(d["maps"], c.masks.shape[1:])))
        rows[level] = row
    names = list(rows)
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(names), 3.2))
    xs = np.arange(len(names))
    keys = [
        k
        for k in ("image_auroc_mahalanobis", "image_auroc_knn", "pixel_auroc_knn")
        if any(rows[n].get(k) is not None for n in names)
    ]
    width = 0.8 / max(1, len(keys))
    for i, key in enumerate(keys):
        ax.bar(xs + (i - (len(keys) - 1) / 2) * width, [rows[n].get(key) or 0 for n in names], width, label=key)
    ax.set_xticks(xs, names)
    ax.set(ylim=(0.4, 1.0), ylabel="AUROC", title=f"{c.name}: each level alone")
    ax.legend(fontsize=7, loc="lower right")
    fig_name = f"{c.name}_levels.png"
    save_figure(fig, figdir / fig_name)

    def best(key: str) -> str | None:
        have = [n for n in names if rows[n].get(key) is not None]
        return max(have, key=lambda n: rows[n][key]) if have else None

    out = {
        "per_level": rows,
        "best_image": best("image_auroc_mahalanobis"),
        "best_pixel": best("pixel_auroc_knn"),
        "figure": fig_name,
    }
    out["summary"] = (
        f"best level for the image score: {out['best_image']}"
        + (f"; for localisation: {out['best_pixel']}" if out["best_pixel"] else "")
        + "."
    )
    return out
