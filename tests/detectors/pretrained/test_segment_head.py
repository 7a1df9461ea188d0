"""PaDiM's synthetic-defect segmentation head: it learns, it sees cross-fitted distances, it saves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import latentad.detectors.pretrained.padim as padim_module
from latentad import registry
from latentad.data.defects import defect_batch
from latentad.detectors.pretrained.padim import PaDiM
from latentad.detectors.pretrained.segment_head import train_head
from latentad.errors import ConfigError

OPTS = {"levels": ("layer1", "layer2"), "image_size": 32, "feature_stride": 8}


def test_defect_batch_masks_cover_the_changed_pixels():
    x = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    out, masks, kinds = defect_batch(x, np.random.default_rng(0), ("cutpaste", "band"))
    assert out.shape == x.shape and masks.shape == (3, 40, 40) and set(kinds) <= {"cutpaste", "band"}
    changed = (out - (x * 255).round() / 255).abs().amax(1) > 1e-6
    assert not changed[masks == 0].any() and changed[masks == 1].float().mean() > 0.5


def test_head_learns_a_region_that_only_context_marks():
    """A band whose patches are ordinary values, but unlike the rest of their own image."""
    g = torch.Generator().manual_seed(0)
    n, d = 96, 6
    feats = torch.randn(n, d, 8, 8, generator=g) * 0.1
    level = torch.randn(n, 1, 1, 1, generator=g)  # each image its own level
    feats += level
    masks = torch.zeros(n, 8, 8)
    masks[n // 2:, :3] = 1.0  # second half: a band at another image's level
    feats[n // 2:, :, :3] += torch.where(level[n // 2:] > 0, -1.0, 1.0)
    dist = torch.zeros(n, 8, 8)
    clean = torch.arange(n) < n // 2
    head = train_head(feats.half(), dist, masks, epochs=30, seed=0, clean=clean)
    with torch.no_grad():
        logits = head(feats.half(), dist)
    assert roc_auc_score(masks[n // 2:].ravel(), logits[n // 2:].ravel()) > 0.9


def test_head_trains_on_distances_of_the_other_fold(tiny_net, tiny_split, monkeypatch):
    seen = {}
    real = padim_module.train_head

    def spy(g, dist, masks, epochs, seed, clean):
        seen.update(dist=dist.clone(), clean=clean.clone(), masks=masks.clone())
        return real(g, dist, masks, epochs, seed, clean)

    monkeypatch.setattr(padim_module, "train_head", spy)
    train = tiny_split.train
    det = PaDiM(backbone=tiny_net(), head_epochs=1, head_variants=2, **OPTS).fit(train)
    n = len(train)
    assert len(seen["dist"]) == 3 * n and int(seen["clean"].sum()) == n  # one batch: clean, then 2 variants
    assert seen["masks"][seen["clean"]].sum() == 0 and seen["masks"][~seen["clean"]].sum() > 0
    odd = PaDiM(backbone=tiny_net(), **OPTS).fit(train.subset(range(1, n, 2)))  # image 0's other fold
    even = PaDiM(backbone=tiny_net(), **OPTS).fit(train.subset(range(0, n, 2)))
    x = train.subset([0, 1]).load_all().images
    g = torch.cat(list(odd._grids(x)))
    torch.testing.assert_close(seen["dist"][0], odd.mahalanobis(g)[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(seen["dist"][1], even.mahalanobis(g)[1], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(seen["dist"][0], det.mahalanobis(g)[0])  # not the full Gaussian's


def test_head_changes_the_map_and_survives_save_load(tiny_net, tiny_split, tmp_path):
    plain = PaDiM(backbone=tiny_net(), **OPTS).fit(tiny_split.train)
    det = PaDiM(backbone=tiny_net(), head_epochs=2, head_variants=1, **OPTS).fit(tiny_split.train)
    assert plain.head is None and det.head is not None
    assert any(k.startswith("head.") for k in det.state_tensors())
    a, b = plain.predict(tiny_split.test), det.predict(tiny_split.test)
    assert np.isfinite(b.anomaly_maps).all() and not np.allclose(a.anomaly_maps, b.anomaly_maps)
    np.testing.assert_allclose(b.image_scores, b.anomaly_maps.reshape(len(b.image_scores), -1).max(1), rtol=1e-6)
    path = det.save(tmp_path / "padim")
    back = registry.load(path)
    back.set_backbone(tiny_net())
    c = back.predict(tiny_split.test)
    np.testing.assert_allclose(c.anomaly_maps, b.anomaly_maps, rtol=1e-5, atol=1e-5)


def test_head_options_are_checked(tiny_net):
    with pytest.raises(ConfigError, match="head_kinds"):
        PaDiM(backbone=tiny_net(), head_kinds=("cutpaste", "nope"), **OPTS)
    with pytest.raises(ConfigError, match="head_variants"):
        PaDiM(backbone=tiny_net(), head_variants=0, **OPTS)


def test_head_score_gaussian_scores_like_plain_padim(tiny_net, tiny_split):
    plain = PaDiM(backbone=tiny_net(), **OPTS).fit(tiny_split.train)
    det = PaDiM(backbone=tiny_net(), head_epochs=1, head_variants=1, head_score="gaussian", **OPTS)
    det.fit(tiny_split.train)
    a, b = plain.predict(tiny_split.test), det.predict(tiny_split.test)
    np.testing.assert_allclose(b.image_scores, a.image_scores, rtol=1e-5)
    assert not np.allclose(a.anomaly_maps, b.anomaly_maps) and det.map_statistic is None
    assert plain.map_statistic == "max"


def test_head_count_averages_heads_of_different_draws(tiny_net, tiny_split, tmp_path):
    det = PaDiM(backbone=tiny_net(), head_epochs=1, head_variants=1, head_count=2, **OPTS).fit(tiny_split.train)
    assert len(det.head.heads) == 2 and any(k.startswith("head.heads.1.") for k in det.state_tensors())
    x = tiny_split.test.load_all().images
    g = torch.cat(list(det._grids(x)))
    dist = det.mahalanobis(g)
    with torch.no_grad():
        each = [h(g, dist) for h in det.head.heads]
        np.testing.assert_allclose(det.head(g, dist).numpy(), ((each[0] + each[1]) / 2).numpy(), rtol=1e-5)
    assert not torch.allclose(each[0], each[1])
    back = registry.load(det.save(tmp_path / "padim"))
    back.set_backbone(tiny_net())
    np.testing.assert_allclose(back.predict(x).anomaly_maps, det.predict(x).anomaly_maps, rtol=1e-5, atol=1e-5)


def test_head_settings_without_a_head_are_refused(tiny_net, tiny_split):
    with pytest.raises(ConfigError, match="head_weight is a setting of the segmentation head"):
        PaDiM(backbone=tiny_net(), head_weight=2.0, **OPTS)
    with pytest.raises(ConfigError, match="at least 4 training images"):
        PaDiM(backbone=tiny_net(), head_epochs=1, **OPTS).fit(tiny_split.train.subset([0, 1, 2]))


def test_head_gate_weighs_the_heads_map_by_the_image_score(tiny_net, tiny_split, tmp_path):
    det = PaDiM(backbone=tiny_net(), head_epochs=1, head_variants=1, head_score="gaussian", head_gate=1.0, **OPTS)
    det.fit(tiny_split.train)
    mean, std = det.head.score_stats
    assert torch.isfinite(mean) and std > 0  # the clean training images' cross-fitted scores
    x = tiny_split.test.load_all().images
    g = torch.cat(list(det._grids(x)))
    dist = det.mahalanobis(g)
    with torch.no_grad():
        logits = det.head(g, dist)
    scores = det.smooth_maps(dist, det.config.sigma).amax((1, 2))
    gate = det.head.gate(scores, 1.0)
    z = (scores - mean) / std  # Phi(z - 1): a normal-looking image keeps little of the head's map
    torch.testing.assert_close(gate, torch.distributions.Normal(0.0, 1.0).cdf(z - 1.0), rtol=1e-5, atol=1e-6)
    s = det.head.map_stats
    want = det.smooth_maps((dist - s[0]) / s[1] + gate[:, None, None] * (logits - s[2]) / s[3], det.config.sigma)
    pred = det.predict(x)
    np.testing.assert_allclose(pred.anomaly_maps, want.numpy(), rtol=1e-4, atol=1e-4)
    ungated = PaDiM(backbone=tiny_net(), head_epochs=1, head_variants=1, head_score="gaussian", **OPTS)
    ungated.fit(tiny_split.train)  # same seed, same heads: only the gate differs
    np.testing.assert_allclose(ungated.predict(x).image_scores, pred.image_scores, rtol=1e-5)
    assert not np.allclose(ungated.predict(x).anomaly_maps, pred.anomaly_maps)
    back = registry.load(det.save(tmp_path / "padim"))
    back.set_backbone(tiny_net())
    np.testing.assert_allclose(back.predict(x).anomaly_maps, pred.anomaly_maps, rtol=1e-5, atol=1e-5)


def test_head_gate_is_a_head_setting(tiny_net):
    with pytest.raises(ConfigError, match="head_gate is a setting of the segmentation head"):
        PaDiM(backbone=tiny_net(), head_gate=1.0, **OPTS)
