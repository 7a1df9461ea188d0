"""Every preset of the reconstruction family builds a model that maps an input of its own size to a
map of that size; the MNIST presets never rotate or flip (that changes a digit's identity: 6 / 9)."""

import pytest
import torch

from latentad.registry import create, get_method

METHODS = ["ae_l2", "ae_ssim", "vae_l2", "vae_kl", "vqvae_ssim", "vqvae_ssim_am"]


@pytest.mark.parametrize("method", METHODS)
def test_each_preset_maps_its_input_size_to_a_map_of_that_size(method):
    for preset in get_method(method).presets:
        det = create(method, preset)
        c = det.config
        det.model = det.build_model()
        det.model.eval()
        det.fitted = True
        x = torch.rand(1, c.channels, c.image_size, c.image_size)
        pred = det.predict(x)
        assert pred.anomaly_maps.shape == (1, c.image_size, c.image_size), (method, preset)
        assert pred.image_scores.shape == (1,)


@pytest.mark.parametrize("method", METHODS)
def test_mnist_presets_keep_digits_upright_and_small(method):
    c = create(method, "mnist").config
    assert (c.rotation, c.flips, c.augment_to, c.image_size) == (False, False, None, 32)


@pytest.mark.parametrize("method", METHODS)
def test_cpu_long_presets_train_longer_than_the_default(method):
    assert create(method, "cpu_long").config.epochs > create(method).config.epochs
