"""Optional torchvision / timm backbones ("torchvision:resnet18", "timm:resnet18").

Used only when the library imports (on CPU-only torch installs `import torchvision` fails: both are
imported here, lazily, never at module level). Nothing is downloaded: weights come from `weights_path`
or, for torchvision, from a checkpoint already present in torch hub's cache; otherwise a
ConfigError says so (pass `pretrained=False` for random weights).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from latentad.errors import ConfigError, DataError

# ResNet-like torchvision models: stageK = the layer ending at stride 2^K.
_RESNET_ALIASES = {"stage1": "relu", "stage2": "layer1", "stage3": "layer2", "stage4": "layer3",
                   "stage5": "layer4"}


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise DataError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def build_torchvision(arch: str, weights_path: str | Path | None = None,
                      pretrained: bool = True) -> tuple[nn.Module, dict[str, str]]:
    try:
        import torchvision  # noqa: F401
        from torchvision import models
    except Exception as exc:  # ImportError, or RuntimeError from a CUDA build on CPU torch
        raise ConfigError(f"torchvision:{arch}: torchvision does not import here ({exc})") from None
    model = models.get_model(arch, weights=None)
    if pretrained:
        path = Path(weights_path) if weights_path else None
        if path is None:
            try:
                url = models.get_model_weights(arch).DEFAULT.url
            except Exception:
                url = ""
            cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
            if not url or not cached.is_file():
                raise ConfigError(
                    f"torchvision:{arch}: no local weights (pass weights_path; nothing is downloaded)"
                )
            path = cached
        model.load_state_dict(_load_state(path))
    aliases = _RESNET_ALIASES if hasattr(model, "layer1") else {}
    return model.eval(), dict(aliases)


def build_timm(arch: str, weights_path: str | Path | None = None,
               pretrained: bool = True) -> tuple[nn.Module, dict[str, str]]:
    try:
        import timm
    except Exception as exc:
        raise ConfigError(f"timm:{arch}: timm does not import here ({exc})") from None
    model = timm.create_model(arch, pretrained=False)
    if pretrained:
        if not weights_path:
            raise ConfigError(f"timm:{arch}: pass weights_path (nothing is downloaded)")
        model.load_state_dict(_load_state(Path(weights_path)))
    aliases: dict[str, str] = {}
    for info in getattr(model, "feature_info", []) or []:
        reduction, module = info.get("reduction"), info.get("module")
        if reduction and module:
            aliases[f"stage{int(reduction).bit_length() - 1}"] = module
    return model.eval(), aliases
