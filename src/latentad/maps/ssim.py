"""Per-pixel SSIM similarity maps (Wang et al. 2004), via kornia.

Constants: the paper (Gangloff et al. 2022, eq. 5) writes c1 = 0.01 and c2 = 0.03 citing Wang et
al.; in Wang et al. these are K1, K2 and enter squared, C1 = (K1 L)^2, C2 = (K2 L)^2 with the data
range L = 1. kornia uses exactly that, with an 11x11 Gaussian window (sigma 1.5) by default.
Multi-channel images are compared per channel and the map is averaged over channels.
"""

from __future__ import annotations

import torch
from kornia.metrics import ssim as kornia_ssim


def ssim_map(x: torch.Tensor, y: torch.Tensor, window: int = 11) -> torch.Tensor:
    """SSIM between (N,C,H,W) batches in [0,1], per pixel: (N,H,W), 1 = identical."""
    if x.shape != y.shape:
        raise ValueError(f"ssim_map: shapes differ {tuple(x.shape)} vs {tuple(y.shape)}")
    return kornia_ssim(x.float(), y.float(), window_size=window, max_val=1.0, padding="same").mean(1)


def ssim_anomaly_map(x: torch.Tensor, y: torch.Tensor, window: int = 11) -> torch.Tensor:
    """1 - SSIM, clipped to [0, 2]: higher = more anomalous (the "SSIM" maps of AE / VQ-VAE SSIM)."""
    return (1.0 - ssim_map(x, y, window)).clamp(0.0, 2.0)
