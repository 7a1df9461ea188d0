"""The AE's transposed convolution: the usual module, its weight gradient taken from NCHW copies in training."""

import pytest
import torch
from torch import nn

from latentad.detectors.reconstruction.deconv import ConvTranspose2d


def _pair(cin: int, cout: int, k: int, s: int, p: int) -> tuple[nn.ConvTranspose2d, ConvTranspose2d]:
    torch.manual_seed(0)
    plain = nn.ConvTranspose2d(cin, cout, k, s, p).double()
    ours = ConvTranspose2d(cin, cout, k, s, p).double()
    ours.load_state_dict(plain.state_dict())
    return plain, ours


@pytest.mark.parametrize("shape", [(8, 4, 4, 2, 1, 6), (5, 3, 3, 1, 1, 7)])
def test_gradients_equal_the_plain_module(shape):
    cin, cout, k, s, p, side = shape
    plain, ours = _pair(cin, cout, k, s, p)
    x = torch.rand(3, cin, side, side, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = plain(xa), ours(xb)
    torch.testing.assert_close(ya, yb)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad)
    for a, b in zip(plain.parameters(), ours.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)
        assert b.grad.stride() == b.stride()


def test_channels_last_float32_training_takes_the_nchw_weight_gradient():
    layer = ConvTranspose2d(4, 4, 4, 2, 1).to(memory_format=torch.channels_last)
    x = torch.rand(2, 4, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = layer(x)
    assert type(y.grad_fn).__name__.startswith("_NCHWWeightGrad")
    y.sum().backward()
    assert layer.weight.grad.is_contiguous(memory_format=torch.channels_last)
    assert x.grad.shape == x.shape


def test_evaluation_and_nchw_input_take_the_usual_path():
    layer = ConvTranspose2d(4, 4, 4, 2, 1)
    cl = torch.rand(2, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    assert not type(layer(torch.rand(2, 4, 8, 8, requires_grad=True)).grad_fn).__name__.startswith("_NCHW")
    with torch.no_grad():
        assert layer(cl).grad_fn is None
    layer.eval()
    assert not type(layer(cl.requires_grad_()).grad_fn).__name__.startswith("_NCHW")


def test_gradcheck():
    _, ours = _pair(3, 2, 4, 2, 1)
    x = torch.rand(1, 3, 4, 4, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(ours, (x,))


def test_bfloat16_autocast_takes_the_usual_path():
    layer = ConvTranspose2d(4, 4, 4, 2, 1).to(memory_format=torch.channels_last)
    x = torch.rand(2, 4, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert not type(y.grad_fn).__name__.startswith("_NCHW")
    y.float().sum().backward()
    assert layer.weight.grad is not None
