"""dinomaly: a decoder trained on cached frozen DINOv2 features, grouped cosine maps, hard mining,
saved and loaded without pickle."""

import pytest
import torch

from latentad import create, load
from latentad.data.synthetic import make_synthetic
from latentad.errors import ConfigError


@pytest.fixture(scope="module")
def fitted():
    split = make_synthetic(n_train=8, n_test_good=2, n_test_defect=2, size=56)
    return split, create("dinomaly", image_size=56, epochs=2, batch_size=4).fit(split.train)


def test_maps_scores_and_a_round_trip(fitted, tmp_path):
    split, det = fitted
    pred = det.predict(split.test)
    assert pred.anomaly_maps.shape == (len(split.test), 56, 56) and (pred.anomaly_maps >= -1e-6).all()
    top = torch.from_numpy(pred.anomaly_maps).flatten(1).topk(31, dim=1).values.mean(1)  # 1 % of 3136 pixels
    assert torch.allclose(top.double(), torch.from_numpy(pred.image_scores), atol=1e-5)
    assert len(det.history) == 2 and all(h["loss"] > 0 for h in det.history)
    again = load(det.save(tmp_path / "m"))
    assert torch.allclose(torch.from_numpy(again.predict(split.test).image_scores),
                          torch.from_numpy(pred.image_scores), atol=1e-6)


def test_hard_mining_scales_the_gradient_of_easy_tokens(fitted):
    _, det = fitted
    feats = torch.randn(2, 8 * 384, 4, 4)
    det.model.train()
    det.model.zero_grad()
    det.loss(det.model, feats)["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in det.model.parameters())
    det.model.eval()


@pytest.mark.parametrize("options, message", [
    ({"layers": (3, 4, 5)}, "must both divide into groups=2"),
    ({"layers": (0, 13)}, "must be DINOv2 blocks 1-12"),
    ({"heads": 5}, "must divide the width 384"),
])
def test_bad_layer_groups_are_refused_by_name(options, message):
    with pytest.raises(ConfigError, match=message):
        create("dinomaly", **options)


def test_embed_gives_the_grids_the_analysis_reads(fitted):
    from latentad.analysis.latents import grid_of, image_vectors

    split, det = fitted
    lat = det.embed(split.test)
    assert lat["patches"].shape == (len(split.test), 384, 4, 4) and lat["bottleneck"].shape == lat["patches"].shape
    assert grid_of(lat)[0] == "patches" and image_vectors(lat)[1].shape == (len(split.test), 384)


def test_an_epoch_draws_at_most_epoch_images(monkeypatch):
    """A fit on several categories (or a large one) costs what an `epoch_images` set does."""
    import latentad.detectors.selfsupervised.dinomaly as mod

    seen, real = [], mod.train_model
    monkeypatch.setattr(mod, "train_model", lambda model, feats, loss, schedule, *a, **k: (
        seen.append((len(feats), schedule.augment_to)), real(model, feats, loss, schedule, *a, **k))[1])
    split = make_synthetic(n_train=10, size=28)
    create("dinomaly", image_size=28, epochs=1, batch_size=4, epoch_images=6).fit(split.train)
    create("dinomaly", image_size=28, epochs=1, batch_size=4, epoch_images=16).fit(split.train)
    assert seen == [(10, 6), (10, None)]  # capped; a smaller set is drawn as it is
