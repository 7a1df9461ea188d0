"""Pixel decisions: a map brought to the image's own size, thresholded at the calibrated pixel
threshold into a defect mask, and the mask's connected regions (where, how large, how strong): what an
inspection line records for each part."""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from latentad.io import png_bytes

REGION_KEYS = ("region", "x", "y", "width", "height", "area_px", "peak", "mean")


def full_size(amap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The map (on the evaluation grid: the whole original squashed) at the image's (h, w), bilinear."""
    h, w = shape
    if amap.shape == (h, w):
        return amap.astype(np.float32)
    return np.asarray(Image.fromarray(amap.astype(np.float32)).resize((w, h), Image.BILINEAR))


def defect_mask(amap: np.ndarray, threshold: float) -> np.ndarray:
    return amap > threshold


def mask_png(mask: np.ndarray) -> bytes:
    """The defect mask as a greyscale PNG (0 / 255): what `predict` writes and the service answers."""
    return png_bytes(mask.astype(np.uint8) * np.uint8(255))


def regions(mask: np.ndarray, amap: np.ndarray, pixel_size: float | None = None) -> list[dict]:
    """One row per 8-connected region of `mask`: bounding box, area in pixels (and in mm^2 with
    `pixel_size`, the side of a pixel in mm), the map's peak and mean inside it; largest first."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n == 0:
        return []
    inside, values = labels[mask], amap[mask].astype(np.float64)  # per-label sums over the mask's pixels only
    areas = np.bincount(inside, minlength=n + 1)[1:]
    means = np.bincount(inside, weights=values, minlength=n + 1)[1:] / areas
    peaks = np.full(n + 1, -np.inf)
    np.maximum.at(peaks, inside, values)
    peaks = peaks[1:]
    rows = []
    for k, box in enumerate(ndimage.find_objects(labels)):
        ys, xs = box
        row = {"x": xs.start, "y": ys.start, "width": xs.stop - xs.start, "height": ys.stop - ys.start,
               "area_px": int(areas[k]), "peak": float(peaks[k]), "mean": float(means[k])}
        if pixel_size is not None:
            row["area_mm2"] = float(areas[k]) * pixel_size ** 2
        rows.append(row)
    rows.sort(key=lambda r: -r["area_px"])
    return [{"region": i + 1, **r} for i, r in enumerate(rows)]
