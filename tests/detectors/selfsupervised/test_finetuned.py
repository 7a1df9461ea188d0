"""ssl_gaussian and cutpaste: fine-tuning on normal images, Gaussians on the tuned encoder, latents
before and after, save / load, objectives as presets."""

import numpy as np
import pytest
import torch

from latentad import create, load
from latentad.data.synthetic import make_synthetic
from latentad.detectors.selfsupervised.finetune import nt_xent, sup_con, views, with_defects

TINY = {"image_size": 64, "epochs": 1, "batch_size": 6}


@pytest.fixture(scope="module")
def split():
    return make_synthetic(n_train=12, n_test_good=2, n_test_defect=4, size=64, seed=0)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_losses_reward_the_right_geometry():
    z = torch.nn.functional.normalize(torch.randn(8, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    assert nt_xent(z, z, 0.2) < nt_xent(z, z.roll(1, 0), 0.2)  # matched views beat mismatched ones
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    grouped = torch.nn.functional.normalize(torch.cat([torch.ones(4, 2), -torch.ones(4, 2)]), dim=1)
    assert sup_con(grouped, labels, 0.2) < sup_con(grouped, labels.flip(0).roll(2), 0.2)


def test_synthetic_defect_views_differ_from_their_source():
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    d, kinds = with_defects(x)
    assert d.shape == x.shape and len(kinds) == 3 and not torch.allclose(d, x, atol=1 / 255)


def test_views_without_photometric_jitter_keep_the_same_crops():
    x = torch.linspace(0.2, 0.8, 32).repeat(2, 3, 32, 1)  # a horizontal ramp
    torch.manual_seed(3)
    jittered = views(x)
    torch.manual_seed(3)
    plain = views(x, photometric=False)
    assert not torch.allclose(jittered, plain, atol=1e-3)  # brightness / contrast changed
    for a, b in zip(jittered, plain, strict=True):  # ... by an affine map of the same crop
        coef = np.polyfit(b.flatten().numpy(), a.flatten().numpy(), 1)
        np.testing.assert_allclose(np.polyval(coef, b.flatten().numpy()), a.flatten().numpy(), atol=1e-4)
    const = torch.full((2, 3, 32, 32), 0.5)
    assert torch.allclose(views(const, photometric=False), const)


@pytest.mark.parametrize("method, options", [("ssl_gaussian", {"objective": "contrastive"}),
                                             ("ssl_gaussian", {"objective": "synthetic", "init": "random"}),
                                             ("ssl_gaussian", {"objective": "contrastive", "photometric": False}),
                                             ("cutpaste", {})])
def test_fit_predict_embed_save_load(method, options, split, tmp_path):
    det = create(method, **TINY, **options).fit(split.train)
    assert det.family == "selfsupervised" and len(det.history) == 1
    pred = det.predict(split.test)
    assert pred.image_scores.shape == (6,) and pred.anomaly_maps.shape == (6, 64, 64)
    lat = det.embed(split.test)
    assert set(lat) == {"pooled", "positions", "pooled_before", "positions_before"}
    assert lat["pooled"].shape == lat["pooled_before"].shape
    assert not torch.allclose(lat["pooled"], lat["pooled_before"])  # the training changed the encoder
    det.save(tmp_path / "m")
    again = load(tmp_path / "m").predict(split.test)
    np.testing.assert_allclose(again.image_scores, pred.image_scores, rtol=1e-5)
    np.testing.assert_allclose(again.anomaly_maps, pred.anomaly_maps, rtol=1e-4, atol=1e-5)


def test_objectives_are_presets():
    for objective in ("contrastive", "synthetic", "both"):
        assert create("ssl_gaussian", objective).config.objective == objective
    assert create("cutpaste").config.proj_dim == 3


def test_options_that_do_not_apply_are_refused():
    from latentad.errors import ConfigError

    for method in ("ssl_gaussian", "cutpaste", "dsvdd"):
        with pytest.raises(ConfigError, match="score=.* does not apply"):
            create(method, score="mean" if method != "dsvdd" else "max")


def test_the_synthetic_objective_draws_the_defect_kinds_asked_for(split, monkeypatch):
    import latentad.detectors.selfsupervised.ssl_gaussian as sg
    from latentad.errors import ConfigError

    drawn = []

    def spy(x, kinds=None):
        out, names = with_defects(x, kinds)
        drawn.extend(names)
        return out, names

    monkeypatch.setattr(sg, "with_defects", spy)
    create("ssl_gaussian", "synthetic", **TINY, defects=("band",)).fit(split.train)
    assert drawn and set(drawn) == {"band"}
    drawn.clear()
    create("ssl_gaussian", "synthetic", **TINY).fit(split.train)
    assert drawn and "band" not in drawn  # the default: the three small kinds
    with pytest.raises(ConfigError, match="'smudge' is not one of"):
        create("ssl_gaussian", defects=("smudge",))
    with pytest.raises(ConfigError, match="not contrastive"):
        create("ssl_gaussian", "contrastive", defects=("band",))


def test_a_graft_takes_its_band_from_another_image_of_the_batch():
    torch.manual_seed(0)
    x = torch.stack([torch.full((3, 32, 32), 0.2), torch.full((3, 32, 32), 0.8)])
    out, names = with_defects(x, ("graft",))
    assert names == ["graft", "graft"]
    assert torch.isclose(out[0], torch.tensor(0.8), atol=1e-2).any()  # the band came from the other image
    assert torch.isclose(out[1], torch.tensor(0.2), atol=1e-2).any()
    alone = torch.linspace(0, 1, 32).view(1, 1, 32, 1).expand(1, 3, 32, 32).contiguous()
    single, _ = with_defects(alone, ("graft",))
    assert not torch.allclose(single, alone, atol=1e-2)  # alone: its own image upside down
