"""Tiling for high-resolution images: any method, fitted and scored on full-resolution tiles.

`tile=T` (with `tile_overlap=O`) cuts each image into T x T tiles at its own resolution, so a thin
defect on a 1250-px strip keeps its pixels instead of being squashed into 224. One model learns the
normal tiles (`tile_mode=shared`), or one model per tile position (`per_position`, for images that
all share one size, such as a fixed camera). Tile maps are stitched back into one map of the whole
image, overlaps averaged; the image score is the stitched map's maximum (for a method without maps,
the maximum tile score). Tiles are cut while images stream past (one image decoded at a time), so
memory follows the tile, not the image.

Tile positions along a side of length L: one tile when L <= T (the image is edge-padded to T and the
padding cut off again), else n = ceil((L - T) / (T - O)) + 1 tiles evenly spread from 0 to L - T.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from latentad.data.base import ImageSet, Record, require_nonempty
from latentad.detectors.base import Detector, DetectorConfig, Images, Latents, Prediction
from latentad.errors import ConfigError, DataError


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles along one side (see the module docstring)."""
    if length <= tile:
        return [0]
    n = math.ceil((length - tile) / (tile - overlap)) + 1
    return sorted({round(i * (length - tile) / (n - 1)) for i in range(n)})


def tile_boxes(shape: tuple[int, int], tile: int, overlap: int) -> list[tuple[int, int]]:
    """(top, left) of every tile of an (h, w) image, row by row."""
    return [(t, left) for t in tile_starts(shape[0], tile, overlap) for left in tile_starts(shape[1], tile, overlap)]


def cut(image: torch.Tensor, tile: int, boxes: list[tuple[int, int]]) -> torch.Tensor:
    """(C,h,w) -> (n,C,T,T); an image smaller than a tile is edge-padded to it."""
    c, h, w = image.shape
    if h < tile or w < tile:
        image = F.pad(image[None], (0, max(0, tile - w), 0, max(0, tile - h)), mode="replicate")[0]
    return torch.stack([image[:, t:t + tile, left:left + tile] for t, left in boxes])


def stitch(maps: torch.Tensor, shape: tuple[int, int], boxes: list[tuple[int, int]]) -> torch.Tensor:
    """(n,T,T) tile maps -> (h,w), overlaps averaged, padding beyond the image dropped."""
    tile = maps.shape[-1]
    h, w = shape
    total = torch.zeros(max(h, tile), max(w, tile))
    count = torch.zeros_like(total)
    for m, (t, left) in zip(maps, boxes, strict=True):
        total[t:t + tile, left:left + tile] += m.float()
        count[t:t + tile, left:left + tile] += 1
    return (total / count.clamp_min(1))[:h, :w]


def _image_shape(rec: Record) -> tuple[int, int]:
    """(h, w) of a record: from the file header when it is a file, else by loading it."""
    if Path(rec.path).is_file():
        with Image.open(rec.path) as img:
            return img.height, img.width
    return tuple(rec.load()[0].shape[:2])


