"""The statistics on data whose answer is known: Gaussian data passes and heavy tails fail the
chi-squared check, Mardia's kurtosis matches k(k+2) on Gaussian data, the low-variance finding is
detected when (and only when) the anomaly lives in low-variance directions."""

import numpy as np

from latentad.analysis import components, gaussianity
from latentad.analysis.collect import Collected, limited
from latentad.analysis.latents import grid_of, image_vectors
from latentad.analysis.normal_model import fit_normal
from latentad.data.open import open_dataset
from latentad.data.synthetic import make_synthetic


def fake(train, test, labels, name="x"):
    return Collected(name=name, method="m", family="pretrained", image_key="v", train=train,
                     heldout=np.zeros((0, train.shape[1])), test=test, labels=labels, defects=["good"] * len(test),
                     paths=[str(i) for i in range(len(test))], scores=np.zeros(len(test)), threshold=0.0,
                     maps=None, masks=None)


def test_chi_squared_check_tells_gaussian_from_heavy_tails(tmp_path):
    rng = np.random.default_rng(0)
    scale = np.linspace(3, 0.2, 8)
    g_train, g_test = rng.normal(size=(800, 8)) * scale, rng.normal(size=(400, 8)) * scale
    t_train, t_test = rng.standard_t(2, size=(800, 8)) * scale, rng.standard_t(2, size=(400, 8)) * scale
    labels = np.zeros(400, int)
    good = gaussianity.answer(fake(g_train, g_test, labels, "g"), tmp_path)
    bad = gaussianity.answer(fake(t_train, t_test, labels, "t"), tmp_path)
    assert good["ks_p"] > 0.01 and bad["ks_p"] < 1e-6
    assert abs(good["mardia"]["kurtosis_b2"] - 80) < 8 and bad["mardia"]["kurtosis_b2"] > 150
    assert good["per_dimension_rejected_share"] <= 0.25 and bad["per_dimension_rejected_share"] == 1.0
    assert (tmp_path / "g_gaussianity.png").is_file()


def test_low_variance_finding_is_detected_both_ways(tmp_path):
    rng = np.random.default_rng(1)
    scale = np.array([5.0, 4, 3, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02])
    train = rng.normal(size=(300, 10)) * scale
    normal = rng.normal(size=(100, 10)) * scale
    labels = np.r_[np.zeros(100, int), np.ones(100, int)]
    low = rng.normal(size=(100, 10)) * scale
    low[:, -1] += 0.2  # a shift of 10 sigma along the lowest-variance direction
    high = rng.normal(size=(100, 10)) * scale
    high[:, 0] += 15  # 3 sigma along the highest
    a_low = components.answer(fake(train, np.r_[normal, low], labels, "low"), tmp_path)
    a_high = components.answer(fake(train, np.r_[normal, high], labels, "high"), tmp_path)
    assert a_low["holds"] is True and a_low["auroc_bottom_k"] > 0.95
    assert a_high["holds"] is False and a_high["auroc_top_k"] > 0.95


def test_normal_model_keeps_only_the_observed_subspace():
    x = np.random.default_rng(2).normal(size=(20, 50))
    m = fit_normal(x)
    assert m.basis.shape == (50, 19) and np.all(m.var > 0)
    assert fit_normal(x, max_dim=5).basis.shape == (50, 5)


def test_latent_views_follow_the_method_names():
    import torch

    lat = {"codes": torch.zeros(2, 4, 4), "z_e": torch.ones(2, 8, 4, 4), "am": torch.zeros(2, 4, 4)}
    assert image_vectors(lat)[0] == "z_e (mean over positions)" and image_vectors(lat)[1].shape == (2, 8)
    assert grid_of(lat)[0] == "z_e"
    gauss = {"stage3": torch.ones(2, 5), "stage4": torch.ones(2, 7)}
    key, v = image_vectors(gauss, ("stage3", "stage4"))
    assert key == "stage3+stage4" and v.shape == (2, 12)
    assert image_vectors({"pooled": torch.ones(3, 4), "positions": torch.ones(3, 2, 2, 2)})[0] == "pooled"


def test_limit_is_seeded_and_stratified(tmp_path):
    make_synthetic(tmp_path / "c", n_train=10, n_test_good=10, n_test_defect=30, size=32)
    test = open_dataset(str(tmp_path / "c")).test
    a, b = limited(test, 8, 0), limited(test, 8, 0)
    assert [r.path for r in a.records] == [r.path for r in b.records]
    assert len(a) == 8 and set(a.labels) == {0, 1} and (a.labels == 0).sum() == 2


def test_umap_view_when_installed(tmp_path):
    import pytest

    from latentad.analysis import projection

    if not projection.umap_available():
        pytest.skip("umap-learn is not installed")
    rng = np.random.default_rng(3)
    train = rng.normal(size=(40, 6))
    test = np.r_[rng.normal(size=(10, 6)), rng.normal(size=(10, 6)) + 6]
    c = fake(train, test, np.r_[np.zeros(10, int), np.ones(10, int)], "u")
    a = projection.answer(c, tmp_path)
    assert a["umap"]["auroc_2d"] > 0.9 and a["pca"]["auroc_2d"] > 0.9
    assert (tmp_path / "u_projection.png").is_file()


def test_positions_finds_a_noisy_position_and_the_standardised_what_if(tmp_path):
    from latentad.analysis import positions

    rng = np.random.default_rng(3)
    n_normal, n_defect = 60, 60
    maps = rng.normal(0, 1, size=(n_normal + n_defect, 8, 8))
    maps[:, 0, 0] *= 10  # one position varies ten times more on every image, normal or not
    maps[n_normal:, 5, 5] += 4  # the defect: a moderate rise at a quiet position
    labels = np.r_[np.zeros(n_normal, int), np.ones(n_defect, int)]
    c = fake(np.zeros((4, 2)), np.zeros((len(maps), 2)), labels, "p")
    c.maps = maps
    out = positions.answer(c, tmp_path)
    assert out["normal_max_in_top_share"] > 0.5  # the noisy position decides most normal maxima
    assert out["spread_ratio"] > 1.0 and out["grid"] == [8, 8]
    assert out["image_auroc_standardised"] > out["image_auroc_map_max"] + 0.1
    assert (tmp_path / "p_positions.png").is_file() and "standardised" in out["summary"]
    c.maps = None
    assert positions.answer(c, tmp_path) is None  # no maps: the question does not apply
