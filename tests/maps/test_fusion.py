"""SSIM x AM fusion: shapes, and a pixel with more of both ranks higher."""

import pytest
import torch

from latentad.maps.fusion import fuse_am_ssim, upsample_map


def test_shapes_and_upsampling_modes():
    am = torch.rand(2, 8, 8)
    ssim = torch.rand(2, 32, 32)
    for mode in ("bilinear", "nearest"):
        assert upsample_map(am, 32, mode).shape == (2, 32, 32)
        assert fuse_am_ssim(ssim, am, dilation=5, mode=mode).shape == (2, 32, 32)
    assert torch.equal(upsample_map(am, 8), am)
    with pytest.raises(ValueError):
        fuse_am_ssim(ssim, torch.rand(3, 8, 8))


def test_ordering_higher_am_and_higher_ssim_anomaly_rank_higher():
    ssim = torch.full((1, 16, 16), 0.1)
    am = torch.full((1, 4, 4), 0.2)
    ssim[0, 2, 2], am[0, 0, 0] = 0.8, 1.0  # pixel (2,2) lies in latent cell (0,0): both factors high
    ssim[0, 10, 10] = 0.8  # only the SSIM factor high
    am[0, 3, 0] = 1.0  # only the AM high, at cell (3,0)
    fused = fuse_am_ssim(ssim, am, dilation=1, mode="nearest")
    both, ssim_only, am_only, neither = fused[0, 2, 2], fused[0, 10, 10], fused[0, 13, 1], fused[0, 6, 6]
    assert both > ssim_only > neither and both > am_only > neither
    assert torch.allclose(both, torch.tensor(0.8))  # exactly the product


def test_dilation_spreads_the_am_and_zero_am_silences():
    ssim = torch.ones(1, 16, 16)
    am = torch.zeros(1, 4, 4)
    am[0, 1, 1] = 1.0
    small = fuse_am_ssim(ssim, am, dilation=1, mode="nearest")
    big = fuse_am_ssim(ssim, am, dilation=9, mode="nearest")
    assert int((big > 0).sum()) > int((small > 0).sum()) == 16
    assert torch.all(big >= small)
    assert float(fuse_am_ssim(ssim, torch.zeros(1, 4, 4), 5).abs().max()) == 0.0
