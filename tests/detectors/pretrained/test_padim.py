"""PaDiM: streaming Gaussian statistics, Mahalanobis against scipy, channel subset, Ledoit-Wolf."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import mahalanobis
from sklearn.covariance import LedoitWolf

from latentad import registry
from latentad.detectors.gaussians import GaussianAccumulator, precision_of
from latentad.detectors.pretrained.padim import PaDiM
from latentad.errors import ConfigError


def _samples(n=41, p=3, d=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p, d)) * rng.uniform(0.3, 3.0, size=(1, p, d)) + 100.0  # large offset
    x[:, :, 1] += 0.7 * x[:, :, 0]
    return x


def test_streaming_moments_match_numpy_and_sklearn():
    x = _samples()
    acc = GaussianAccumulator(fourth_moments=True)
    for s in range(0, len(x), 8):  # uneven batches
        acc.update(torch.from_numpy(x[s : s + 8]))
    mean, cov = acc.mean_cov()
    _, lw = acc.ledoit_wolf()
    for p in range(x.shape[1]):
        np.testing.assert_allclose(mean[p].numpy(), x[:, p].mean(0), rtol=1e-12)
        np.testing.assert_allclose(cov[p].numpy(), np.cov(x[:, p].T), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(lw[p].numpy(), LedoitWolf().fit(x[:, p]).covariance_, rtol=1e-9, atol=1e-9)


def test_mahalanobis_matches_scipy(tiny_net, tiny_split):
    det = PaDiM(backbone=tiny_net(), levels=("layer1", "layer2"), image_size=32, feature_stride=8)
    det.fit(tiny_split.train)
    x = tiny_split.test.load_all().images
    g = torch.cat(list(det._grids(x)))  # (B, d, 4, 4)
    got = det.mahalanobis(g).numpy()
    b, d, h, w = g.shape
    flat = g.flatten(2).numpy()
    for i in range(b):
        for pos in (0, 5, h * w - 1):
            vi = det.precision[pos].double().numpy()
            ref = mahalanobis(flat[i, :, pos], det.mean[pos].double().numpy(), vi)
            assert got[i].reshape(-1)[pos] == pytest.approx(ref, rel=1e-4)
    # and the precision is the inverse of the regularised covariance of the training patches
    train = torch.cat(list(det._grids(tiny_split.train))).flatten(2).double().numpy()
    cov = np.cov(train[:, :, 3].T) + 0.01 * np.eye(d)
    np.testing.assert_allclose(det.precision[3].double().numpy(), np.linalg.inv(cov), rtol=2e-3, atol=1e-5)


def test_channel_subset_is_seeded_and_sized(tiny_net, tiny_split):
    opts = {"levels": ("layer1", "layer2"), "image_size": 32, "feature_stride": 8, "n_features": 7}
    a = PaDiM(backbone=tiny_net(), seed=0, **opts).fit(tiny_split.train)
    b = PaDiM(backbone=tiny_net(), seed=0, **opts).fit(tiny_split.train)
    c = PaDiM(backbone=tiny_net(), seed=1, **opts).fit(tiny_split.train)
    assert a.channels.tolist() == b.channels.tolist() and len(a.channels) == 7
    assert a.channels.tolist() != c.channels.tolist()
    assert a.precision.shape == (16, 7, 7) and a.mean.shape == (16, 7)


def test_ledoit_wolf_option_and_bad_option(tiny_net, tiny_split):
    opts = {"levels": ("layer1", "layer2"), "image_size": 32, "feature_stride": 8}
    det = PaDiM(backbone=tiny_net(), covariance="ledoit_wolf", **opts).fit(tiny_split.train)
    assert np.isfinite(det.predict(tiny_split.test).image_scores).all()
    with pytest.raises(ConfigError, match="covariance"):
        PaDiM(backbone=tiny_net(), covariance="oas", **opts).fit(tiny_split.train)


def test_image_score_is_the_map_maximum(tiny_net, tiny_split):
    det = PaDiM(backbone=tiny_net(), levels=("layer1",), image_size=32, feature_stride=4).fit(tiny_split.train)
    pred = det.predict(tiny_split.test)
    np.testing.assert_allclose(pred.image_scores, pred.anomaly_maps.reshape(len(pred.image_scores), -1).max(1))


def test_shared_covariances_match_numpy():
    x = _samples(n=30, p=3, d=4)
    acc = GaussianAccumulator()
    for s in range(0, len(x), 7):
        acc.update(torch.from_numpy(x[s : s + 7]))
    mean, within = acc.shared("covariance")
    centred = x - x.mean(0, keepdims=True)  # each position about its own mean
    ref = np.einsum("npi,npj->ij", centred, centred) / (3 * (30 - 1))
    np.testing.assert_allclose(mean.numpy(), x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(within[0].numpy(), ref, rtol=1e-9)
    mu, total = acc.shared("all")
    flat = x.reshape(-1, 4)
    np.testing.assert_allclose(mu[0].numpy(), flat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(total[0].numpy(), np.cov(flat.T), rtol=1e-9)


def test_npca_precision_keeps_only_the_low_variance_components():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    vals = np.array([100.0, 10.0, 1.0, 0.1])  # the first explains 90 % of the variance
    cov = torch.from_numpy((q * vals) @ q.T)[None]
    full = precision_of(cov).numpy()[0]
    np.testing.assert_allclose(full, np.linalg.inv(cov[0].numpy()), rtol=1e-8, atol=1e-10)
    low = precision_of(cov, npca=0.9).numpy()[0]  # drops the first component only
    ref = (q[:, 1:] / vals[1:]) @ q[:, 1:].T
    np.testing.assert_allclose(low, ref, rtol=1e-8, atol=1e-10)
    assert abs(q[:, 0] @ low @ q[:, 0]) < 1e-8


def test_share_center_npca_options_fit_and_score(tiny_net, tiny_split):
    opts = {"levels": ("layer1", "layer2"), "image_size": 32, "feature_stride": 8}
    for extra, shape in (({"share": "covariance"}, (16, None)), ({"share": "all", "npca": 0.5}, (1, None)),
                         ({"center": "image"}, (16, None)), ({"center": "median"}, (16, None))):
        det = PaDiM(backbone=tiny_net(), **opts, **extra).fit(tiny_split.train)
        assert det.mean.shape[0] == shape[0]
        assert det.precision.shape[0] == (16 if extra.get("share", "none") == "none" else 1)
        pred = det.predict(tiny_split.test)
        assert np.isfinite(pred.image_scores).all() and pred.anomaly_maps.shape[1:] == (32, 32)
    with pytest.raises(ConfigError, match="ledoit_wolf"):
        PaDiM(backbone=tiny_net(), covariance="ledoit_wolf", share="all", **opts)
    with pytest.raises(ConfigError, match="npca"):
        PaDiM(backbone=tiny_net(), npca=1.5, **opts)


def test_median_centring_ignores_a_minority_region():
    """center="median": a region covering under half of the image leaves the other patches untouched."""
    det = PaDiM.__new__(PaDiM)
    det.config = PaDiM.Config(center="median")
    det.channels = torch.arange(2)
    g = torch.zeros(1, 2, 4, 4)
    g[:, :, :1] = 5.0  # a band over a quarter of the grid
    out = det.select(g)
    assert torch.equal(out[:, :, 1:], torch.zeros(1, 2, 3, 4)) and torch.all(out[:, :, 0] == 5.0)
    det.config = PaDiM.Config(center="image")
    assert torch.all(det.select(g)[:, :, 1:] != 0)  # the mean moves with the band


def test_covariances_too_large_for_memory_are_refused_before_fitting(tiny_net, tiny_split, monkeypatch):
    from latentad.detectors import gaussians

    with pytest.raises(ConfigError, match=r"padim: per-position Gaussians need about 2\.0 GiB .* lower n_features"):
        gaussians.check_covariance_memory("padim", 1024, 256, 4, available=2**30)
    gaussians.check_covariance_memory("padim", 1024, 256, 4, available=2**32)  # fits: no error
    monkeypatch.setattr(gaussians, "available_memory", lambda: 1000)  # 1 kB left
    det = PaDiM(backbone=tiny_net(), levels=("layer1", "layer2"), image_size=32, feature_stride=8)
    with pytest.raises(ConfigError, match="GiB available"):
        det.fit(tiny_split.train)
    assert not det.fitted


def test_score_top_is_the_mean_of_the_maps_highest_pixels(tiny_net, tiny_split):
    x = tiny_split.test.load_all().images
    det = PaDiM(backbone=tiny_net(), levels=("layer1", "layer2"), image_size=32, score_top=0.1).fit(tiny_split.train)
    pred = det.predict(x)
    flat = torch.from_numpy(pred.anomaly_maps).flatten(1)
    want = flat.topk(103, dim=1).values.mean(1)  # ceil(0.1 * 32 * 32) pixels
    np.testing.assert_allclose(pred.image_scores, want.numpy(), rtol=1e-5)
    assert det.map_statistic == "top:0.1"
    with pytest.raises(ConfigError, match="score_top"):
        PaDiM(backbone=tiny_net(), levels=("layer1",), score_top=1.0)


def test_standardize_position_standardises_by_cross_fitted_distances(tiny_net, tiny_split, tmp_path):

    opts = {"levels": ("layer1", "layer2"), "image_size": 32, "feature_stride": 8}
    train = tiny_split.train
    n = len(train)
    det = PaDiM(backbone=tiny_net(), standardize="position", standardize_folds=2, **opts).fit(train)
    plain = PaDiM(backbone=tiny_net(), **opts).fit(train)
    even = PaDiM(backbone=tiny_net(), **opts).fit(train.subset(range(0, n, 2)))
    odd = PaDiM(backbone=tiny_net(), **opts).fit(train.subset(range(1, n, 2)))
    x = train.load_all().images
    g = torch.cat(list(plain._grids(x)))
    cross = torch.where((torch.arange(n) % 2 == 0)[:, None, None], odd.mahalanobis(g), even.mahalanobis(g))
    torch.testing.assert_close(det.position_stats[0], cross.mean(0), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(det.position_stats[1], cross.std(0), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(cross, plain.mahalanobis(g))  # not the shrunken in-sample distances
    test = tiny_split.test.load_all().images
    gt = torch.cat(list(plain._grids(test)))
    want = plain.smooth_maps((plain.mahalanobis(gt) - cross.mean(0)) / cross.std(0), plain.config.sigma)
    pred = det.predict(test)
    np.testing.assert_allclose(pred.anomaly_maps, want.numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(pred.image_scores, want.flatten(1).amax(1).numpy(), rtol=1e-3, atol=1e-3)
    back = registry.load(det.save(tmp_path / "padim"))
    back.set_backbone(tiny_net())
    np.testing.assert_allclose(back.predict(test).anomaly_maps, pred.anomaly_maps, rtol=1e-5, atol=1e-5)


def test_standardize_position_is_checked(tiny_net, tiny_split):
    with pytest.raises(ConfigError, match="standardize"):
        PaDiM(backbone=tiny_net(), levels=("layer1",), standardize="pixel")
    with pytest.raises(ConfigError, match="standardize_folds is a setting of standardize=position"):
        PaDiM(backbone=tiny_net(), levels=("layer1",), standardize_folds=5)
    with pytest.raises(ConfigError, match="standardize_folds"):
        PaDiM(backbone=tiny_net(), levels=("layer1",), standardize="position", standardize_folds=1)
    with pytest.raises(ConfigError, match="head_gate is not combined with standardize=position"):
        PaDiM(backbone=tiny_net(), levels=("layer1",), standardize="position", head_epochs=1, head_gate=1.0)
    with pytest.raises(ConfigError, match="standardize=position needs at least 4 training images"):
        PaDiM(backbone=tiny_net(), levels=("layer1",), image_size=32, standardize="position").fit(
            tiny_split.train.subset([0, 1, 2]))


def test_minus_gives_the_moments_of_the_rest_and_ten_folds_score_out_of_fold(tiny_net, tiny_split):
    x = torch.from_numpy(_samples(n=30))
    for fourth in (False, True):
        total = GaussianAccumulator(fourth_moments=fourth)
        total.update(x)
        part = GaussianAccumulator(fourth, total.shift)
        part.update(x[::3])
        rest = GaussianAccumulator(fourth_moments=fourth)
        rest.update(x[[i for i in range(30) if i % 3]])
        for a, b in zip(total.minus(part).mean_cov(), rest.mean_cov(), strict=True):
            torch.testing.assert_close(a, b)
        if fourth:
            for a, b in zip(total.minus(part).ledoit_wolf(), rest.ledoit_wolf(), strict=True):
                torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="same shift"):
        total.minus(rest)
    opts = {"levels": ("layer1", "layer2"), "image_size": 32, "feature_stride": 8}
    train = tiny_split.train  # 16 images: at most 8 folds of 2
    det = PaDiM(backbone=tiny_net(), standardize="position", **opts).fit(train)
    x = train.load_all().images
    g = torch.cat(list(det._grids(x)))
    cross = torch.stack([PaDiM(backbone=tiny_net(), **opts).fit(train.subset([j for j in range(16) if j % 8 != i % 8]))
                         .mahalanobis(g[i:i + 1])[0] for i in range(16)])
    torch.testing.assert_close(det.position_stats[0], cross.mean(0), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(det.position_stats[1], cross.std(0), rtol=1e-4, atol=1e-4)


def test_standardize_with_the_heads_fuses_the_standardised_map(tiny_net, tiny_split):
    opts = {"levels": ("layer1", "layer2"), "image_size": 32, "feature_stride": 8, "head_epochs": 1,
            "head_variants": 1, "head_score": "gaussian"}
    det = PaDiM(backbone=tiny_net(), standardize="position", **opts).fit(tiny_split.train)
    heads_only = PaDiM(backbone=tiny_net(), **opts).fit(tiny_split.train)  # same seed: the same heads
    x = tiny_split.test.load_all().images
    g = torch.cat(list(det._grids(x)))
    raw = det.mahalanobis(g)
    z = (raw - det.position_stats[0]) / det.position_stats[1]
    with torch.no_grad():
        logits = det.head(g, raw)  # the heads read raw distances, as they were trained
        torch.testing.assert_close(logits, heads_only.head(g, raw))
    s = det.head.map_stats
    want = det.smooth_maps(z + (logits - s[2]) / s[3], det.config.sigma)
    pred = det.predict(x)
    np.testing.assert_allclose(pred.anomaly_maps, want.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pred.image_scores, det.smooth_maps(z, det.config.sigma).flatten(1).amax(1).numpy(),
                               rtol=1e-4, atol=1e-4)  # head_score=gaussian: the standardised map's maximum
