"""AUPIMO: exact values on constructed maps, a brute-force reference, grid mode, errors."""

import math
import warnings

import numpy as np
import pytest
import torch

from latentad.metrics import aupimo

torch.set_num_threads(1)


def _dataset(n_normal=2, n_anomalous=2, h=256, w=256, seed=0):
    """Random maps in [0, 1); anomalous images have a 10x20 defect (200 pixels) each.

    2 normal 256x256 images = 131,072 normal pixels, enough to resolve a shared FPR of 1e-5.
    """
    rng = np.random.default_rng(seed)
    maps = rng.random((n_normal + n_anomalous, h, w)).astype(np.float32)
    masks = np.zeros(maps.shape, dtype=bool)
    masks[n_normal:, 10:20, 30:50] = True
    return masks, maps


def test_perfect_map_gives_one():
    masks, maps = _dataset()
    maps[masks] = 2.0
    result = aupimo(masks, maps)
    assert result.mean == 1.0
    np.testing.assert_array_equal(result.image_indices, [2, 3])
    assert np.isnan(result.per_image[:2]).all()
    np.testing.assert_array_equal(result.per_image[2:], [1.0, 1.0])


def test_inverted_map_gives_zero():
    masks, maps = _dataset()
    maps[masks] = -1.0
    assert aupimo(masks, maps).mean == 0.0


def test_constant_tpr_gives_that_constant():
    # a quarter of image 2's defect (and three quarters of image 3's) scores above every normal pixel,
    # the rest below all: TPR is constant over the whole FPR range
    masks, maps = _dataset()
    defect2, defect3 = maps[2][masks[2]], maps[3][masks[3]]
    defect2[:50], defect2[50:] = 2.0, -1.0
    defect3[:150], defect3[150:] = 2.0, -1.0
    maps[2][masks[2]], maps[3][masks[3]] = defect2, defect3
    result = aupimo(masks, maps)
    assert result.per_image[2] == pytest.approx(0.25, abs=1e-12)
    assert result.per_image[3] == pytest.approx(0.75, abs=1e-12)
    assert result.mean == pytest.approx(0.5, abs=1e-12)


def test_step_in_the_log_middle_gives_one_half():
    # 10,000 normal pixels scored 0..9999 (distinct): FPR(t) = #{scores >= t} / 10,000.
    # The defect scores 9899.5: TPR jumps from 0 to 1 when FPR crosses 100/10,000 = 1e-2, the
    # geometric middle of [1e-3, 1e-1], so AUPIMO = 1/2 (a linear FPR axis would give 0.91).
    rng = np.random.default_rng(1)
    maps = np.zeros((3, 50, 100), dtype=np.float32)
    maps[:2] = rng.permutation(10_000).reshape(2, 50, 100)
    masks = np.zeros(maps.shape, dtype=bool)
    masks[2, 5:10, 5:10] = True
    maps[2][masks[2]] = 9899.5
    assert aupimo(masks, maps, fpr_bounds=(1e-3, 1e-1)).mean == pytest.approx(0.5, abs=1e-12)
    # a 300-threshold grid brackets the step between two thresholds ~3.3 apart: close, not exact
    grid = aupimo(masks, maps, fpr_bounds=(1e-3, 1e-1), num_thresholds=300).mean
    assert grid == pytest.approx(0.5, abs=5e-3)


def _brute_force_aupimo(masks, maps, lo, hi):
    """Every distinct score as a threshold; shared FPR as the explicit mean of per-image FPRs."""
    anomalous = masks.reshape(len(masks), -1).any(axis=1)
    points = []
    for t in np.unique(maps)[::-1]:
        above = maps >= t
        fpr = np.mean([above[i].mean() for i in np.flatnonzero(~anomalous)])
        tprs = [above[i][masks[i]].mean() for i in np.flatnonzero(anomalous)]
        if fpr > 0:
            points.append((math.log(fpr), tprs))
    out = []
    for j in range(int(anomalous.sum())):
        area = 0.0
        for (x0, p0), (x1, p1) in zip(points[:-1], points[1:], strict=True):
            a, b = max(x0, math.log(lo)), min(x1, math.log(hi))
            if b > a:
                slope = (p1[j] - p0[j]) / (x1 - x0)
                area += (b - a) * (p0[j] + slope * ((a - x0) + (b - x0)) / 2)
        out.append(area / math.log(hi / lo))
    return np.array(out)


def test_matches_brute_force_with_ties():
    rng = np.random.default_rng(2)
    maps = rng.integers(0, 300, (5, 17, 19)).astype(np.float32)  # 969 normal pixels, many ties
    masks = np.zeros(maps.shape, dtype=bool)
    masks[3, 2:9, 3:8] = True
    masks[4, 10:16, 0:4] = True
    masks[4, 0, 18] = True
    maps[3][masks[3]] += 250  # partial overlap with the top normal scores, ties included
    maps[4][masks[4]] = rng.integers(270, 300, masks[4].sum())
    expected = _brute_force_aupimo(masks, maps, 1e-2, 1e-1)
    result = aupimo(masks, maps, fpr_bounds=(1e-2, 1e-1))
    assert 0.05 < expected.min() and expected.max() < 0.95  # a non-trivial case
    np.testing.assert_allclose(result.per_image[3:], expected, atol=1e-12)
    assert result.mean == pytest.approx(expected.mean(), abs=1e-12)


def test_grid_converges_to_exact():
    masks, maps = _dataset(n_normal=3, n_anomalous=3, h=64, w=64, seed=3)
    maps[masks] = 0.985 + 0.02 * maps[masks]  # defect scores straddle the top normal scores
    exact = aupimo(masks, maps, fpr_bounds=(1e-3, 1e-2))
    fine = aupimo(masks, maps, fpr_bounds=(1e-3, 1e-2), num_thresholds=100_000)
    assert 0.05 < exact.mean < 0.95
    np.testing.assert_allclose(fine.per_image[3:], exact.per_image[3:], atol=2e-3)


def test_torch_input():
    masks, maps = _dataset(h=256, w=256)
    maps[masks] += 1.0
    result = aupimo(torch.from_numpy(masks), torch.from_numpy(maps))
    assert result.mean == 1.0


def test_needs_normal_and_anomalous_images():
    masks, maps = _dataset(h=8, w=8)
    with pytest.raises(ValueError, match="normal images"):
        aupimo(np.ones_like(masks), maps)
    with pytest.raises(ValueError, match="anomalous images"):
        aupimo(np.zeros_like(masks), maps)


def test_too_few_normal_pixels_raises():
    masks, maps = _dataset(h=32, w=32)  # 2048 normal pixels: FPR cannot go below 1/2048 > 1e-4
    with pytest.raises(ValueError, match="too few"):
        aupimo(masks, maps)


def test_unreachable_lower_bound_warns_and_renormalises():
    masks, maps = _dataset(h=128, w=128)  # 32,768 normal pixels: FPR >= 3.05e-5 > 1e-5
    maps[masks] = 2.0
    with pytest.warns(UserWarning, match="cannot go below"):
        result = aupimo(masks, maps)
    assert result.mean == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aupimo(*_dataset())  # 131,072 normal pixels reach 1e-5 without a warning
