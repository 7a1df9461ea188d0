"""The registry of methods: names -> detector classes, and the three ways to get a detector
(`create`, `build`, `load`).

Why it stands apart from `detectors/` and `selection/`: the table names every method, `auto`
included, as "module:Class" text that is imported only when used, so the protocol (`detectors.base`)
knows no method, no method knows the search, and the search (`selection/`) consults the registry like
any caller. `build` is where a config with `tile > 0` becomes a `TiledDetector`.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

import torch

from latentad import io
from latentad.config import check_config
from latentad.detectors.base import Detector, DetectorConfig, check_recorded_weights, check_tiling, replace_config
from latentad.detectors.tiling import TiledDetector
from latentad.errors import ConfigError

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
    "ensemble": "latentad.selection.ensemble:Ensemble",
}
AUTO = "latentad.selection.auto:AutoDetector"  # `create("auto")`: chooses one of METHODS on the data


def _import(target: str, name: str) -> Any:
    module_name, cls_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ConfigError(f"method '{name}' is not available in this version") from None
        raise
    return getattr(module, cls_name)


def available_methods() -> list[str]:
    """Registered methods whose module is present in this installation."""
    return [n for n, target in METHODS.items() if importlib.util.find_spec(target.split(":")[0]) is not None]


def get_method(name: str) -> type[Detector]:
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}' (known: {', '.join(available_methods())})")
    return _import(METHODS[name], name)


def build(cls: type[Detector], config: DetectorConfig) -> Detector:
    """The detector for `config`: the method itself, or the method on tiles when `config.tile > 0`."""
    check_tiling(cls.name, config)
    return TiledDetector(cls, check_config(config, cls.name)) if config.tile else cls(config)


def from_preset(cls: type[Detector], preset: str | None = None, **overrides: Any) -> Detector:
    """`cls` with `preset`'s options, then `overrides` (validated; tiled when `tile > 0`)."""
    return build(cls, cls.config_for(preset, **overrides))


def create(name: str, preset: str | None = None, device: str | torch.device | None = None,
           precision: str | None = None, **overrides: Any) -> Detector:
    """Build an unfitted detector by registry name, preset and option overrides, on `device`
    (default: the CPU; "auto" takes a GPU when torch sees one) in `precision` (default "32").
    `create("auto", budget=SECONDS, candidates="a,b")` chooses the method on the data (`latentad.selection`)."""
    if name == "auto":
        if preset not in (None, "default"):
            raise ConfigError(f"method auto: no presets (got --preset {preset})")
        return _import(AUTO, name)(device=device, precision=precision, **overrides)
    det = from_preset(get_method(name), preset, **overrides)
    if device is not None or precision is not None:
        det.to(device or "cpu", precision)
    return det


def load(path: str | Path, device: str | torch.device | None = None, precision: str | None = None,
         backbone: torch.nn.Module | None = None) -> Detector:
    """A saved detector, on the CPU or on `device` (a model fitted on a GPU loads on a CPU); refused
    when it records backbone weights other than those installed (`check_recorded_weights`).
    `backbone`: the user nn.Module a pretrained detector was fitted with (its weights are in the file)."""
    path = Path(path)
    meta = io.read_json(path / "detector.json")
    cls = get_method(meta.get("method", "?"))
    det = build(cls, replace_config(cls.Config(), meta.get("config", {}), cls.name))
    check_recorded_weights(det, meta.get("weights_sha256"), path / "detector.json")
    det.load_state_tensors(io.read_tensors(path / "model.safetensors"))
    det.load_state_json(meta.get("state", {}))
    det.fitted = True
    if backbone is not None:
        if not hasattr(det, "set_backbone"):
            raise ConfigError(f"{path}: backbone= applies to the pretrained family, not to {det.name}")
        det.set_backbone(backbone)
    if device is not None or precision is not None:
        det.to(device or "cpu", precision)
    return det
