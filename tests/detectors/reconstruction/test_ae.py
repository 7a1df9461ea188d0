"""Conv auto-encoders (ae_l2, ae_ssim): fit / predict / embed / save / load on tiny synthetic data."""

import numpy as np
import pytest

from latentad import create, load
from latentad.data.synthetic import make_synthetic

TINY = {"image_size": 32, "epochs": 2, "augment_to": 16, "batch_size": 8, "base_width": 8, "latent_dim": 8}


@pytest.fixture(scope="module")
def split():
    return make_synthetic(n_train=8, n_test_good=2, n_test_defect=2, size=32, seed=0)


@pytest.mark.parametrize("method", ["ae_l2", "ae_ssim"])
def test_fit_predict_save_load_gives_identical_scores(method, split, tmp_path):
    det = create(method, **TINY).fit(split.train)
    pred = det.predict(split.test)
    assert pred.image_scores.shape == (len(split.test),)
    assert pred.anomaly_maps.shape == (len(split.test), 32, 32)
    assert np.all(pred.anomaly_maps >= 0)
    det.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["detector.json", "model.safetensors"]
    again = load(tmp_path / "m").predict(split.test)
    np.testing.assert_array_equal(pred.image_scores, again.image_scores)
    np.testing.assert_array_equal(pred.anomaly_maps, again.anomaly_maps)
    assert det.embed(split.test)["z"].shape == (len(split.test), 8)


def test_same_seed_same_scores_and_other_seed_differs(split):
    a = create("ae_ssim", **TINY).fit(split.train).predict(split.test).image_scores
    b = create("ae_ssim", **TINY).fit(split.train).predict(split.test).image_scores
    c = create("ae_ssim", seed=1, **TINY).fit(split.train).predict(split.test).image_scores
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("score", ["mean", "max"])
def test_the_image_score_is_the_configured_statistic_of_the_map(split, score):
    det = create("ae_l2", score=score, **TINY).fit(split.train)
    pred = det.predict(split.test)
    flat = pred.anomaly_maps.reshape(len(split.test), -1)
    expected = flat.max(1) if score == "max" else flat.mean(1)
    np.testing.assert_allclose(pred.image_scores, expected, rtol=1e-6)
    other = flat.mean(1) if score == "max" else flat.max(1)
    assert not np.allclose(pred.image_scores, other, rtol=1e-3)  # an ignored `score` cannot pass


def test_clamp_output_is_linear_in_training_and_clipped_at_inference():
    import torch

    from latentad.detectors.reconstruction.ae import BergmannAE

    model = BergmannAE(1, 32, latent_dim=4, base=4, n_down=3, output="clamp")
    with torch.no_grad():
        model.decoder[-2].bias.fill_(5.0)  # push every output above 1
        x = torch.rand(2, 1, 32, 32)
        assert model.train()(x).max() > 1.0
        out = model.eval()(x)
    assert out.min() >= 0.0 and out.max() == 1.0


def test_clamp_output_round_trips_and_bad_output_is_refused(split, tmp_path):
    from latentad.errors import ConfigError

    det = create("ae_l2", output="clamp", **TINY).fit(split.train)
    det.save(tmp_path / "m")
    np.testing.assert_array_equal(load(tmp_path / "m").predict(split.test).image_scores,
                                  det.predict(split.test).image_scores)
    with pytest.raises(ConfigError, match="output="):
        create("ae_l2", output="tanh", **TINY)
