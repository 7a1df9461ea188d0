"""Image scores read from anomaly maps: the maximum, or the mean of the highest fraction of pixels.

The maximum is one pixel: one noisy peak on a normal image decides its score. The mean of the top few
per cent still follows a small defect but averages such peaks away, and reads a defect (or a change of
the whole surface) that raises many pixels a little. Written with `topk` so that it exports to ONNX.
"""

from __future__ import annotations

import math

import torch


def top_count(n: int, fraction: float) -> int:
    """How many of n pixels the top-`fraction` mean averages (at least one)."""
    return max(1, math.ceil(fraction * n))


def top_mean(maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """(B, ...) maps -> (B,) mean of each map's highest `fraction` of values (fraction 0: the maximum)."""
    flat = maps.flatten(1)
    if fraction <= 0:
        return flat.amax(1)
    return flat.topk(top_count(flat.shape[1], fraction), dim=1).values.mean(1)


def statistic_name(fraction: float) -> str:
    """The `map_statistic` of a detector scoring by `top_mean(maps, fraction)`."""
    return "max" if fraction <= 0 else f"top:{fraction:g}"


def read_statistic(values: torch.Tensor, statistic: str) -> float:
    """The image score of one map's (valid) pixels under a `map_statistic` name."""
    if statistic == "max":
        return float(values.max())
    if statistic == "mean":
        return float(values.mean())
    if statistic.startswith("top:"):
        return float(top_mean(values.reshape(1, -1), float(statistic[4:]))[0])
    raise ValueError(f"unknown map statistic {statistic!r}")
