"""Is the codebook used? For the VQ-VAE: code usage on the training images (histogram, perplexity,
dead codes), codes that only anomalous positions pick, the alignment distance (AM) of latent
positions inside vs outside the ground-truth defects, and where the AM and the SSIM map each fire
against the masks (the paper's Figure 1 chain, measured: pixel AUROC of each map alone and of their
product, and the share of each map's top 1 % pixels that fall inside a defect).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from latentad.analysis.collect import Collected
from latentad.analysis.levels import upsampled
from latentad.analysis.normal_model import auroc
from latentad.detectors.reconstruction.vqvae_model import code_usage
from latentad.metrics.auroc import pixel_auroc
from latentad.report.figures import plt, save_figure


def fires_inside(maps: np.ndarray, masks: np.ndarray, top: float = 0.01) -> float:
    """Share of the map's top `top` pixels (over the whole test set) that lie inside a defect."""
    cut = np.quantile(maps, 1 - top)
    hot = maps >= cut
    return float(masks[hot].mean())


def answer(c: Collected, figdir: Path) -> dict | None:
    cb = c.codebook
    if cb is None:
        return None
    train, test = cb["train_codes"].reshape(-1), cb["test_codes"]
    size = cb["size"] or int(max(train.max(), test.max()) + 1)
    counts = np.bincount(train, minlength=size)
    usage = code_usage(torch.from_numpy(counts))
    inside = cb["test_inside"]
    flat = test.reshape(-1)
    normal_codes = set(np.unique(train)) | set(np.unique(flat[inside == 0]))
    anomalous_only = sorted(set(np.unique(flat[inside == 1])) - normal_codes)
    am = cb["test_am"].reshape(-1)
    out = {
        "codebook_size": size,
        "perplexity": usage["perplexity"],
        "codes_used": usage["codes_used"],
        "dead_codes": int(size - usage["codes_used"]),
        "dead_share": usage["dead_share"],
        "codes_only_anomalous": [int(x) for x in anomalous_only],
        "anomalous_positions_on_unseen_codes": float(np.isin(flat[inside == 1], anomalous_only).mean())
        if (inside == 1).any()
        else None,
        "latent_grid": list(test.shape[1:]),
        "am_inside_mean": float(am[inside == 1].mean()) if (inside == 1).any() else None,
        "am_outside_mean": float(am[inside == 0].mean()) if (inside == 0).any() else None,
        "am_auroc_latent": auroc((inside[inside >= 0] == 1).astype(int), am[inside >= 0])
        if (inside >= 0).any()
        else None,
        "am_image_auroc": auroc(c.labels, cb["test_am"].reshape(len(test), -1).max(1)),
    }
    maps_row = {}
    if c.masks is not None and c.masks.any():
        shape = c.masks.shape[1:]
        chain = {"am": upsampled(cb["test_am"], shape)}
        if cb.get("ssim_maps") is not None:
            chain["ssim"] = cb["ssim_maps"]
        if c.method == "vqvae_ssim_am" and c.maps is not None:
            chain["ssim_x_am"] = c.maps
        for k, m in chain.items():
            maps_row[k] = {"pixel_auroc": float(pixel_auroc(c.masks, m)), "top1_inside_share": fires_inside(m, c.masks)}
        out["defect_pixel_share"] = float(c.masks.mean())
    out["maps"] = maps_row

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.2))
    a1.bar(np.arange(size), np.sort(counts)[::-1], width=1.0)
    a1.set(
        yscale="log",
        xlabel="code (by use)",
        ylabel="training positions",
        title=f"{c.name}: {usage['codes_used']}/{size} codes used",
    )
    if (inside == 1).any():
        a2.hist([am[inside == 0], am[inside == 1]], bins=40, density=True, label=["outside defects", "inside"])
        a2.legend(fontsize=8)
    a2.set(xlabel="alignment distance (AM)", title="AM at latent resolution")
    out["figure"] = f"{c.name}_codebook.png"
    save_figure(fig, figdir / out["figure"])
    summary = f"{usage['codes_used']} of {size} codes used (perplexity {usage['perplexity']:.0f})"
    if out["am_auroc_latent"] is not None:
        summary += f"; AM separates defect positions with AUROC {out['am_auroc_latent']:.3f} at latent resolution"
    if maps_row:
        summary += "; pixel AUROC " + ", ".join(f"{k} {v['pixel_auroc']:.3f}" for k, v in maps_row.items())
    out["summary"] = summary + "."
    return out
