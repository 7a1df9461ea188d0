"""The one protocol every detector speaks: fit / predict / embed / save (the registry of methods,
`create` and `load` are in `latentad.registry`).

A detector is a config dataclass (with named presets) plus fitted state. `fit` takes an `ImageSet`
of normal images; `predict` and `embed` take an `ImageSet` or a float tensor (N,C,H,W) in [0,1].
Scores are raw (higher = more anomalous); thresholds live apart, in `latentad.calibration`, so they
can be recalibrated without touching the model.
"""

from __future__ import annotations

import dataclasses
import random
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import torch

from latentad import io
from latentad.config import AT_LEAST_ONE, NON_NEGATIVE, Bound, check_config, check_keys
from latentad.data.base import ImageSet
from latentad.data.color import to_channels
from latentad.data.geometry import as_shape, place_tensor
from latentad.errors import ConfigError, DataError, ModelFileError

Images = ImageSet | torch.Tensor
Latents = dict[str, torch.Tensor]

FORMAT_VERSION = 1


@dataclass
class Prediction:
    """Raw scores: image_scores (N,), anomaly_maps (N,H,W) at the detector's input size or None."""

    image_scores: np.ndarray
    anomaly_maps: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.image_scores = np.asarray(self.image_scores, dtype=np.float64)
        if self.anomaly_maps is not None:
            self.anomaly_maps = np.asarray(self.anomaly_maps, dtype=np.float32)
        if not np.all(np.isfinite(self.image_scores)):
            raise FloatingPointError("detector produced non-finite image scores")

    @staticmethod
    def concat(parts: list[Prediction]) -> Prediction:
        maps = None
        if parts and all(p.anomaly_maps is not None for p in parts):
            maps = np.concatenate([p.anomaly_maps for p in parts])  # type: ignore[misc]
        return Prediction(np.concatenate([p.image_scores for p in parts]), maps)


@dataclass
class DetectorConfig:
    """Fields every detector shares; subclasses add their own (and their `bounds`, checked by
    `latentad.config.check_config` whenever a detector is built)."""

    image_size: int | tuple[int, int] = 256  # a side, or (H, W) ("HxW" on the command line)
    channels: Literal[1, 3] = 3
    batch_size: int = 16
    seed: int = 0
    resize: Literal["squash", "fit", "crop"] = "squash"  # how an image of another shape is brought to it
    tile: int = 0  # > 0: fit and score on full-resolution tiles of this side (`detectors.tiling`)
    tile_overlap: int = 0
    tile_mode: Literal["shared", "per_position"] = "shared"
    bounds: ClassVar[dict[str, Bound]] = {"image_size": Bound(ge=8), "batch_size": AT_LEAST_ONE,
                                          "seed": NON_NEGATIVE, "tile": NON_NEGATIVE, "tile_overlap": NON_NEGATIVE}


