"""Combining a latent-resolution map with a pixel map (Gangloff et al. 2022, section 2.3, fig. 1).

VQ-VAE SSIM+AM: the alignment map (latent resolution) is upsampled to the input size, grey-dilated
to spread its markers, and multiplied pixel-wise with the SSIM anomaly map (1 - SSIM).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latentad.maps.morphology import grey_dilation


def upsample_map(maps: torch.Tensor, size: int | tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """(B,h,w) -> (B,H,W) by interpolation ("bilinear" or "nearest")."""
    if maps.ndim != 3:
        raise ValueError(f"upsample_map: expected (B,h,w), got {tuple(maps.shape)}")
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(maps.shape[-2:]) == hw:
        return maps
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(maps[:, None].float(), size=hw, mode=mode, **kwargs)[:, 0]


def fuse_am_ssim(
    ssim_anomaly: torch.Tensor, am: torch.Tensor, dilation: int = 1, mode: str = "bilinear"
) -> torch.Tensor:
    """(1 - SSIM) map (B,H,W) times the AM (B,h,w) upsampled to (H,W) and grey-dilated by a
    `dilation` x `dilation` square. Both inputs are >= 0, so the product ranks a pixel higher when
    either factor grows."""
    if ssim_anomaly.ndim != 3 or am.ndim != 3 or ssim_anomaly.shape[0] != am.shape[0]:
        raise ValueError(f"fuse_am_ssim: maps {tuple(ssim_anomaly.shape)} vs AM {tuple(am.shape)}")
    up = grey_dilation(upsample_map(am, tuple(ssim_anomaly.shape[-2:]), mode), dilation)
    return ssim_anomaly * up
