"""The Detector protocol for all four pretrained-feature detectors: fit / predict / save / load /
embed, determinism, map sizes, user nn.Module backbones and the built-in offline backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentad import load, registry
from latentad.errors import ConfigError
from latentad.registry import create, get_method

METHODS = ["gaussian", "padim", "patchcore", "simplenet"]


def _fit(name, tiny_net, tiny_split, options, seed=0, net_seed=0):
    det = get_method(name)(backbone=tiny_net(net_seed), seed=seed, **options[name])
    return det.fit(tiny_split.train)


@pytest.mark.parametrize("name", METHODS)
def test_user_module_fit_predict_save_load(name, tiny_net, tiny_split, tiny_options, tmp_path):
    det = _fit(name, tiny_net, tiny_split, tiny_options)
    assert det.config.backbone == "custom:TinyNet"
    pred = det.predict(tiny_split.test)
    n = len(tiny_split.test)
    assert pred.image_scores.shape == (n,) and np.isfinite(pred.image_scores).all()
    if det.localizes:
        assert pred.anomaly_maps.shape == (n, 32, 32)
        assert np.isfinite(pred.anomaly_maps).all()
    else:
        assert pred.anomaly_maps is None

    det.save(tmp_path / "model")
    loaded = registry.load(tmp_path / "model")
    assert type(loaded) is type(det) and loaded.config == det.config
    with pytest.raises(ConfigError, match="set_backbone"):
        loaded.predict(tiny_split.test)
    loaded.set_backbone(tiny_net(123))  # other random weights: the saved ones must be restored
    again = loaded.predict(tiny_split.test)
    np.testing.assert_allclose(again.image_scores, pred.image_scores, rtol=1e-5, atol=1e-6)
    if det.localizes:
        np.testing.assert_allclose(again.anomaly_maps, pred.anomaly_maps, rtol=1e-5, atol=1e-5)
    third = load(tmp_path / "model", backbone=tiny_net(7))
    np.testing.assert_allclose(third.predict(tiny_split.test).image_scores, pred.image_scores, rtol=1e-5)


@pytest.mark.parametrize("name", METHODS)
def test_same_seed_same_scores(name, tiny_net, tiny_split, tiny_options):
    a = _fit(name, tiny_net, tiny_split, tiny_options).predict(tiny_split.test)
    b = _fit(name, tiny_net, tiny_split, tiny_options).predict(tiny_split.test)
    np.testing.assert_array_equal(a.image_scores, b.image_scores)
    if a.anomaly_maps is not None:
        np.testing.assert_array_equal(a.anomaly_maps, b.anomaly_maps)


@pytest.mark.parametrize("name", METHODS)
def test_tensor_input_is_resized_and_embed_gives_levels(name, tiny_net, tiny_split, tiny_options):
    det = _fit(name, tiny_net, tiny_split, tiny_options)
    x = torch.rand(3, 3, 48, 40)
    pred = det.predict(x)
    assert pred.image_scores.shape == (3,)
    if det.localizes:
        assert pred.anomaly_maps.shape == (3, 32, 32)
    lat = det.embed(x)
    for level in tiny_options[name]["levels"]:
        assert level in lat and lat[level].shape[0] == 3
        assert not lat[level].is_inference()


@pytest.mark.parametrize("name", METHODS)
def test_unfitted_and_unknown_level_are_refused(name, tiny_net, tiny_split, tiny_options):
    det = get_method(name)(backbone=tiny_net(), **tiny_options[name])
    with pytest.raises(ConfigError, match="fit"):
        det.predict(tiny_split.test)
    bad = get_method(name)(backbone=tiny_net(), **{**tiny_options[name], "levels": ("layer9",)})
    with pytest.raises(ConfigError, match="unknown level 'layer9'"):
        bad.fit(tiny_split.train)


@pytest.mark.parametrize("name", METHODS)
def test_builtin_offline_backbone_by_registry_name(name, tiny_split, tmp_path):
    """The real EfficientNet-Lite0 weights, at 64 px: create() by name, save, load, same scores."""
    extra = {"steps": 10, "train_batch": 64} if name == "simplenet" else {}
    det = create(name, None, image_size=64, **extra)
    assert det.config.backbone == "efficientnet_lite0"
    det.fit(tiny_split.train)
    pred = det.predict(tiny_split.test)
    if det.localizes:
        assert pred.anomaly_maps.shape == (len(tiny_split.test), 64, 64)
    det.save(tmp_path / "m")
    again = registry.load(tmp_path / "m").predict(tiny_split.test)
    np.testing.assert_allclose(again.image_scores, pred.image_scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", METHODS)
def test_presets_exist_and_build(name):
    cls = get_method(name)
    assert cls.family == "pretrained"
    for preset in ["default", *cls.presets]:
        det = create(name, preset)
        assert det.config.backbone == "efficientnet_lite0"
