"""Which of a detector's named latents the analysis reads, for any method of any family.

`Detector.embed` returns the tensors each method scores in, under method-specific names. The
analysis needs two views of them: one vector per image (the space a Gaussian of normality would live
in) and, where the method has one, a grid of per-position vectors (the space its map is computed in).
This module is the one place that knows the names; the questions only see the two views.
"""

from __future__ import annotations

import torch

# per-image vectors, first match wins: the fine-tuned encoder's pooled features, the AE / Deep SVDD
# code; for the others the per-position grid is pooled (mean over positions)
IMAGE_KEYS = ("pooled", "z")
# per-position grids (N, D, h, w): fine-tuned encoder, PaDiM / PatchCore / SimpleNet patch features,
# the VQ-VAE's encoder output, the VAE's posterior mean
GRID_KEYS = ("positions", "patches", "z_e", "mu")
# tensors that are not embeddings (indices, centres, scalar maps, the "before fine-tuning" copies)
NOT_EMBEDDINGS = ("codes", "am", "kl", "center", "z_q", "logvar", "pooled_before", "positions_before")


def grid_of(latents: dict[str, torch.Tensor]) -> tuple[str, torch.Tensor] | None:
    """The per-position embedding grid (N, D, h, w) and its name, or None when the method has none."""
    for key in GRID_KEYS:
        if key in latents and latents[key].dim() == 4:
            return key, latents[key]
    return None


def image_vectors(latents: dict[str, torch.Tensor], levels: tuple[str, ...] = ()) -> tuple[str, torch.Tensor]:
    """One vector per image (N, D) and a name saying where it came from.

    Order: an explicit per-image embedding; else the per-position grid pooled; else (the Gaussian AD
    method, whose latents are its levels) the levels' pooled vectors concatenated; else the first
    tensor, pooled if it is a grid.
    """
    for key in IMAGE_KEYS:
        if key in latents and latents[key].dim() == 2:
            return key, latents[key].float()
    grid = grid_of(latents)
    if grid is not None:
        return f"{grid[0]} (mean over positions)", grid[1].float().mean((2, 3))
    present = [lv for lv in levels if lv in latents]
    if present:
        parts = [
            latents[lv].float().flatten(1) if latents[lv].dim() == 2 else latents[lv].float().mean((2, 3))
            for lv in present
        ]
        return "+".join(present), torch.cat(parts, 1)
    key = next(k for k in latents if k not in NOT_EMBEDDINGS)
    x = latents[key].float()
    return key, (x.mean((2, 3)) if x.dim() == 4 else x.flatten(1))


def level_tensors(latents: dict[str, torch.Tensor], levels: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The per-level backbone features of a multi-level method: {level: (N, C, h, w) or (N, C)}."""
    return {lv: latents[lv].float() for lv in levels if lv in latents}
