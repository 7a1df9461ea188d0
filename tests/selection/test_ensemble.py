"""The ensemble detector: members from different latent spaces fused on standardised scores, saved
without pickle, loaded back to the same scores."""

import numpy as np
import pytest
import torch

from latentad import create, io, load
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
    np.testing.assert_allclose(pred.image_scores - float(det.offset), z, rtol=1e-5, atol=1e-9)
    # members scoring >= 0: the shifted sum is each score in units of its normal spread, far from 0
    assert min(p.min() for p in parts) >= 0
    ratio = sum(float(w) * p / float(s[1]) for w, p, s in zip(det.weight, parts, det.stats, strict=True))
    np.testing.assert_allclose(pred.image_scores, ratio, rtol=1e-6)
    again = load(det.save(tmp_path / "m"))
    np.testing.assert_allclose(again.predict(split.test).image_scores, pred.image_scores, rtol=1e-6)


@pytest.mark.parametrize("options, message", [
    ({"members": ("padim",), "weights": (1.0,)}, "at least two names"),
    ({"members": ("padim", "nope")}, "unknown member 'nope'"),
    ({"weights": (-1.0, 1.0)}, "weights must be >= 0"),
    ({"top": 3}, "top=3 is out of range"),
])
def test_bad_members_and_weights_are_refused_by_name(options, message):
    with pytest.raises(ConfigError, match=message):
        create("ensemble", **options)


# -- one backbone pass per batch, members at several sizes, members that describe themselves ---------

from latentad.selection.ensemble import Ensemble  # noqa: E402


@pytest.fixture(scope="module")
def fitted_members(split):
    """Members as the auto search leaves them: fitted one by one, three on one backbone at 48 px, one
    on it at 64 px, the self-supervised encoder (two Gaussians on one fine-tuned network)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny workloads (restored below)
    members = {"gaussian": create("gaussian", image_size=48), "padim": create("padim", image_size=48),
               "patchcore_whiten": create("patchcore", image_size=48, whiten=True, embed_dim=0),
               "patchcore_64": create("patchcore", image_size=64),
               "ssl_gaussian": create("ssl_gaussian", image_size=48, objective="contrastive", epochs=1, augment_to=8)}
    fitted = {n: d.fit(split.train) for n, d in members.items()}
    torch.set_num_threads(threads)
    return fitted


def search_built(members: dict) -> Ensemble:
    stats = [[0.5 * k, 1.0 + k, 0.1 * k, 2.0] for k in range(len(members))]
    return Ensemble.of_fitted(list(members), list(members.values()), stats, 48, seed=0)



def test_members_on_one_backbone_share_one_pass_with_the_same_scores(fitted_members, monkeypatch, backbone_passes):
    ens = search_built(fitted_members)
    assert ens.config.image_size == 64  # the largest member's size
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    calls = backbone_passes
    with torch.inference_mode():
        shared = ens.score_batch(x)
        n_shared = len(calls)
        alone = ens.score_batch(x, share=False)
        n_alone = len(calls) - n_shared
        monkeypatch.setenv("LATENTAD_SHARED_PASS", "0")
        by_env = ens.score_batch(x)
    # Lite0 at 48 px once, at 64 px once, the fine-tuned encoder once; members alone: 3 + 1 + 1 (ssl's
    # own one pass); LATENTAD_SHARED_PASS=0 also gives ssl's two Gaussians their own passes: 3 + 1 + 2
    assert (n_shared, n_alone, len(calls) - n_shared - n_alone) == (3, 5, 6)
    for a, b, c in zip(shared, alone, by_env, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(b.numpy(), c.numpy())
    assert shared[1].shape == (2, 64, 64)
    # the per-member path by hand: each member on the batch resized to its size, with antialiasing
    from latentad.detectors.pretrained.shared import resize_batch

    small = torch.nn.functional.interpolate(x, size=(48, 48), mode="bilinear", antialias=True, align_corners=False)
    np.testing.assert_allclose(resize_batch(x, (48, 48)).numpy(), small.numpy(), atol=1e-5)
    s0, _ = ens.members[0].score_batch(small)
    np.testing.assert_allclose(s0.double().numpy(), ens.members[0].score_batch(resize_batch(x, (48, 48)))[0].numpy(),
                               rtol=1e-4)


def test_a_saved_ensemble_rebuilds_its_own_members_not_the_portfolio(fitted_members, split, tmp_path, monkeypatch):
    import json

    from latentad.selection import portfolio

    ens = search_built({k: fitted_members[k] for k in ("padim", "patchcore_whiten", "patchcore_64")})
    path = ens.save(tmp_path / "e")
    specs = json.loads((path / "detector.json").read_text())["config"]["specs"]
    assert [(s["name"], s["method"], s["config"]["image_size"]) for s in specs] == [
        ("padim", "padim", 48), ("patchcore_whiten", "patchcore", 48), ("patchcore_64", "patchcore", 64)]
    assert specs[1]["config"]["whiten"] is True
    # a portfolio entry changed since: the saved ensemble does not change with it
    changed = tuple(portfolio.Candidate(c.name, c.method, {"npca": 0.5}) if c.name == "padim" else c
                    for c in portfolio.PORTFOLIO)
    monkeypatch.setattr(portfolio, "PORTFOLIO", changed)
    again = load(path)
    assert again.members[0].config.npca == 0.0 and again.members[1].config.whiten
    np.testing.assert_allclose(again.predict(split.test).image_scores, ens.predict(split.test).image_scores,
                               rtol=1e-6)


def test_an_old_run_with_member_names_only_loads_or_is_refused_by_name(split, tmp_path):
    import json

    det = create("ensemble", image_size=48, members=("gaussian", "padim")).fit(split.train)
    path = det.save(tmp_path / "old")
    meta = json.loads((path / "detector.json").read_text())
    meta["config"].pop("specs")  # as saved before members described themselves
    (path / "detector.json").write_text(json.dumps(meta))
    tensors = io.read_tensors(path / "model.safetensors")
    io.write_tensors(path / "model.safetensors", {k: v for k, v in tensors.items() if k != "offset"})
    old = load(path)  # saved before the fused score was shifted: its calibrated thresholds keep their scale
    assert float(old.offset) == 0.0
    np.testing.assert_allclose(old.predict(split.test).image_scores,
                               det.predict(split.test).image_scores - float(det.offset), rtol=1e-6, atol=1e-9)
    meta["config"]["members"] = ["gaussian", "retired_candidate"]
    (path / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="unknown member 'retired_candidate'"):
        load(path)


def test_top_fusion_averages_each_images_highest_standardised_scores(fitted_members, split, tmp_path):
    ens = search_built(fitted_members)
    z = torch.tensor([[3.0, -1.0, 0.5, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0, 10.0]], dtype=torch.float64)
    assert torch.allclose(ens.fuse_scores(z), z.mean(1))  # top=0: the equal weights' mean
    top = Ensemble.of_fitted(list(fitted_members), list(fitted_members.values()), ens.stats.tolist(), 48, top=2)
    assert torch.allclose(top.fuse_scores(z), torch.tensor([2.5, 5.0], dtype=torch.float64))
    x = split.test.with_size(48, 3).load_all().images
    with torch.inference_mode():
        parts = [(s.double() - float(m[0])) / float(m[1]) for (s, _), m in
                 zip(top.shared.score(top.member_inputs(x), False), top.stats, strict=True)]
        expect = torch.stack(parts, 1).topk(2, dim=1).values.mean(1)
        assert torch.allclose(top.score_batch(x)[0], expect + top.offset)
    top.save(tmp_path / "m")
    assert load(tmp_path / "m").config.top == 2