class Detector(ABC):
    """Base of all detectors. Subclasses set `name`, `family`, `Config`, `presets`."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""  # "reconstruction" | "pretrained" | "selfsupervised"
    Config: ClassVar[type[DetectorConfig]] = DetectorConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    preset_notes: ClassVar[dict[str, str]] = {}  # what a preset is, and how it differs from its paper
    localizes: ClassVar[bool] = True

    @classmethod
    def describe(cls) -> str:
        """One line for `latentad list`: the first line of the class docstring."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else f"{cls.family} detector"

    def __init__(self, config: DetectorConfig | None = None, **overrides: Any) -> None:
        cfg = config if config is not None else self.Config()
        if overrides:
            cfg = replace_config(cfg, overrides, self.name)
        self.config = check_config(cfg, self.name or type(self).__name__)
        if self.config.tile:
            raise ConfigError(f"{self.name}: a tiled detector (tile={self.config.tile}) is built by latentad.create() "
                              "or latentad.registry.build(), which wrap the method in detectors.tiling")
        if min(as_shape(self.config.image_size)) < 8:
            raise ConfigError(f"{self.name}: option image_size={self.config.image_size!r} is out of range "
                              "(allowed: every side >= 8)")
        self.fitted = False
        self.checkpoint_dir: Path | None = None
        self.resume = False
        self.device = torch.device("cpu")  # runtime, not saved: see `to`
        self.compute_precision = "32"

    def to(self, device: str | torch.device | None = "auto", precision: str | None = None) -> Self:
        """Run on `device` (auto | cpu | cuda[:N] | mps) in `precision` (32 | 16-mixed | bf16-mixed):
        the model, statistics and memory bank move there; the saved model stays device-free."""
        from latentad.devices import check_precision, resolve_device

        self.device = resolve_device(device)
        self.compute_precision = check_precision(precision or self.compute_precision, self.device)
        self.move_state(self.device)
        return self

    def move_state(self, device: torch.device) -> None:
        """Move fitted tensors and modules to `device` (each family moves its own)."""
        del device

    def autocast(self):
        """The mixed-precision context of this detector's network forwards."""
        from latentad.devices import autocast

        return autocast(self.device, self.compute_precision)

    def set_checkpointing(self, directory: str | Path | None, resume: bool = False) -> None:
        """Where trainable detectors write a checkpoint every epoch, and whether `fit` resumes."""
        self.checkpoint_dir = Path(directory) if directory is not None else None
        self.resume = resume

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def config_for(cls, preset: str | None = None, **overrides: Any) -> DetectorConfig:
        """The validated config of `preset` with `overrides` on top (`latentad.registry` builds the
        detector from it, tiled when `tile > 0`)."""
        values: dict[str, Any] = {}
        if preset and preset != "default":
            if preset not in cls.presets:
                known = ", ".join(["default", *cls.presets]) or "default"
                raise ConfigError(f"method {cls.name}: unknown preset '{preset}' (known: {known})")
            values.update(cls.presets[preset])
        values.update(overrides)  # None is a value (e.g. augment_to=None): it overrides the preset
        config = check_config(replace_config(cls.Config(), values, cls.name), cls.name)
        check_tiling(cls.name, config)
        return config

    # -- protocol -----------------------------------------------------------------------------
    @abstractmethod
    def fit(self, train: ImageSet) -> Self:
        """Learn normality from `train` (normal images only)."""

    def predict(self, images: Images) -> Prediction:
        """Raw image scores and, for localising methods, maps at the input size: `score_batch` on
        each batch (the same function the ONNX export traces)."""
        self.require_fitted()
        parts = []
        with torch.inference_mode():
            for x in self.iter_batches(images, progress=f"{self.name} predict"):
                scores, maps = self.score_batch(x)
                parts.append(Prediction(scores.double().cpu().numpy(),
                                        None if maps is None else maps.float().cpu().numpy()))
        return Prediction.concat(parts)

    def score_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw scores (B,) and maps (B,H,W) (None when the method does not localise) of one batch at
        the input shape, in torch operations only: `predict` runs it and `latentad export` traces it
        into one graph, so an exported model cannot drift from its checkpoint."""
        raise NotImplementedError(f"{self.name} has no scoring graph")

    def embed(self, images: Images) -> Latents:
        """Named latent tensors the method scores in (for the analysis suite)."""
        raise NotImplementedError(f"{self.name} does not expose latents")

    @abstractmethod
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor needed to rebuild the fitted detector (weights, statistics)."""

    @abstractmethod
    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of `state_tensors` (called on a detector built from the saved config)."""

    def state_json(self) -> dict[str, Any]:
        """Fitted values that are not tensors (JSON-able)."""
        return {}

    def load_state_json(self, state: dict[str, Any]) -> None:
        """Inverse of `state_json`; nothing to restore by default."""
        del state

    def weights_sha256(self) -> str | None:
        """sha256 of the pretrained weight file outside the saved model that the fitted state depends
        on (a frozen backbone's); None when the saved model holds every weight it scores with."""
        return None

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """model.safetensors + detector.json, which records `weights_sha256` when the fitted state
        depends on weights outside it (a pretrained backbone's), so that `load` can refuse others."""
        if not self.fitted:
            raise ModelFileError(f"{path}: cannot save an unfitted {self.name} detector")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_tensors().items()}  # device-free
        io.write_tensors(path / "model.safetensors", tensors)
        meta = {
            "format_version": FORMAT_VERSION,
            "method": self.name,
            "config": dataclasses.asdict(self.config),
            "state": self.state_json(),
        }
        weights = self.weights_sha256()
        if weights is not None:  # the backbone its statistics were fitted on: checked at load
            meta["weights_sha256"] = weights
        io.write_json(path / "detector.json", meta)
        return path

    # -- helpers for subclasses -----------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, int]:
        """(H, W) the detector's model sees (`image_size` as a pair)."""
        return as_shape(self.config.image_size)

    map_statistic: ClassVar[str | None] = None  # "max" | "mean" | "top:f" (maps.statistics): the score is the map's

    def seed_everything(self) -> None:
        seed_everything(self.config.seed)

    def require_fitted(self) -> None:
        if not self.fitted:
            raise ConfigError(f"{self.name}: call fit() before predict() or embed()")

    def iter_batches(self, images: Images, progress: str | None = None) -> Iterator[torch.Tensor]:
        """Float batches (B,C,H,W) at the detector's input shape and channel count (placed by `resize`)."""
        shape, ch, mode = self.input_shape, self.config.channels, self.config.resize
        if isinstance(images, ImageSet):
            if len(images) == 0:
                raise DataError(f"{images.name}: no images")
            for batch in images.with_size(shape, ch, resize=mode).batches(self.config.batch_size, progress):
                yield batch.images.to(self.device, non_blocking=True)
            return
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise DataError("images must be an ImageSet or a float tensor (N,C,H,W) in [0,1]")
        for start in range(0, images.shape[0], self.config.batch_size):
            yield conform(images[start : start + self.config.batch_size].to(self.device), shape, ch, mode)