class TiledDetector(Detector):
    """A method fitted and scored on full-resolution tiles; built by `create` / `load` when `tile > 0`."""

    def __init__(self, method: type[Detector], config: DetectorConfig) -> None:
        c = config
        if c.tile < 16 or not 0 <= c.tile_overlap < c.tile:
            raise ConfigError(f"{method.name}: tile={c.tile}, tile_overlap={c.tile_overlap}: need tile >= 16 and "
                              "0 <= tile_overlap < tile")
        self.method = method
        self.name, self.family, self.localizes = method.name, method.family, method.localizes
        self.config = config
        inner = dataclasses.replace(config, tile=0, tile_overlap=0, image_size=c.tile, resize="squash")
        self.inner_config = inner
        self.models: list[Detector] = [method(inner)]
        self.positions: list[tuple[int, int]] = []  # per_position: the boxes, one model each
        self.image_shape: tuple[int, int] | None = None  # per_position: the one image size
        self.fitted = False
        self.checkpoint_dir, self.resume = None, False
        self.device, self.compute_precision = torch.device("cpu"), "32"

    def move_state(self, device: torch.device) -> None:
        for m in self.models:
            m.to(device, self.compute_precision)

    @property
    def input_shape(self) -> tuple[int, int]:
        return (self.config.tile, self.config.tile)

    full_resolution = True  # evaluation feeds whole images at their own size

    def set_checkpointing(self, directory, resume: bool = False) -> None:
        super().set_checkpointing(directory, resume)
        for k, m in enumerate(self.models):
            m.set_checkpointing(None if directory is None else Path(directory) / f"tile{k}", resume)

    # -- fit ------------------------------------------------------------------------------------
    def _tile_set(self, train: ImageSet, position: tuple[int, int] | None) -> ImageSet:
        """The normal tiles as a lazily loaded set (one decoded image cached: its tiles are consecutive)."""
        tile, overlap = self.config.tile, self.config.tile_overlap
        cache: dict[str, Any] = {}

        def loader(rec: Record, box: tuple[int, int]):
            def load():
                if cache.get("path") != rec.path:
                    cache["path"], cache["image"] = rec.path, rec.load()[0]
                img = cache["image"]
                t, left = box
                if img.shape[0] < tile or img.shape[1] < tile:
                    img = np.pad(img, [(0, max(0, tile - img.shape[0])), (0, max(0, tile - img.shape[1])), (0, 0)],
                                 mode="edge")
                return img[t:t + tile, left:left + tile], None
            return load

        records = []
        for rec in train.records:
            boxes = [position] if position is not None else tile_boxes(_image_shape(rec), tile, overlap)
            records += [Record(f"{rec.path}#tile{t},{left}", 0, "good", loader(rec, (t, left)))
                        for t, left in boxes]
        return ImageSet(records, (tile, tile), train.channels, False, f"{train.name} tiles {tile}px")

    def fit(self, train: ImageSet) -> TiledDetector:
        require_nonempty(train, train.name)
        tile, overlap = self.config.tile, self.config.tile_overlap
        if self.config.tile_mode == "shared":
            self.models[0].fit(self._tile_set(train, None))
        else:
            shapes = {_image_shape(r) for r in train.records}
            if len(shapes) != 1:
                raise DataError(f"{train.name}: tile_mode=per_position needs images of one size, found "
                                f"{len(shapes)} sizes (e.g. {sorted(shapes)[:2]}); use tile_mode=shared")
            self.image_shape = shapes.pop()
            self.positions = tile_boxes(self.image_shape, tile, overlap)
            self.models = [self.method(self.inner_config).to(self.device, self.compute_precision)
                           for _ in self.positions]
            self.set_checkpointing(self.checkpoint_dir, self.resume)
            for model, box in zip(self.models, self.positions, strict=True):
                model.fit(self._tile_set(train, box))
        self.fitted = True
        return self

    # -- predict --------------------------------------------------------------------------------
    def _images(self, images: Images) -> Iterator[torch.Tensor]:
        """Whole images (C,h,w) in [0,1] at their own size, one at a time."""
        if isinstance(images, ImageSet):
            for batch in images.with_size(None, self.config.channels).batches(1):
                yield batch.images[0]
            return
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise DataError("images must be an ImageSet or a float tensor (N,C,H,W) in [0,1]")
        yield from images.float()

    def _boxes(self, shape: tuple[int, int]) -> list[tuple[int, int]]:
        if self.config.tile_mode == "per_position":
            if shape != self.image_shape:
                raise DataError(f"image of {shape[1]}x{shape[0]} px, but this per-position tiled model was fitted "
                                f"on {self.image_shape[1]}x{self.image_shape[0]} images")
            return self.positions
        return tile_boxes(shape, self.config.tile, self.config.tile_overlap)

    def _predict_one(self, image: torch.Tensor) -> tuple[float, torch.Tensor | None]:
        shape = tuple(image.shape[-2:])
        boxes = self._boxes(shape)
        tiles = cut(image, self.config.tile, boxes)
        if len(self.models) == 1:
            preds = [self.models[0].predict(tiles)]
        else:
            preds = [m.predict(tiles[k:k + 1]) for k, m in enumerate(self.models)]
        pred = Prediction.concat(preds)
        if pred.anomaly_maps is None:
            return float(pred.image_scores.max()), None
        amap = stitch(torch.from_numpy(pred.anomaly_maps), shape, boxes)
        return float(amap.max()), amap

    def predict(self, images: Images) -> Prediction:
        self.require_fitted()
        scores, maps = [], []
        for image in self._images(images):
            score, amap = self._predict_one(image)
            scores.append(score)
            maps.append(amap)
        if any(m is None for m in maps):
            return Prediction(np.array(scores))
        if len({tuple(m.shape) for m in maps}) > 1:
            raise DataError("images of different sizes in one call: predict them one at a time (maps are stitched "
                            "at each image's own size)")
        return Prediction(np.array(scores), torch.stack(maps).numpy())

    def embed(self, images: Images) -> Latents:
        """The method's latents of every tile, image after image (tile order as `tile_boxes`)."""
        self.require_fitted()
        parts: dict[str, list[torch.Tensor]] = {}
        for image in self._images(images):
            tiles = cut(image, self.config.tile, self._boxes(tuple(image.shape[-2:])))
            for k, v in self.models[0].embed(tiles).items():
                parts.setdefault(k, []).append(v)
        return {k: torch.cat(v) for k, v in parts.items()}

    # -- persistence ----------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"tile{k}.{name}": v for k, m in enumerate(self.models) for name, v in m.state_tensors().items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        n = 1 + max(int(k.split(".", 1)[0][4:]) for k in tensors) if tensors else 1
        self.models = [self.method(self.inner_config).to(self.device, self.compute_precision) for _ in range(n)]
        for k, m in enumerate(self.models):
            prefix = f"tile{k}."
            m.load_state_tensors({name[len(prefix):]: v for name, v in tensors.items() if name.startswith(prefix)})
            m.fitted = True

    def state_json(self) -> dict[str, Any]:
        return {"positions": [list(p) for p in self.positions], "image_shape": self.image_shape,
                "models": [m.state_json() for m in self.models]}

    def weights_sha256(self) -> str | None:
        """The tiles share one backbone: the method's own hash."""
        return self.models[0].weights_sha256()

    def load_state_json(self, state: dict[str, Any]) -> None:
        self.positions = [tuple(p) for p in state.get("positions", [])]
        self.image_shape = tuple(state["image_shape"]) if state.get("image_shape") else None
        for m, s in zip(self.models, state.get("models", []), strict=False):
            m.load_state_json(s)
