"""Deep SVDD: the paper's bias-free nets, a centre fixed before training, both objectives, pretraining,
save / load / resume, latents."""

import numpy as np
import pytest
import torch

from latentad import create, load
from latentad.data.synthetic import make_synthetic
from latentad.detectors.selfsupervised.dsvdd import gcn_l1

TINY = {"image_size": 32, "net": "conv", "rep_dim": 8, "epochs": 3, "batch_size": 8}


@pytest.fixture(scope="module")
def split():
    return make_synthetic(n_train=16, n_test_good=4, n_test_defect=4, size=32, seed=0)


def test_networks_have_no_bias_and_no_affine_batchnorm():
    det = create("dsvdd", "mnist")
    for m in det.model.modules():
        assert getattr(m, "bias", None) is None
        if isinstance(m, torch.nn.BatchNorm2d):
            assert not m.affine
    assert det.model(torch.rand(2, 1, 28, 28)).shape == (2, 32)


def test_gcn_gives_zero_mean_and_unit_mean_absolute_deviation():
    x = gcn_l1(torch.rand(3, 1, 8, 8) * 5 + 2)
    assert torch.allclose(x.mean((1, 2, 3)), torch.zeros(3), atol=1e-6)
    assert torch.allclose(x.abs().mean((1, 2, 3)), torch.ones(3), atol=1e-5)


@pytest.mark.parametrize("objective", ["one-class", "soft-boundary"])
def test_fit_scores_are_distances_to_the_centre(objective, split, tmp_path):
    det = create("dsvdd", objective=objective, warmup_epochs_radius=1, **TINY).fit(split.train)
    c = det.model.center
    assert (c.abs() >= 0.1 - 1e-6).all()  # eps pushed away from 0
    pred = det.predict(split.test)
    lat = det.embed(split.test)
    dist = ((lat["z"] - lat["center"]) ** 2).sum(1).double().numpy()
    radius = float(det.model.radius) ** 2 if objective == "soft-boundary" else 0.0
    np.testing.assert_allclose(pred.image_scores, dist - radius, rtol=1e-5, atol=1e-6)
    assert pred.anomaly_maps is None
    if objective == "soft-boundary":
        assert float(det.model.radius) > 0 and "radius" in det.history[-1]
    det.save(tmp_path / "m")
    np.testing.assert_array_equal(load(tmp_path / "m").predict(split.test).image_scores, pred.image_scores)


def test_pretraining_changes_the_start(split):
    plain = create("dsvdd", **TINY).fit(split.train)
    pre = create("dsvdd", pretrain_epochs=2, **TINY).fit(split.train)
    assert not torch.equal(plain.model.center, pre.model.center) and len(pre.pretrain_history) == 2


def test_resume_gives_the_uninterrupted_result(split, tmp_path):
    full = create("dsvdd", **TINY)
    full.set_checkpointing(tmp_path / "a")
    full.fit(split.train)
    short = create("dsvdd", **{**TINY, "epochs": 3})
    short.set_checkpointing(tmp_path / "b")
    short.fit(split.train)
    again = create("dsvdd", **TINY)
    again.set_checkpointing(tmp_path / "b", resume=True)
    again.fit(split.train)
    np.testing.assert_allclose(again.predict(split.test).image_scores, full.predict(split.test).image_scores,
                               rtol=1e-6)