def conform(x: torch.Tensor, size: int | tuple[int, int], channels: int, resize: str = "squash") -> torch.Tensor:
    """Bring a float batch to (B,channels,H,W); colour to grey by the one luma of `data.color`, other
    shapes placed by `resize` (`data.geometry`)."""
    x = to_channels(x.float(), channels)
    shape = as_shape(size)
    if tuple(x.shape[-2:]) != shape:
        x = place_tensor(x, shape, resize)
    return x


def check_tiling(name: str, config: DetectorConfig) -> None:
    """Tiling options that contradict each other, refused before anything is built."""
    if not config.tile and (config.tile_overlap or config.tile_mode != "shared"):
        raise ConfigError(f"{name}: tile_overlap / tile_mode apply only with tile > 0 (tile=0: no tiling)")
    if config.tile and config.resize != "squash":
        raise ConfigError(f"{name}: resize={config.resize} does not apply with tile={config.tile} "
                          "(tiles are cut at full resolution)")


def check_recorded_weights(det: Detector, recorded: str | None, where: Path) -> None:
    """Refuse a model fitted on other backbone weights than those installed now (a model saved before
    hashes were recorded has none, and loads)."""
    if recorded is None:
        return
    current = det.weights_sha256()
    if current != recorded:
        raise ModelFileError(
            f"{where}: fitted on backbone weights with sha256 {recorded}, but the weights here have sha256 "
            f"{current or '(none)'}: refit it, or install the weights it was fitted on"
        )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def replace_config(cfg: DetectorConfig, values: dict[str, Any], owner: str = "") -> DetectorConfig:
    """A copy of `cfg` with `values`; unknown keys are refused by name (types: `check_config`)."""
    check_keys(type(cfg), values, owner or type(cfg).__name__)
    fixed = {}
    for k, v in values.items():
        current = getattr(cfg, k)
        if isinstance(current, tuple) and isinstance(v, list):
            v = tuple(v)
        fixed[k] = v
    return dataclasses.replace(cfg, **fixed)
