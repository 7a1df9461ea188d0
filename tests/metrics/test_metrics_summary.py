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
    assert set(result) == KEYS | {"conditions", "aupimo_per_image"}
    assert all(type(result[k]) is float for k in KEYS)
    per_image = result["aupimo_per_image"]  # each anomalous image's own AUPIMO, nan for the normal ones
    assert np.isnan(per_image[:2]).all() and np.nanmean(per_image) == pytest.approx(result["aupimo"])
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


def test_conditions_record_the_fpr_ranges_the_resolution_and_the_normal_pixels():
    labels, scores, masks, maps = _data()
    c = compute_metrics(labels, scores, masks, maps)["conditions"]
    assert c["aupro_fpr_limit"] == 0.3 and c["aupimo_fpr_bounds"] == [1e-5, 1e-4]
    assert c["pixel_metrics_size"] == [256, 256] and c["aupimo_normal_pixels"] == 2 * 256 * 256
    assert c["aupimo_narrowed"] is False and c["aupimo_fpr_bounds_used"] == [1e-5, 1e-4]


def test_conditions_say_when_aupimo_had_to_narrow_its_range():
    labels, scores, masks, maps = _data(128, 128)  # 2 x 128 x 128 normal pixels: FPR >= 3e-5 only
    with pytest.warns(UserWarning, match="integrating over"):
        c = compute_metrics(labels, scores, masks, maps)["conditions"]
    assert c["aupimo_narrowed"] is True and c["aupimo_fpr_bounds_used"][0] == pytest.approx(1 / (2 * 128 * 128))


def test_per_defect_pixel_metrics_use_that_defect_and_every_normal_image():
    labels, scores, masks, maps = _data()
    per = compute_metrics(labels, scores, masks, maps, ["good", "good", "crack", "hole"])["per_defect"]
    assert set(per) == {"crack", "hole"}
    keep = [0, 1, 2]
    assert per["crack"]["pixel_auroc"] == pixel_auroc(masks[keep], maps[keep])
    assert per["crack"]["aupro"] == aupro(masks[keep], maps[keep])
    assert per["crack"]["aupimo"] == aupimo(masks, maps).per_image[2]
    assert per["hole"]["n_images"] == 1 and per["hole"]["image_auroc"] == image_auroc([0, 0, 1], scores[[0, 1, 3]])
