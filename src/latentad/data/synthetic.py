"""A small synthetic anomaly data set: striped, noisy textures with drawn defects and exact masks.

Every image is the same texture family (oriented stripes of one period and angle per data set, a
random phase per image, plus smoothed noise), kept within grey levels 70..180. Defect images get
one of two defects, alternating: "scratch" (a dark line, grey level 10) or "blob" (a bright ellipse,
grey level 245). The mask is exactly the drawn pixels, and the contrast to the texture is at least 60
grey levels, so a simple detector finds them. Everything is drawn from `numpy.random.default_rng(seed)`
in a fixed order, so a seed gives the same images on every machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter

from latentad.data.base import ImageSet, Record, Split
from latentad.data.geometry import as_shape
from latentad.data.mvtec import load_mvtec
from latentad.errors import ConfigError, DataError

DEFECT_TYPES = ("scratch", "blob")
SCRATCH_LEVEL = 10
BLOB_LEVEL = 245


def _texture(rng: np.random.Generator, shape: tuple[int, int], channels: int, style: dict) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    phase = rng.uniform(0, 2 * np.pi)
    t = (xx * np.cos(style["angle"]) + yy * np.sin(style["angle"])) / style["period"]
    stripes = np.sin(2 * np.pi * t + phase)
    noise = gaussian_filter(rng.normal(size=(h, w)), sigma=max(1.0, min(h, w) / 64))
    noise = noise / (noise.std() + 1e-8)
    base = np.asarray(style["base"][:channels], dtype=np.float64)
    img = base[None, None, :] + 30.0 * stripes[:, :, None] + 8.0 * noise[:, :, None]
    return np.clip(img, 70, 180).round().astype(np.uint8)


def _defect(rng: np.random.Generator, shape: tuple[int, int], kind: str) -> np.ndarray:
    h, w = shape
    size = min(h, w)  # defect scale; positions span the whole image
    mask_img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask_img)
    lo, hi = np.array([0.2 * w, 0.2 * h]), np.array([0.8 * w, 0.8 * h])
    if kind == "scratch":
        x0, y0 = rng.uniform(lo, hi)
        angle = rng.uniform(0, np.pi)
        half = rng.uniform(0.15, 0.3) * size
        dx, dy = half * np.cos(angle), half * np.sin(angle)
        width = max(2, size // 24)
        draw.line([(x0 - dx, y0 - dy), (x0 + dx, y0 + dy)], fill=255, width=width)
    else:
        cx, cy = rng.uniform(lo, hi)
        rx, ry = rng.uniform(size / 14, size / 7, size=2)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    return np.asarray(mask_img) > 0


def _generate(n_train: int, n_test_good: int, n_test_defect: int, size: int | list[int], seed: int, channels: int):
    """[(split, defect type, stem, image HxWxC uint8, mask HxW bool or None)] in a fixed order."""
    rng = np.random.default_rng(seed)
    shape = as_shape(size)
    side = min(shape)
    style = {
        "angle": rng.uniform(0, np.pi),
        "period": rng.uniform(side / 8, side / 5),
        "base": rng.uniform(110, 140, size=3),
    }
    items = []
    for i in range(n_train):
        items.append(("train", "good", f"{i:03d}", _texture(rng, shape, channels, style), None))
    for i in range(n_test_good):
        items.append(("test", "good", f"{i:03d}", _texture(rng, shape, channels, style),
                      np.zeros(shape, dtype=bool)))
    counters = dict.fromkeys(DEFECT_TYPES, 0)
    for i in range(n_test_defect):
        kind = DEFECT_TYPES[i % len(DEFECT_TYPES)]
        image = _texture(rng, shape, channels, style)
        mask = _defect(rng, shape, kind)
        image[mask] = SCRATCH_LEVEL if kind == "scratch" else BLOB_LEVEL
        items.append(("test", kind, f"{counters[kind]:03d}", image, mask))
        counters[kind] += 1
    return items


def make_synthetic(
    root: str | Path | None = None,
    n_train: int = 16,
    n_test_good: int = 4,
    n_test_defect: int = 4,
    size: int | tuple[int, int] = 64,
    seed: int = 0,
    channels: int = 3,
) -> Split:
    """Generate the data set (see the module docstring); `size` (a side or (H, W)) is both drawn and
    loaded size.

    With `root`, the images are written in the MVTec layout (train/good, test/good, test/<defect>,
    ground_truth/<defect>/<stem>_mask.png, plus synthetic.json with the parameters) and read back with
    `load_mvtec`; a folder already holding the same parameters is reused, any other non-empty folder is
    refused. Without `root` the Split is held in memory.
    """
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {channels}")
    if n_train < 1 or n_test_good < 0 or n_test_defect < 0 or n_test_good + n_test_defect < 1:
        raise ConfigError("synthetic data needs n_train >= 1 and at least one test image")
    if min(as_shape(size)) < 16:
        raise ConfigError(f"size must be at least 16 for drawn defects, got {size}")
    params = {"n_train": n_train, "n_test_good": n_test_good, "n_test_defect": n_test_defect,
              "size": size if isinstance(size, int) else list(as_shape(size)), "seed": seed, "channels": channels}
    if root is None:
        return _in_memory(params)
    return _on_disk(Path(root), params)


def _info(params: dict, root: Path | None, n_train: int, n_test: int) -> dict:
    return {
        "format": "synthetic",
        "root": str(root.resolve()) if root is not None else None,
        "layout": "mvtec" if root is not None else "memory",
        **params,
        "defect_types": [d for i, d in enumerate(DEFECT_TYPES) if i < params["n_test_defect"]],
        "masks": True,
        "n_train": n_train,
        "n_test": n_test,
    }


def _in_memory(params: dict) -> Split:
    items = _generate(params["n_train"], params["n_test_good"], params["n_test_defect"], params["size"],
                      params["seed"], params["channels"])
    train, test = [], []
    for split, kind, stem, image, mask in items:
        label = 0 if kind == "good" else 1
        rec = Record(f"synthetic/{split}/{kind}/{stem}", label, kind,
                     lambda image=image, mask=mask: (image, mask))
        (train if split == "train" else test).append(rec)
    size, channels = params["size"], params["channels"]
    train_set = ImageSet(train, size, channels, False, "synthetic/train")
    test_set = ImageSet(test, size, channels, True, "synthetic/test")
    return Split(train_set, test_set, _info(params, None, len(train_set), len(test_set)))


def _on_disk(root: Path, params: dict) -> Split:
    meta = root / "synthetic.json"
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: exists and is not a folder")
    if root.is_dir() and any(root.iterdir()):
        try:
            same = meta.is_file() and json.loads(meta.read_text()) == params
        except (OSError, ValueError):
            same = False
        if not same:
            raise DataError(f"{root}: folder is not empty and holds no synthetic data with these "
                            "parameters (choose a new folder)")
    else:
        items = _generate(params["n_train"], params["n_test_good"], params["n_test_defect"],
                          params["size"], params["seed"], params["channels"])
        for split, kind, stem, image, mask in items:
            folder = root / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(folder / f"{stem}.png")
            if kind != "good":
                gt = root / "ground_truth" / kind
                gt.mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask.astype(np.uint8) * 255).save(gt / f"{stem}_mask.png")
        (root / "ground_truth").mkdir(exist_ok=True)
        meta.write_text(json.dumps(params, indent=2) + "\n")
    size = params["size"]
    split = load_mvtec(root, size if isinstance(size, int) else tuple(size))
    info = _info(params, root, len(split.train), len(split.test))
    return Split(split.train, split.test, info)
