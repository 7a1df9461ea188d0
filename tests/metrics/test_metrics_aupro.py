"""AUPRO: hand-worked toy, 8-connectivity, a brute-force reference, perfect/random maps."""

import bisect

import numpy as np
import pytest
import torch
from scipy import ndimage

from latentad.metrics import aupro, pixel_auroc

torch.set_num_threads(1)


def _toy():
    """One 4x4 image, regions A = {(0,0), (1,1)} (one region only under 8-connectivity), B = {(3,3)}.

    Scores: A 0.9 and 0.3, B 0.5; normals: one 0.8, one 0.5 (tied with B), eleven 0.0.
    Curve (FPR, PRO) per threshold: 0.9 -> (0, 1/4); 0.8 -> (1/13, 1/4); 0.5 -> (2/13, 3/4)
    (sloped: B and a normal pixel tie); 0.3 -> (2/13, 1); 0.0 -> (1, 1).
    """
    mask = np.zeros((1, 4, 4), dtype=bool)
    mask[0, 0, 0] = mask[0, 1, 1] = mask[0, 3, 3] = True
    amap = np.zeros((1, 4, 4))
    amap[0, 0, 0], amap[0, 1, 1], amap[0, 3, 3] = 0.9, 0.3, 0.5
    amap[0, 0, 3], amap[0, 2, 0] = 0.8, 0.5
    return mask, amap


def test_toy_full_range():
    # area = 1/4 * 1/13 + (1/4 + 3/4)/2 * 1/13 + 1 * 11/13 = 11.75 / 13
    mask, amap = _toy()
    assert aupro(mask, amap, fpr_limit=1.0) == pytest.approx(47 / 52, abs=1e-12)


def test_toy_interpolates_at_the_limit():
    # limit 1.5/13 cuts the sloped segment halfway, where PRO = 1/2:
    # area = 1/4 * 1/13 + (1/4 + 1/2)/2 * 0.5/13 = 0.4375/13; / (1.5/13) = 7/24
    mask, amap = _toy()
    assert aupro(mask, amap, fpr_limit=1.5 / 13) == pytest.approx(7 / 24, abs=1e-12)


def test_toy_usual_limit():
    # limit 0.3: 1/4 * 1/13 + 1/2 * 1/13 + 1 * (0.3 - 2/13), divided by 0.3
    mask, amap = _toy()
    expected = (0.75 / 13 + 0.3 - 2 / 13) / 0.3
    assert aupro(mask, amap) == pytest.approx(expected, abs=1e-12)


def test_toy_uses_8_connectivity():
    # up to FPR 1/13 PRO is flat at 1/4 (half of A, none of B). Under 4-connectivity A would be two
    # regions and PRO would be 1/3 there, giving 1/3 instead of 1/4.
    mask, amap = _toy()
    assert aupro(mask, amap, fpr_limit=1 / 13) == pytest.approx(0.25, abs=1e-12)


def _brute_force_aupro(masks, maps, limit):
    """Loop over thresholds + the MVTec AD reference's trapezoid with correction at x_max."""
    masks = masks.astype(bool)
    region_masks = []
    for i, mask in enumerate(masks):
        lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
        region_masks += [(i, lab == r) for r in range(1, n + 1)]
    normal = ~masks
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        above = maps >= t
        fprs.append((above & normal).sum() / normal.sum())
        pros.append(np.mean([above[i][r].mean() for i, r in region_masks]))
    x, y = np.array(fprs), np.array(pros)
    correction = 0.0
    if limit not in x:
        ins = bisect.bisect(x, limit)
        y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (limit - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_interp + y[ins - 1]) * (limit - x[ins - 1])
    keep = x <= limit
    x, y = x[keep], y[keep]
    return (np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction) / limit


@pytest.mark.parametrize("limit", [0.3, 0.05, 1.0])
def test_matches_brute_force_with_ties(limit):
    rng = np.random.default_rng(4)
    masks = np.zeros((4, 12, 12), dtype=bool)
    masks[1, 2:5, 2:6] = True
    masks[1, 8, 8] = masks[1, 9, 9] = True  # diagonal pair: one region
    masks[2, 5:11, 1:3] = True
    masks[3, 0, 0] = True
    maps = rng.integers(0, 12, masks.shape).astype(np.float32) + 3 * masks * rng.random(masks.shape)
    maps = np.round(maps, 1).astype(np.float32)  # keep many ties between defect and normal pixels
    assert aupro(masks, maps, fpr_limit=limit) == pytest.approx(
        _brute_force_aupro(masks, maps, limit), abs=1e-12
    )


def test_single_region_full_range_equals_pixel_auroc():
    # with one region PRO = TPR, so AUPRO over FPR in [0, 1] is the pixel AUROC (ties included)
    rng = np.random.default_rng(5)
    masks = np.zeros((3, 20, 20), dtype=bool)
    masks[1, 4:12, 6:15] = True
    maps = rng.integers(0, 8, masks.shape).astype(np.float32) + masks
    assert aupro(masks, maps, fpr_limit=1.0) == pytest.approx(pixel_auroc(masks, maps), abs=1e-12)


def test_perfect_map_gives_one_and_torch_input():
    rng = np.random.default_rng(6)
    masks = np.zeros((3, 32, 32), dtype=bool)
    masks[0, 3:9, 3:9] = True
    masks[2, 20:22, 5:30] = True
    maps = rng.random(masks.shape).astype(np.float32) + 2.0 * masks
    assert aupro(torch.from_numpy(masks), torch.from_numpy(maps)) == pytest.approx(1.0, abs=1e-12)


def test_inverted_map_gives_zero():
    masks = np.zeros((2, 16, 16), dtype=bool)
    masks[0, 4:8, 4:8] = True
    maps = np.random.default_rng(7).random(masks.shape) + 1.0
    maps[masks] = 0.0
    assert aupro(masks, maps) == 0.0


def test_random_map_is_about_half_the_limit():
    # for a random map every region's overlap tracks the FPR: PRO(f) ~ f, so AUPRO ~ limit / 2
    rng = np.random.default_rng(8)
    masks = np.zeros((6, 64, 64), dtype=bool)
    for i in range(6):
        y, x = rng.integers(0, 40, 2)
        masks[i, y : y + 20, x : x + 20] = True
    maps = rng.random(masks.shape)
    assert aupro(masks, maps, fpr_limit=1.0) == pytest.approx(0.5, abs=0.03)
    assert aupro(masks, maps, fpr_limit=0.3) == pytest.approx(0.15, abs=0.02)


def test_binned_version_converges_to_exact():
    rng = np.random.default_rng(9)
    masks = np.zeros((4, 32, 32), dtype=bool)
    masks[1, 5:15, 5:15] = True
    masks[3, 20:30, 2:4] = True
    maps = rng.random(masks.shape) + 0.5 * masks
    exact = aupro(masks, maps)
    assert aupro(masks, maps, num_thresholds=20000) == pytest.approx(exact, abs=2e-3)
    assert aupro(masks, maps, num_thresholds=5) != pytest.approx(exact, abs=1e-3)


def test_no_defect_is_nan_and_bad_limit_raises():
    assert np.isnan(aupro(np.zeros((2, 4, 4)), np.ones((2, 4, 4))))
    with pytest.raises(ValueError):
        aupro(np.ones((1, 4, 4)), np.ones((1, 4, 4)), fpr_limit=0.0)
