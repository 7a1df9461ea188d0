"""Any nn.Module as a backbone through forward hooks; normalisation; optional adapters."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from latentad.backbones import build_model, wrap_module
from latentad.errors import ConfigError


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, 2, 1)
        self.b = nn.Sequential(nn.Conv2d(4, 6, 3, 2, 1), nn.ReLU())
        self.c = nn.Conv2d(6, 2, 1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.c(self.b(self.a(x))).mean((2, 3))


def test_hooks_return_named_levels_in_order_and_scale_inputs():
    net = Net()
    fx = wrap_module(net, ["b", "a"], normalize="none", channels_last=False)
    x = torch.rand(2, 3, 16, 16)
    with torch.inference_mode():
        out = fx(x)
    assert list(out) == ["b", "a"]
    torch.testing.assert_close(out["a"], net.a(x))
    assert out["b"].shape == (2, 6, 4, 4)
    fx_lite = wrap_module(Net(), ["a"], normalize="lite")
    torch.testing.assert_close(fx_lite.preprocess(torch.full((1, 3, 2, 2), 0.75)), torch.full((1, 3, 2, 2), 0.5))
    fx_custom = wrap_module(Net(), ["a"], normalize=((0.5, 0.5, 0.5), (2.0, 2.0, 2.0)))
    torch.testing.assert_close(fx_custom.preprocess(torch.ones(1, 3, 1, 1)), torch.full((1, 3, 1, 1), 0.25))
    assert fx.preprocess(torch.rand(1, 1, 4, 4)).shape == (1, 3, 4, 4)  # grey -> 3 channels


def test_aliases_frozen_eval_and_errors():
    net = Net().train()
    fx = wrap_module(net, ["mid"], aliases={"mid": "b.1"})
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    fx.train()
    assert not net.training
    assert fx.channels(16) == {"mid": 6}
    with pytest.raises(ConfigError, match="unknown level 'zz'"):
        wrap_module(Net(), ["zz"])
    with pytest.raises(ConfigError, match="no feature levels"):
        wrap_module(Net(), [])
    with pytest.raises(ConfigError, match="unknown normalization"):
        wrap_module(Net(), ["a"], normalize="weird")


def test_micro_batches_run_the_network_per_chunk():
    net = Net()
    fx = wrap_module(net, ["b"])
    fx.micro_batch = 2
    with torch.inference_mode():
        out = fx(torch.rand(5, 3, 8, 8))
    assert out["b"].shape[0] == 5 and net.calls == 3


def test_unknown_and_optional_backbones():
    with pytest.raises(ConfigError, match="unknown backbone"):
        build_model("resnet9000")
    for name in ("torchvision:resnet18", "timm:resnet18"):
        try:
            model, aliases, normalize = build_model(name, pretrained=False)
        except ConfigError as exc:  # the library does not import here: a one-line message
            assert "does not import" in str(exc)
        else:
            assert isinstance(model, nn.Module) and normalize == "imagenet"
