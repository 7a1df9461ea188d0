"""Map smoothing as matrix products equals upsample + kornia Gaussian blur; patch grids."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d

from latentad.detectors.pretrained.common import gaussian_blur, smoothing_matrix, to_grid


@pytest.mark.parametrize("n_in,n_out,sigma", [(28, 224, 4.0), (7, 64, 4.0), (16, 64, 1.5), (8, 32, 0.0)])
def test_smoothing_matrix_equals_interpolate_then_kornia_blur(n_in, n_out, sigma):
    m = torch.rand(3, n_in, n_in)
    a = smoothing_matrix(n_in, n_out, sigma)
    got = a @ m @ a.T
    ref = F.interpolate(m[:, None], size=(n_out, n_out), mode="bilinear", align_corners=False)
    if sigma > 0:
        k = 2 * int(4 * sigma + 0.5) + 1
        ref = gaussian_blur2d(ref, (k, k), (sigma, sigma), border_type="reflect")
    torch.testing.assert_close(got, ref[:, 0], rtol=1e-5, atol=1e-5)


def test_gaussian_blur_rectangular_and_tiny():
    x = torch.rand(2, 1, 40, 50)
    ref = gaussian_blur2d(x, (17, 17), (2.0, 2.0), border_type="reflect")
    torch.testing.assert_close(gaussian_blur(x, 2.0), ref, rtol=1e-5, atol=1e-5)
    tiny = gaussian_blur(torch.ones(1, 1, 5, 5), 4.0)  # kernel wider than the map: truncated taps
    torch.testing.assert_close(tiny, torch.ones(1, 1, 5, 5))


def test_to_grid_concatenates_levels_on_one_grid_with_local_averaging():
    feats = {"fine": torch.rand(2, 3, 16, 16), "coarse": torch.rand(2, 5, 4, 4)}
    g = to_grid(feats, ["fine", "coarse"], 8)
    assert g.shape == (2, 8, 8, 8)
    torch.testing.assert_close(g[:, :3], F.adaptive_avg_pool2d(feats["fine"], 8))
    agg = to_grid({"x": torch.arange(9.0).view(1, 1, 3, 3)}, ["x"], 3, aggregate=3)
    assert agg[0, 0, 1, 1] == 4.0 and agg[0, 0, 0, 0] == pytest.approx((0 + 1 + 3 + 4) / 4)
