"""Training-set augmentation: grow N normal images to n by random rotations and flips.

This is the paper's augmentation: every output image is a source image, randomly flipped horizontally
and/or vertically (probability 1/2 each) and rotated by an angle drawn uniformly from
[-max_angle, max_angle] degrees. Source images are taken by cycling through one seeded permutation of
the N images, so each image is used floor(n/N) or ceil(n/N) times.

Rotation samples the image with `affine_grid` / `grid_sample` (bilinear, in pixel units, so
non-square images are not sheared). The corners a rotation uncovers are filled by reflecting the
image (`fill="reflect"`, default) or by repeating the border pixels (`fill="border"`), not with zeros:
MVTec-style backgrounds are not black, and black corners would teach the model a pattern that never
occurs in test images. `fill="zeros"` is available for black-background data.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from latentad.errors import ConfigError

FILL_MODES = {"reflect": "reflection", "reflection": "reflection", "border": "border", "zeros": "zeros"}


def rotate(images: torch.Tensor, angles_deg: torch.Tensor, fill: str = "reflect") -> torch.Tensor:
    """Rotate each image (B,C,H,W) about its centre by its angle (degrees, counter-clockwise as displayed)."""
    if fill not in FILL_MODES:
        raise ConfigError(f"fill must be one of {', '.join(FILL_MODES)}, got {fill!r}")
    b, _, h, w = images.shape
    rad = angles_deg.to(torch.float64) * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    # Output pixel (x, y) (pixel units about the centre, y pointing down) samples the input at
    # (cos x - sin y, sin x + cos y); in normalised coordinates x_n = x / (W/2), y_n = y / (H/2) the
    # off-diagonal terms carry the aspect ratio. 90 degrees equals torch.rot90(k=1, dims=(-2, -1)).
    theta = torch.zeros(b, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * (h / w)
    theta[:, 1, 0] = sin * (w / h)
    theta[:, 1, 1] = cos
    grid = F.affine_grid(theta.to(images.dtype), [b, images.shape[1], h, w], align_corners=False)
    return F.grid_sample(images, grid.to(images.device), mode="bilinear", padding_mode=FILL_MODES[fill],
                         align_corners=False)


def augment_to(
    n: int,
    images: torch.Tensor,
    generator: torch.Generator,
    rotation: bool = True,
    flips: bool = True,
    max_angle: float = 180,
    fill: str = "reflect",
    chunk: int = 256,
) -> torch.Tensor:
    """n augmented images (n,C,H,W) from `images` (N,C,H,W, float); see the module docstring.

    All random numbers come from `generator`, drawn in a fixed order (permutation, flips, angles), so
    the output depends only on the inputs and the generator state. Images are processed `chunk` at a
    time to bound memory.
    """
    if images.ndim != 4:
        raise ConfigError(f"augment_to needs images of shape (N,C,H,W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ConfigError(f"augment_to needs float images, got {images.dtype}")
    if n < 0:
        raise ConfigError(f"augment_to needs n >= 0, got {n}")
    if len(images) == 0:
        raise ConfigError("augment_to needs at least one source image")
    if fill not in FILL_MODES:
        raise ConfigError(f"fill must be one of {', '.join(FILL_MODES)}, got {fill!r}")
    count = len(images)
    perm = torch.randperm(count, generator=generator)
    source = perm[torch.arange(n) % count]
    if flips:
        flip_h = torch.rand(n, generator=generator) < 0.5
        flip_v = torch.rand(n, generator=generator) < 0.5
    else:
        flip_h = flip_v = torch.zeros(n, dtype=torch.bool)
    if rotation and max_angle > 0:
        angles = (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * max_angle
    else:
        angles = None

    out = torch.empty((n, *images.shape[1:]), dtype=images.dtype, device=images.device)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        batch = images[source[start:stop].to(images.device)].clone()
        h_sel = flip_h[start:stop].to(images.device)
        v_sel = flip_v[start:stop].to(images.device)
        batch[h_sel] = batch[h_sel].flip(-1)
        batch[v_sel] = batch[v_sel].flip(-2)
        if angles is not None:
            batch = rotate(batch, angles[start:stop], fill)
        out[start:stop] = batch
    return out
