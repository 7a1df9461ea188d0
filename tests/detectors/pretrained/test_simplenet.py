"""SimpleNet: training reduces the truncated L1 loss, scores are -D(adaptor(f)), seeds matter."""

from __future__ import annotations

import numpy as np
import torch

from latentad.detectors.pretrained.simplenet import Discriminator, SimpleNet

OPTS = {"levels": ("layer1", "layer2"), "image_size": 32, "feature_stride": 4, "train_batch": 128,
        "hidden": 16}


def test_training_lowers_the_truncated_l1_loss(tiny_net, tiny_split):
    det = SimpleNet(backbone=tiny_net(), steps=100, lr_disc=1e-2, lr_adaptor=1e-3, noise_std=1.0, **OPTS)
    h = det.fit(tiny_split.train).loss_history
    assert len(h) == 100
    assert np.mean(h[-10:]) < 0.5 * np.mean(h[:10])


def test_scores_are_negated_discriminator_outputs(tiny_net, tiny_split):
    det = SimpleNet(backbone=tiny_net(), steps=5, sigma=0.0, **OPTS).fit(tiny_split.train)
    x = tiny_split.test.load_all().images
    g = torch.cat(list(det.patch_grids(x)))
    b, d, h, w = g.shape
    with torch.no_grad():
        f = (g.permute(0, 2, 3, 1).reshape(-1, d) - det.feat_mean) / det.feat_std
        expected = -det.discriminator(det.adaptor(f)).view(b, 1, h, w)
    up = torch.nn.functional.interpolate(expected, size=(32, 32), mode="bilinear")[:, 0]
    pred = det.predict(x)
    np.testing.assert_allclose(pred.anomaly_maps, up.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pred.image_scores, up.flatten(1).amax(1).numpy(), rtol=1e-5)


def test_other_seed_other_model(tiny_net, tiny_split):
    a = SimpleNet(backbone=tiny_net(), steps=5, seed=0, **OPTS).fit(tiny_split.train)
    b = SimpleNet(backbone=tiny_net(), steps=5, seed=1, **OPTS).fit(tiny_split.train)
    assert not np.allclose(a.predict(tiny_split.test).image_scores, b.predict(tiny_split.test).image_scores)


def test_discriminator_layout():
    disc = Discriminator(10, 6)
    assert disc(torch.randn(4, 10)).shape == (4,)
    assert disc.tail.bias is None and isinstance(disc.body[1], torch.nn.BatchNorm1d)
