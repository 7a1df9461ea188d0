"""Multi-level feature extraction from any `nn.Module`, by forward hooks on named submodules.

`FeatureExtractor` wraps a frozen network: it scales inputs in [0, 1] the way the network's weights
expect, runs the network in eval mode, records the outputs of the requested submodules (levels) and
stops the forward pass as soon as every requested level has been recorded (so asking for early
levels costs only the early layers). Level names are either aliases the backbone defines
("stage2", "stage3", ...: see each backbone module for the mapping) or dotted submodule paths as in
`model.named_modules()` ("layer2", "_blocks.4", "features.6").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn as nn

from latentad.errors import ConfigError, DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Input scalings: name -> (mean, std) applied to x in [0, 1] as (x - mean) / std.
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    # EfficientNet-Lite (TF-converted) weights expect [-1, 1]: (x*255 - 127.5) / 127.5 = 2x - 1.
    "lite": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


class _Stop(Exception):
    """Raised by the last needed hook to cut the forward pass short."""


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class FeatureExtractor(nn.Module):
    """Frozen backbone returning `{level: (B,C,h,w) tensor}` for images in [0, 1].

    Args:
        model: any nn.Module whose forward takes a (B,3,H,W) float tensor.
        levels: the levels to record, in the order they are returned (aliases or module paths).
        normalize: "imagenet", "lite" (2x-1), "none", or a (mean, std) pair of 3-tuples.
        aliases: level name -> submodule path (the backbone's named levels).
        name: the backbone's name (for messages and saved configs).
        channels_last: run the network in channels_last memory format (faster on CPU).
        early_stop: stop the forward once all levels are recorded.
        micro_batch: on CPU, run the network on this many images at a time (0 = the whole batch;
            None = auto: 2 when torch runs one intra-op thread, else the whole batch). With one
            thread, small chunks keep intermediate tensors small enough for the allocator to reuse
            them instead of mapping fresh pages for every layer (faster at 224 px than chunks of
            16). With several threads, small chunks multiply the OpenMP barriers: on the shared,
            loaded 2-core machines 2 threads ran far slower with 1-image chunks than with whole
            batches.
    """

    def __init__(
        self,
        model: nn.Module,
        levels: Sequence[str],
        normalize: str | tuple[Sequence[float], Sequence[float]] = "imagenet",
        aliases: Mapping[str, str] | None = None,
        name: str = "custom",
        channels_last: bool = True,
        early_stop: bool = True,
        micro_batch: int | None = None,
    ) -> None:
        super().__init__()
        if not levels:
            raise ConfigError(f"backbone {name}: no feature levels requested")
        self.name = name
        self.model = _freeze(model)
        self.aliases = dict(aliases or {})
        self.levels = list(levels)
        self.channels_last = channels_last
        self.early_stop = early_stop
        self.micro_batch = micro_batch
        mean, std = _norm_pair(normalize, name)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        modules = dict(self.model.named_modules())
        self._paths: dict[str, str] = {}
        for level in self.levels:
            path = self.aliases.get(level, level)
            if path not in modules:
                known = ", ".join(self.aliases) or "none"
                raise ConfigError(
                    f"backbone {name}: unknown level '{level}' (named levels: {known}; or a submodule "
                    f"path such as {next(iter(p for p in modules if p), '?')})"
                )
            self._paths[level] = path
        self._captured: dict[str, torch.Tensor] = {}
        self._handles = []
        for level, path in self._paths.items():
            self._handles.append(modules[path].register_forward_hook(self._make_hook(level)))
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._shapes: dict[tuple[int, int], dict[str, tuple[int, int, int]]] = {}

    def _make_hook(self, level: str):
        def hook(_module: nn.Module, _inputs, output) -> None:
            if isinstance(output, (tuple, list)):
                output = output[0]
            self._captured[level] = output
            if self.early_stop and len(self._captured) == len(self._paths):
                raise _Stop

        return hook

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> the input scaling the weights expect."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x.float() - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        n = self.micro_batch
        if n is None:
            n = 2 if torch.get_num_threads() == 1 else 0
        if n and x.device.type == "cpu" and x.shape[0] > n:
            parts = [self._forward(x[i : i + n]) for i in range(0, x.shape[0], n)]
            return {lv: torch.cat([p[lv] for p in parts]) for lv in self.levels}
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self._captured = {}
        try:
            self.model(self.preprocess(x))
        except _Stop:
            pass
        finally:
            captured, self._captured = self._captured, {}
        missing = [lv for lv in self.levels if lv not in captured]
        if missing:
            raise ConfigError(f"backbone {self.name}: level(s) {', '.join(missing)} never ran in forward()")
        return {lv: captured[lv] for lv in self.levels}

    def train(self, mode: bool = True) -> FeatureExtractor:
        # The backbone stays frozen in eval mode whatever the caller asks (BatchNorm statistics).
        super().train(False)
        return self

    def shapes(self, size: int) -> dict[str, tuple[int, int, int]]:
        """(C, h, w) of each level for a square input of side `size` (one dummy forward, cached)."""
        key = (size, size)
        if key not in self._shapes:
            with torch.inference_mode():
                feats = self(torch.zeros(1, 3, size, size, device=self.mean.device))
            self._shapes[key] = {k: tuple(v.shape[1:]) for k, v in feats.items()}  # type: ignore[misc]
        return self._shapes[key]

    def channels(self, size: int = 64) -> dict[str, int]:
        return {k: v[0] for k, v in self.shapes(size).items()}

    def strides(self, size: int = 224) -> dict[str, float]:
        return {k: size / v[2] for k, v in self.shapes(size).items()}

    def remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def _norm_pair(normalize, name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if isinstance(normalize, str):
        if normalize not in NORMALIZATIONS:
            raise ConfigError(
                f"backbone {name}: unknown normalization '{normalize}' (known: {', '.join(NORMALIZATIONS)})"
            )
        return NORMALIZATIONS[normalize]
    mean, std = normalize
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold an eval-mode BatchNorm into the preceding convolution, in place (conv gains a bias).

    Exact up to float rounding; about 1.4x faster inference on CPU for MobileNet-like networks.
    """
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    bias = bn.bias.detach() - bn.running_mean * scale
    with torch.no_grad():
        if conv.bias is not None:
            bias = bias + conv.bias.detach() * scale
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        conv.bias = nn.Parameter(bias, requires_grad=False)


def load_checkpoint(model: nn.Module, path: Path, what: str) -> None:
    """Load a third-party ImageNet checkpoint (tensors only: weights_only=True) into `model`, refusing
    one whose keys do not all match, with a one-line error naming the file."""
    if not path.is_file():
        raise DataError(f"{path}: weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path}: not a readable torch checkpoint ({exc})") from None
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise DataError(
            f"{path}: not {what} weights (missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})"
        )
