"""Gaussian AD (Rippel et al.): Ledoit-Wolf Mahalanobis against scipy, NPCA selection, chi2 threshold."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import mahalanobis
from scipy.stats import chi2
from sklearn.covariance import LedoitWolf

from latentad.detectors.pretrained.gaussian import GaussianAD, select_components
from latentad.errors import ConfigError

OPTS = {"levels": ("layer2", "layer3"), "image_size": 32}


def test_score_is_sum_of_ledoit_wolf_mahalanobis_distances(tiny_net, tiny_split):
    det = GaussianAD(backbone=tiny_net(), **OPTS).fit(tiny_split.train)
    assert not det.localizes
    train = det.pooled(tiny_split.train)
    test = det.pooled(tiny_split.test)
    expected = np.zeros(len(tiny_split.test))
    for lv in OPTS["levels"]:
        lw = LedoitWolf().fit(train[lv].numpy())
        vi = np.linalg.inv(lw.covariance_)
        expected += [mahalanobis(v, lw.location_, vi) for v in test[lv].numpy()]
    pred = det.predict(tiny_split.test)
    assert pred.anomaly_maps is None
    np.testing.assert_allclose(pred.image_scores, expected, rtol=1e-6)
    assert det.degrees_of_freedom == {"layer2": 12, "layer3": 16}


def test_npca_component_selection_by_hand():
    eig = np.array([50.0, 30.0, 15.0, 4.0, 1.0])  # explained: 0.5, 0.8, 0.95, 0.99, 1.0
    assert select_components(eig).tolist() == [0, 1, 2, 3, 4]
    assert select_components(eig, npca=0.95).tolist() == [3, 4]  # drop the leading 95 %
    assert select_components(eig, npca=0.99).tolist() == [4]
    assert select_components(eig, npca=0.5).tolist() == [1, 2, 3, 4]
    assert select_components(eig, pca=0.8).tolist() == [0, 1]  # keep the leading 80 %
    with pytest.raises(ConfigError):
        select_components(eig, npca=0.5, pca=0.5)
    with pytest.raises(ConfigError):
        select_components(eig, npca=1.0)


def test_npca_keeps_low_variance_components_only(tiny_net, tiny_split):
    full = GaussianAD(backbone=tiny_net(), **OPTS).fit(tiny_split.train)
    npca = GaussianAD(backbone=tiny_net(), npca=0.9, **OPTS).fit(tiny_split.train)
    for lv in OPTS["levels"]:
        assert 1 <= npca.degrees_of_freedom[lv] < full.degrees_of_freedom[lv]
        # the kept directions are the low-variance ones: their whitening scales are the largest
        assert npca.transforms[lv].norm(dim=0).min() >= full.transforms[lv].norm(dim=0).median()
    assert np.isfinite(npca.predict(tiny_split.test).image_scores).all()


def _gaussian_detector(dofs):
    det = GaussianAD(levels=tuple(dofs), seed=3)
    det.means = {lv: torch.zeros(k, dtype=torch.float64) for lv, k in dofs.items()}
    det.transforms = {lv: torch.eye(k, dtype=torch.float64) for lv, k in dofs.items()}
    det.fitted = True
    return det


def test_chi2_threshold_single_level_is_exact_and_monotone():
    det = _gaussian_detector({"a": 6})
    for fpr in (0.2, 0.05, 0.01):
        assert det.chi2_threshold(fpr) == pytest.approx(np.sqrt(chi2.ppf(1 - fpr, 6)))
        assert det.chi2_threshold(fpr, level="a") == det.chi2_threshold(fpr)
    assert det.chi2_threshold(0.01) > det.chi2_threshold(0.05) > det.chi2_threshold(0.2)
    with pytest.raises(ConfigError):
        det.chi2_threshold(0.0)
    with pytest.raises(ConfigError, match="unknown level"):
        det.chi2_threshold(0.1, level="b")


def test_chi2_threshold_controls_fpr_of_summed_gaussian_scores():
    dofs = {"a": 3, "b": 10}
    det = _gaussian_detector(dofs)
    rng = np.random.default_rng(11)
    n = 40_000
    score = sum(np.linalg.norm(rng.normal(size=(n, k)), axis=1) for k in dofs.values())
    for fpr in (0.1, 0.01):
        t = det.chi2_threshold(fpr)
        assert (score > t).mean() == pytest.approx(fpr, rel=0.15)
        assert det.chi2_threshold(fpr) == t  # deterministic
