"""The one conversion between colour and grey, used by every path an image takes (data loading,
tensors given to the Python API, `predict`): a one-channel model must see the same pixels whichever
way an image reaches it. Grey = ITU-R BT.601 luma, 0.299 R + 0.587 G + 0.114 B (what PIL's "L" and
OpenCV use), computed in float32 on values in [0, 1]; grey to colour repeats the channel.
"""

from __future__ import annotations

import torch

LUMA_601 = (0.299, 0.587, 0.114)


def luma(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) float in [0, 1] -> (..., 1, H, W): BT.601 luma."""
    r, g, b = x.float().unbind(-3)
    return (LUMA_601[0] * r + LUMA_601[1] * g + LUMA_601[2] * b).unsqueeze(-3)


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(..., C, H, W) float -> (..., channels, H, W): luma for 3 -> 1, repetition for 1 -> 3."""
    c = x.shape[-3]
    if c == channels:
        return x
    if channels == 1 and c == 3:
        return luma(x)
    if channels == 3 and c == 1:
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:])
    if channels == 3 and c == 4:  # RGBA given as a tensor: drop alpha
        return x[..., :3, :, :]
    raise ValueError(f"cannot convert {c}-channel images to {channels} channels")
