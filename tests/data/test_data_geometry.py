"""Placing images of any shape in a detector's input (squash / fit / crop) and sending maps back."""

import numpy as np
import pytest
import torch

from latentad.data.geometry import Placement, map_to_grid, place_tensor, place_uint8


def test_fit_keeps_the_aspect_ratio_and_pads_crop_covers_and_cuts():
    fit = Placement.of((100, 400), (64, 64), "fit")
    assert fit.scaled == (16, 64) and fit.box == (24, 0, 16, 64)
    crop = Placement.of((100, 400), (64, 64), "crop")
    assert crop.scaled == (64, 256) and crop.box == (0, 96, 64, 64)
    assert Placement.of((100, 400), (64, 64), "squash").scaled == (64, 64)
    with pytest.raises(ValueError, match="resize must be one of"):
        Placement.of((10, 10), (8, 8), "stretch")


@pytest.mark.parametrize("mode", ["squash", "fit", "crop"])
def test_uint8_and_tensor_placements_agree_in_shape_and_content(mode):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 100, 3), dtype=np.uint8)
    a = place_uint8(image, (32, 48), mode)
    b = place_tensor(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255, (32, 48), mode)[0]
    assert a.shape == (32, 48, 3) and b.shape == (3, 32, 48)
    assert np.abs(a / 255.0 - b.permute(1, 2, 0).numpy()).mean() < 0.03  # PIL vs torch resampling


def test_fit_padding_is_edge_replicated_and_cut_off_on_the_way_back():
    image = np.full((20, 80, 1), 200, dtype=np.uint8)
    placed = place_uint8(image, (40, 40), "fit")
    assert placed.shape == (40, 40, 1) and (placed == 200).all()  # the edge, not black
    p = Placement.of((20, 80), (40, 40), "fit")
    amap = torch.zeros(40, 40)
    rows, cols = p.valid()
    amap[rows, cols] = 1.0  # the image area
    back = map_to_grid(amap, p, (20, 80))
    assert back.shape == (20, 80) and torch.allclose(back, torch.ones(20, 80))


def test_crop_map_goes_back_with_the_unseen_borders_edge_filled():
    p = Placement.of((20, 80), (20, 20), "crop")
    assert p.box == (0, 30, 20, 20)
    amap = torch.arange(20.0).repeat(20, 1)  # rises left to right
    back = map_to_grid(amap, p, (20, 80))
    assert back.shape == (20, 80)
    assert torch.allclose(back[:, :25], torch.zeros(20, 25))
    assert torch.allclose(back[:, -25:], torch.full((20, 25), 19.0))
