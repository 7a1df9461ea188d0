"""The ensemble detector: members from different latent spaces fused on standardised scores, saved
without pickle, loaded back to the same scores."""

import numpy as np
import pytest
import torch

from latentad import create, load
from latentad.data.synthetic import make_synthetic
from latentad.errors import ConfigError


@pytest.fixture(scope="module")
def split():
    return make_synthetic(n_train=12, n_test_good=3, n_test_defect=3, size=48)


def test_fusion_standardises_members_on_held_out_normals_and_round_trips(split, tmp_path):
    det = create("ensemble", image_size=48, members=("gaussian", "padim"), weights=(1.0, 3.0)).fit(split.train)
    assert torch.allclose(det.weight, torch.tensor([0.25, 0.75], dtype=torch.float64))
    assert (det.stats[:, 1] > 0).all() and det.stats[0, 3] == 1.0  # gaussian has no map: neutral map stats
    pred = det.predict(split.test)
    assert pred.anomaly_maps is not None and pred.anomaly_maps.shape == (len(split.test), 48, 48)
    parts = [m.predict(split.test).image_scores for m in det.members]
    z = sum(float(w) * (p - float(s[0])) / float(s[1]) for w, p, s in zip(det.weight, parts, det.stats, strict=True))
    np.testing.assert_allclose(pred.image_scores, z, rtol=1e-5)
    again = load(det.save(tmp_path / "m"))
    np.testing.assert_allclose(again.predict(split.test).image_scores, pred.image_scores, rtol=1e-6)


@pytest.mark.parametrize("options, message", [
    ({"members": ("padim",), "weights": (1.0,)}, "at least two names"),
    ({"members": ("padim", "nope")}, "unknown member 'nope'"),
    ({"weights": (-1.0, 1.0)}, "weights must be >= 0"),
])
def test_bad_members_and_weights_are_refused_by_name(options, message):
    with pytest.raises(ConfigError, match=message):
        create("ensemble", **options)
