"""Grey-level morphology on anomaly maps (kornia): a flat square structuring element."""

from __future__ import annotations

import torch
from kornia.morphology import dilation


def grey_dilation(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Grey dilation of (B,H,W) or (B,C,H,W) maps by a flat size x size square (max over the window).

    `size` <= 1 returns the maps unchanged. Borders are geodesic (pixels outside are ignored).
    """
    if size <= 1:
        return maps
    squeeze = maps.ndim == 3
    x = maps.unsqueeze(1) if squeeze else maps
    if x.ndim != 4:
        raise ValueError(f"grey_dilation: expected (B,H,W) or (B,C,H,W), got {tuple(maps.shape)}")
    kernel = torch.ones(size, size, dtype=x.dtype, device=x.device)
    out = dilation(x.float(), kernel, border_type="geodesic").to(maps.dtype)
    return out[:, 0] if squeeze else out
