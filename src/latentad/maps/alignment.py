"""The alignment map (AM) of a VQ-VAE (Gangloff et al. 2022, eq. 6).

At every latent position k, AM_k = ||z_e(x)_k - e_{z_k}||^2: the squared L2 distance between the
encoder output and the codebook vector it was quantised to (its nearest one). Normal content was
pulled close to the codebook during training; unseen (anomalous) content lands farther away.
"""

from __future__ import annotations

import torch


def nearest_codes(z_e: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest codebook entry of every position of z_e (B,D,h,w) in codebook (M,D).

    Returns (indices (B,h,w) long, squared distances (B,h,w)).
    """
    if z_e.ndim != 4 or codebook.ndim != 2 or z_e.shape[1] != codebook.shape[1]:
        raise ValueError(f"nearest_codes: z_e {tuple(z_e.shape)} vs codebook {tuple(codebook.shape)}")
    b, d, h, w = z_e.shape
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)
    # ||a - e||^2 = ||a||^2 - 2 a.e + ||e||^2 (argmin only needs the last two terms)
    dist = (flat * flat).sum(1, keepdim=True) - 2.0 * flat @ codebook.t() + (codebook * codebook).sum(1)[None]
    idx = dist.argmin(1)
    exact = ((flat - codebook[idx]) ** 2).sum(1)  # recomputed directly: no cancellation error
    return idx.view(b, h, w), exact.view(b, h, w)


def alignment_map(z_e: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """AM (B,h,w) = sum over channels of (z_e - z_q)^2, z_q the quantised latents (B,D,h,w)."""
    if z_e.shape != z_q.shape or z_e.ndim != 4:
        raise ValueError(f"alignment_map: shapes {tuple(z_e.shape)} vs {tuple(z_q.shape)}")
    return ((z_e - z_q) ** 2).sum(1)
