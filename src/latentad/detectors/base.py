"""The one protocol every detector speaks: fit / predict / embed / save / load, and the registry.

A detector is a config dataclass (with named presets) plus fitted state. `fit` takes an `ImageSet`
of normal images; `predict` and `embed` take an `ImageSet` or a float tensor (N,C,H,W) in [0,1].
Scores are raw (higher = more anomalous); thresholds live apart, in `latentad.calibration`, so they
can be recalibrated without touching the model.
"""

from __future__ import annotations

import dataclasses
import importlib
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
                              "or Detector.from_preset(), which wrap the method in detectors.tiling")
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
    def from_preset(cls, preset: str | None = None, **overrides: Any) -> Detector:
        values: dict[str, Any] = {}
        if preset and preset != "default":
            if preset not in cls.presets:
                known = ", ".join(["default", *cls.presets]) or "default"
                raise ConfigError(f"method {cls.name}: unknown preset '{preset}' (known: {known})")
            values.update(cls.presets[preset])
        values.update(overrides)  # None is a value (e.g. augment_to=None): it overrides the preset
        return cls.build(replace_config(cls.Config(), values, cls.name))

    @classmethod
    def build(cls, config: DetectorConfig) -> Detector:
        """The detector for `config`: the method itself, or the method on tiles when `config.tile > 0`."""
        if not config.tile and (config.tile_overlap or config.tile_mode != "shared"):
            raise ConfigError(f"{cls.name}: tile_overlap / tile_mode apply only with tile > 0 (tile=0: no tiling)")
        if config.tile:
            from latentad.detectors.tiling import TiledDetector

            if config.resize != "squash":
                raise ConfigError(f"{cls.name}: resize={config.resize} does not apply with tile={config.tile} "
                                  "(tiles are cut at full resolution)")
            return TiledDetector(cls, check_config(config, cls.name))
        return cls(config)

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

    @staticmethod
    def load(path: str | Path, device: str | torch.device | None = None, precision: str | None = None) -> Detector:
        """A saved detector, on the CPU or on `device` (a model fitted on a GPU loads on a CPU); refused
        when it records backbone weights other than those installed (`check_recorded_weights`)."""
        path = Path(path)
        meta = io.read_json(path / "detector.json")
        cls = get_method(meta.get("method", "?"))
        det = cls.build(replace_config(cls.Config(), meta.get("config", {}), cls.name))
        check_recorded_weights(det, meta.get("weights_sha256"), path / "detector.json")
        det.load_state_tensors(io.read_tensors(path / "model.safetensors"))
        det.load_state_json(meta.get("state", {}))
        det.fitted = True
        if device is not None or precision is not None:
            det.to(device or "cpu", precision)
        return det

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


# -- registry: explicit names -> "module:Class", imported only when used -------------------------
METHODS: dict[str, str] = {
    "ae_l2": "latentad.detectors.reconstruction.ae:AEL2",
    "ae_ssim": "latentad.detectors.reconstruction.ae:AESSIM",
    "vae_l2": "latentad.detectors.reconstruction.vae:VAEL2",
    "vae_kl": "latentad.detectors.reconstruction.vae:VAEKL",
    "vqvae_ssim": "latentad.detectors.reconstruction.vqvae:VQVAESSIM",
    "vqvae_ssim_am": "latentad.detectors.reconstruction.vqvae:VQVAESSIMAM",
    "gaussian": "latentad.detectors.pretrained.gaussian:GaussianAD",
    "padim": "latentad.detectors.pretrained.padim:PaDiM",
    "patchcore": "latentad.detectors.pretrained.patchcore:PatchCore",
    "simplenet": "latentad.detectors.pretrained.simplenet:SimpleNet",
    "ssl_gaussian": "latentad.detectors.selfsupervised.ssl_gaussian:SSLGaussian",
    "cutpaste": "latentad.detectors.selfsupervised.cutpaste:CutPaste",
    "dsvdd": "latentad.detectors.selfsupervised.dsvdd:DSVDD",
    "dino_knn": "latentad.detectors.selfsupervised.dino_knn:DinoKNN",
    "dinomaly": "latentad.detectors.selfsupervised.dinomaly:Dinomaly",
    "ensemble": "latentad.detectors.ensemble:Ensemble",
}


def available_methods() -> list[str]:
    """Registered methods whose module is present in this installation."""
    import importlib.util

    return [n for n, target in METHODS.items() if importlib.util.find_spec(target.split(":")[0]) is not None]


def get_method(name: str) -> type[Detector]:
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}' (known: {', '.join(available_methods())})")
    module_name, cls_name = METHODS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ConfigError(f"method '{name}' is not available in this version") from None
        raise
    return getattr(module, cls_name)


def create(name: str, preset: str | None = None, device: str | torch.device | None = None,
           precision: str | None = None, **overrides: Any) -> Detector:
    """Build an unfitted detector by registry name, preset and option overrides, on `device`
    (default: the CPU; "auto" takes a GPU when torch sees one) in `precision` (default "32").
    `create("auto", budget=SECONDS, candidates="a,b")` chooses the method on the data (`latentad.selection`)."""
    if name == "auto":
        from latentad.selection.auto import AutoDetector

        if preset not in (None, "default"):
            raise ConfigError(f"method auto: no presets (got --preset {preset})")
        return AutoDetector(device=device, precision=precision, **overrides)
    det = get_method(name).from_preset(preset, **overrides)
    if device is not None or precision is not None:
        det.to(device or "cpu", precision)
    return det
