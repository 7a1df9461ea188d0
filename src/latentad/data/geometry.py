"""Where an image of any shape lands in a detector's (H, W) input, and how a map made there goes back
onto the original image.

Industrial images are long strips and large plates; squashing them into a square loses the thin
defects an inspection is for. Three ways to bring an (h0, w0) image to (H, W):

- `squash`: resize to (H, W), ignoring the aspect ratio (the historical behaviour);
- `fit`: scale by min(H/h0, W/w0) so the whole image fits, centre it, pad the rest by replicating
  the edge pixels; the padding is cut off again when the map goes back (it is never scored as image);
- `crop`: scale by max(H/h0, W/w0) so the image covers (H, W), keep the centre; going back, the parts
  of the original the input did not show get the nearest map value (edge replication).

One `Placement` holds the arithmetic; images are placed with PIL (uint8, at load) or torch (tensors
given to the API), maps are sent back with torch, masks are always squashed (nearest neighbour) to
the evaluation grid, which is the original image squashed to a common shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

Shape = tuple[int, int]
RESIZE_MODES = ("squash", "fit", "crop")


def as_shape(size: int | tuple[int, int] | list[int] | None) -> Shape | None:
    """An int side or an (H, W) pair -> (H, W); None stays None."""
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


@dataclass(frozen=True)
class Placement:
    """An (h0, w0) original in an (H, W) input: the image is scaled to `scaled` and its box
    (top, left, height, width) is what the input shows (crop) or where it sits (fit)."""

    orig: Shape
    target: Shape
    mode: str
    scaled: Shape
    box: tuple[int, int, int, int]

    @staticmethod
    def of(orig: Shape, target: Shape, mode: str = "squash") -> Placement:
        (h0, w0), (th, tw) = orig, target
        if mode == "squash":
            return Placement(orig, target, mode, target, (0, 0, th, tw))
        s = min(th / h0, tw / w0) if mode == "fit" else max(th / h0, tw / w0)
        hs = min(th, max(1, round(h0 * s))) if mode == "fit" else max(th, round(h0 * s))
        ws = min(tw, max(1, round(w0 * s))) if mode == "fit" else max(tw, round(w0 * s))
        if mode == "fit":  # the scaled image sits at `box` inside the padded input
            return Placement(orig, target, mode, (hs, ws), ((th - hs) // 2, (tw - ws) // 2, hs, ws))
        if mode == "crop":  # the input shows `box` of the scaled image
            return Placement(orig, target, mode, (hs, ws), ((hs - th) // 2, (ws - tw) // 2, th, tw))
        raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}, not {mode!r}")

    def valid(self) -> tuple[slice, slice]:
        """The input region that shows the image (all of it except fit's padding)."""
        if self.mode != "fit":
            return slice(0, self.target[0]), slice(0, self.target[1])
        t, left, h, w = self.box
        return slice(t, t + h), slice(left, left + w)


def place_uint8(image: np.ndarray, target: Shape, mode: str, resample=Image.BILINEAR) -> np.ndarray:
    """HxWxC uint8 (or HxW float32) -> the input array at `target` under `mode` (PIL resampling)."""
    p = Placement.of(image.shape[:2], target, mode)
    pil = Image.fromarray(image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image)
    if pil.size != (p.scaled[1], p.scaled[0]):
        pil = pil.resize((p.scaled[1], p.scaled[0]), resample)
    arr = np.asarray(pil)
    if arr.ndim == 2 and image.ndim == 3:
        arr = arr[:, :, None]
    t, left, h, w = p.box
    if mode == "fit":
        pad = [(t, target[0] - t - h), (left, target[1] - left - w)] + [(0, 0)] * (arr.ndim - 2)
        arr = np.pad(arr, pad, mode="edge")
    elif mode == "crop":
        arr = arr[t:t + h, left:left + w]
    return arr


def place_tensor(x: torch.Tensor, target: Shape, mode: str) -> torch.Tensor:
    """(B,C,h,w) float -> (B,C,H,W) under `mode` (bilinear, antialiased), as `place_uint8` does."""
    p = Placement.of(tuple(x.shape[-2:]), target, mode)
    if tuple(x.shape[-2:]) != p.scaled:
        x = F.interpolate(x, size=p.scaled, mode="bilinear", align_corners=False, antialias=True)
    t, left, h, w = p.box
    if mode == "fit":
        x = F.pad(x, (left, target[1] - left - w, t, target[0] - t - h), mode="replicate")
    elif mode == "crop":
        x = x[..., t:t + h, left:left + w]
    return x


def map_to_grid(amap: torch.Tensor, placement: Placement, grid: Shape) -> torch.Tensor:
    """An (H, W) map made on the input -> the original image squashed to `grid` (bilinear): fit's
    padding cut off, crop's unseen borders filled by edge replication."""
    m = amap.float()[None, None]
    if placement.mode == "fit":
        rows, cols = placement.valid()
        m = m[..., rows, cols]
    elif placement.mode == "crop":
        t, left, h, w = placement.box
        hs, ws = placement.scaled
        m = F.pad(m, (left, ws - left - w, t, hs - t - h), mode="replicate")
    if tuple(m.shape[-2:]) != tuple(grid):
        m = F.interpolate(m, size=tuple(grid), mode="bilinear", align_corners=False)
    return m[0, 0]
