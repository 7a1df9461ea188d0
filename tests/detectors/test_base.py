"""The protocol's shared pieces: registry, presets, option checking, Prediction, calibration."""

import numpy as np
import pytest

from latentad.calibration import Calibration
from latentad.detectors.base import Prediction
from latentad.errors import ConfigError
from latentad.registry import METHODS, available_methods, create, get_method


def test_registry_is_explicit_and_lists_only_importable_methods():
    assert {"ae_l2", "ae_ssim"} <= set(available_methods()) <= set(METHODS)
    assert get_method("ae_ssim").name == "ae_ssim"
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        get_method("nope")


def test_presets_and_overrides_and_unknown_options():
    det = create("ae_ssim", "demo", epochs=3)
    assert det.config.epochs == 3 and det.config.augment_to == 512
    with pytest.raises(ConfigError, match="unknown preset 'big'"):
        create("ae_ssim", "big")
    with pytest.raises(ConfigError, match="unknown option"):
        create("ae_ssim", wings=2)


def test_prediction_refuses_non_finite_scores_and_concatenates():
    with pytest.raises(FloatingPointError):
        Prediction(np.array([0.1, np.nan]))
    p = Prediction.concat([Prediction(np.ones(2), np.zeros((2, 4, 4))), Prediction(np.zeros(1), np.ones((1, 4, 4)))])
    assert p.image_scores.tolist() == [1, 1, 0] and p.anomaly_maps.shape == (3, 4, 4)


def test_calibration_threshold_controls_the_false_positive_rate(tmp_path):
    scores = np.arange(100, dtype=float)
    cal = Calibration.from_normal(scores, np.random.default_rng(0).random((100, 8, 8)), 0.05, "test")
    assert (scores > cal.image_threshold).mean() <= 0.05
    assert (scores > cal.image_threshold).sum() == 5
    assert cal.map_low < cal.map_high
    cal.save(tmp_path / "c.json")
    assert Calibration.load(tmp_path / "c.json") == cal
