"""compute_metrics: keys, plain Python floats, None for missing or unusable pixel-level inputs."""

import numpy as np
import pytest

from latentad.metrics import aupimo, aupro, compute_metrics, f1_max, image_auroc, pixel_auroc

KEYS = {"image_auroc", "pixel_auroc", "aupro", "aupimo", "f1_max"}


def _data(h=256, w=256):
    rng = np.random.default_rng(0)
    maps = rng.random((4, h, w)).astype(np.float32)
    masks = np.zeros(maps.shape, dtype=bool)
    masks[2, 10:30, 10:30] = masks[3, 100:110, 50:90] = True
    maps[masks] += rng.random(int(masks.sum())).astype(np.float32)
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.2, 0.5, 0.4, 0.9])
    return labels, scores, masks, maps


def test_all_metrics_match_the_functions():
    labels, scores, masks, maps = _data()
    result = compute_metrics(labels, scores, masks, maps)
    assert set(result) == KEYS | {"conditions"}
    assert all(type(result[k]) is float for k in KEYS)
    assert result["image_auroc"] == image_auroc(labels, scores) == 0.75
    assert result["f1_max"] == f1_max(labels, scores)[0] == pytest.approx(0.8)
    assert result["pixel_auroc"] == pixel_auroc(masks, maps)
    assert result["aupro"] == aupro(masks, maps)
    assert result["aupimo"] == aupimo(masks, maps).mean
    assert 0.0 < result["aupimo"] < 1.0 and 0.5 < result["pixel_auroc"] < 1.0


def test_pixel_metrics_none_without_masks_or_defects():
    labels, scores, masks, maps = _data(16, 16)
    for kwargs in ({}, {"masks": masks}, {"maps": maps}, {"masks": np.zeros_like(masks), "maps": maps}):
        result = compute_metrics(labels, scores, **kwargs)
        assert set(result) == KEYS | {"conditions"}
        assert result["pixel_auroc"] is None and result["aupro"] is None and result["aupimo"] is None
        assert result["image_auroc"] == 0.75


def test_aupimo_none_with_a_warning_when_normal_pixels_are_too_few():
    labels, scores, masks, maps = _data(16, 16)
    with pytest.warns(UserWarning, match="AUPIMO not computed"):
        result = compute_metrics(labels, scores, masks, maps)
    assert result["aupimo"] is None
    assert isinstance(result["aupro"], float) and isinstance(result["pixel_auroc"], float)
