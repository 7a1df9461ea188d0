"""VQ-VAE SSIM / SSIM+AM: straight-through gradient, quantiser options, tiny fit/predict, maps,
save/load, determinism, presets."""

import json

import numpy as np
import pytest
import torch

from latentad import registry
from latentad.data.base import ImageSet, array_record
from latentad.detectors.reconstruction.vqvae import VQVAE, VectorQuantizer, VQVAEModel
from latentad.errors import ConfigError
from latentad.maps.fusion import fuse_am_ssim
from latentad.maps.ssim import ssim_anomaly_map
from latentad.registry import create

TINY = dict(image_size=32, n_down=2, width=8, code_dim=4, codebook_size=16, n_res=1, epochs=2, batch_size=4,
            augment_to=8, lr=1e-3)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    recs = []
    for i in range(6):
        base = np.linspace(0, 200, 32)[None, :, None] + rng.normal(0, 20, (32, 32, 3))
        recs.append(array_record(f"img{i}", np.clip(base, 0, 255).astype(np.uint8), 0, "good"))
    return ImageSet(recs, 32, 3, False, "tiny")


@pytest.fixture(scope="module")
def fitted(images):
    torch.set_num_threads(1)
    return create("vqvae_ssim_am", **TINY).fit(images)


def test_straight_through_gradient_equals_grad_wrt_z_q():
    torch.manual_seed(0)
    q = VectorQuantizer(8, 3)
    q.eval()
    z_e = torch.randn(2, 3, 4, 4, requires_grad=True)
    z_q_st, codes, z_q, _ = q(z_e)
    assert torch.allclose(z_q_st.detach(), z_q.detach(), atol=1e-6)  # the forward value is z_q
    z_q_leaf = z_q_st.detach().requires_grad_(True)
    w = torch.randn_like(z_q)
    (w * z_q_leaf**2).sum().backward()
    (w * z_q_st**2).sum().backward()
    assert torch.equal(z_e.grad, z_q_leaf.grad)  # d loss / d z_e == d loss / d z_q, exactly


def test_codebook_and_commitment_terms_reach_the_right_parameters():
    q = VectorQuantizer(8, 3)
    z_e = torch.randn(2, 3, 4, 4, requires_grad=True)
    _, _, _, losses = q(z_e)
    losses["codebook"].backward()
    assert z_e.grad is None and q.codebook.grad is not None  # sg[z_e]: only the codebook moves
    q.codebook.grad = None
    _, _, _, losses = q(z_e)
    losses["commitment"].backward()
    assert z_e.grad is not None and q.codebook.grad is None  # sg[e]: only the encoder moves


def test_dead_code_reset_kmeans_and_ema_options():
    torch.manual_seed(0)
    z_e = torch.randn(4, 3, 6, 6) + 5.0  # far from the uniform(-1/M, 1/M) initial codes
    q = VectorQuantizer(16, 3, dead_code_reset=True, reset_every=1)
    q.train()
    q(z_e)  # step 0: one code takes everything, 15 are dead
    q(z_e)  # step 1: reset re-draws the dead ones from encoder outputs
    assert int((q.codebook.detach().norm(dim=1) > 3).sum()) >= 15
    km = VectorQuantizer(16, 3, kmeans_init=True)
    km.train()
    _, codes, _, _ = km(z_e)
    assert int(codes.unique().numel()) > 8
    ema = VectorQuantizer(16, 3, ema_decay=0.5, kmeans_init=True)
    assert not ema.codebook.requires_grad
    ema.train()
    before = ema.codebook.detach().clone()
    ema(z_e)
    ema(z_e + 1.0)
    assert not torch.equal(before, ema.codebook.detach())
    usage = ema.usage()
    assert usage["codes_used"] > 1 and usage["perplexity"] > 1 and 0 <= usage["dead_share"] < 1


def test_model_shapes_with_and_without_code_projection():
    for code_dim in (8, 5):
        m = VQVAEModel(3, 8, 2, 1, 16, code_dim)
        out = m(torch.rand(2, 3, 32, 32))
        assert out["logits"].shape == (2, 3, 32, 32)
        assert out["z_e"].shape == (2, code_dim, 8, 8) and out["codes"].shape == (2, 8, 8)


def test_tiny_fit_predict_embed(fitted, images):
    pred = fitted.predict(images)
    assert pred.anomaly_maps.shape == (6, 32, 32)
    assert np.all(np.isfinite(pred.anomaly_maps)) and np.all(pred.anomaly_maps >= 0)
    assert np.allclose(pred.image_scores, pred.anomaly_maps.reshape(6, -1).mean(1), rtol=1e-5)
    lat = fitted.embed(images)
    assert set(lat) == {"z_e", "z_q", "codes", "am"}
    assert lat["z_e"].shape == (6, 4, 8, 8) and lat["codes"].dtype == torch.long
    cb = fitted.model.quantizer.codebook.detach()
    want_am = ((lat["z_e"] - cb[lat["codes"]].permute(0, 3, 1, 2)) ** 2).sum(1)
    assert torch.allclose(lat["am"], want_am, atol=1e-5)
    assert torch.allclose(lat["z_q"], cb[lat["codes"]].permute(0, 3, 1, 2))
    hist = fitted.history
    assert len(hist) == 2 and {"loss", "nll", "perplexity", "codes_used", "dead_share"} <= set(hist[0])


def test_am_map_is_ssim_map_times_dilated_am(fitted, images):
    x = images.load_all().images
    out = fitted._forward(x)
    want = fuse_am_ssim(ssim_anomaly_map(x, out["x_hat"], 11), out["am"], fitted.config.am_dilation)
    assert np.allclose(fitted.predict(x).anomaly_maps, want.numpy(), atol=1e-6)
    plain = create("vqvae_ssim", **TINY)
    plain.model.load_state_dict(fitted.model.state_dict())
    plain.fitted = True
    assert np.allclose(plain.predict(x).anomaly_maps, ssim_anomaly_map(x, out["x_hat"]).numpy(), atol=1e-6)


def test_one_training_scored_with_either_map(fitted, images):
    x = images.load_all().images
    ssim_only = fitted.scored_as("vqvae_ssim")
    assert ssim_only.name == "vqvae_ssim" and ssim_only.model is fitted.model
    want = ssim_anomaly_map(x, fitted._forward(x)["x_hat"]).numpy()
    assert np.allclose(ssim_only.predict(x).anomaly_maps, want, atol=1e-6)
    back = ssim_only.scored_as("vqvae_ssim_am")
    assert np.array_equal(back.predict(x).image_scores, fitted.predict(x).image_scores)
    with pytest.raises(ConfigError, match="scored as"):
        fitted.scored_as("vae_l2")


def test_save_load_round_trip_gives_identical_scores(fitted, images, tmp_path):
    fitted.save(tmp_path / "m")
    loaded = registry.load(tmp_path / "m")
    assert loaded.name == "vqvae_ssim_am" and loaded.history == fitted.history
    a, b = fitted.predict(images), loaded.predict(images)
    assert np.array_equal(a.image_scores, b.image_scores)
    assert np.array_equal(a.anomaly_maps, b.anomaly_maps)


def test_same_seed_same_scores_other_seed_other_scores(fitted, images):
    again = create("vqvae_ssim_am", **TINY).fit(images)
    assert np.array_equal(again.predict(images).image_scores, fitted.predict(images).image_scores)
    other = create("vqvae_ssim_am", **{**TINY, "seed": 1}).fit(images)
    assert not np.array_equal(other.predict(images).image_scores, fitted.predict(images).image_scores)


def test_presets_build_and_paper_presets_follow_the_paper():
    for name in VQVAE.presets:
        det = create("vqvae_ssim_am", name)
        assert det.config.image_size % 2**det.config.n_down == 0
    for name in ("paper_mvtec", "paper_ucsd", "paper_cifar"):
        c = create("vqvae_ssim", name).config
        assert (c.width, c.code_dim, c.codebook_size, c.beta) == (256, 256, 512, 0.25)
        assert not (c.kmeans_init or c.dead_code_reset or c.ema_decay)
        assert c.image_size // 2**c.n_down == {"paper_mvtec": 32, "paper_ucsd": 32, "paper_cifar": 8}[name]
    assert create("vqvae_ssim", "paper_ucsd").config.ssim_dilation > 1


def test_bad_options_are_refused():
    with pytest.raises(ConfigError):
        create("vqvae_ssim", score="median")
    with pytest.raises(ConfigError):
        create("vqvae_ssim", image_size=30, n_down=2)
    with pytest.raises(ConfigError):
        create("vqvae_ssim", predict_fast=True)


def test_killed_run_resumes_exactly_with_codebook_options(images, tmp_path):
    opts = {**TINY, "epochs": 3, "kmeans_init": True, "dead_code_reset": True, "reset_every": 1}
    full = create("vqvae_ssim_am", **opts)
    full.set_checkpointing(tmp_path / "full")
    full.fit(images)

    cut = create("vqvae_ssim_am", **opts)
    cut.set_checkpointing(tmp_path / "cut")
    real_end = cut.epoch_end

    def die_in_second_epoch(epoch, entry):
        if epoch == 1:
            raise KeyboardInterrupt  # as if killed: epoch 0's checkpoint exists, epoch 1's does not
        return real_end(epoch, entry)

    cut.epoch_end = die_in_second_epoch
    with pytest.raises(KeyboardInterrupt):
        cut.fit(images)
    assert any("checkpoint" in p.name for p in (tmp_path / "cut").iterdir())
    saved = json.loads((tmp_path / "cut" / "checkpoint.json").read_text())["history"]
    assert len(saved) == 1
    resumed = create("vqvae_ssim_am", **opts)
    resumed.set_checkpointing(tmp_path / "cut", resume=True)
    resumed.fit(images)
    assert len(resumed.history) == 3 and resumed.history[0] == saved[0]  # epoch 0 was not re-run
    assert np.array_equal(resumed.predict(images).anomaly_maps, full.predict(images).anomaly_maps)


def test_code_usage_is_one_definition_for_training_and_inference():
    from latentad.detectors.reconstruction.vqvae import VectorQuantizer, code_usage

    stats = code_usage(torch.tensor([2.0, 2.0, 0.0, 0.0]))
    assert stats == {"perplexity": pytest.approx(2.0), "codes_used": 2, "dead_share": 0.5}
    vq = VectorQuantizer(4, 2)
    vq.epoch_counts.copy_(torch.tensor([2.0, 2.0, 0.0, 0.0]))
    assert vq.usage() == stats and code_usage(vq.epoch_counts)["codes_used"] == 0  # reset after reading


def test_gaussian_am_is_the_mahalanobis_distance_to_the_normal_latents(images, tmp_path):
    det = create("vqvae_ssim_am", am="gaussian", **TINY).fit(images)
    z = det.embed(images)["z_e"].double()  # (N, D, h, w)
    n, d, h, w = z.shape
    assert det.latent_mean.shape == (h * w, d) and det.latent_precision.shape == (h * w, d, d)
    pos = 3
    x = z.flatten(2)[:, :, pos]
    np.testing.assert_allclose(det.latent_mean[pos].double().numpy(), x.mean(0).numpy(), rtol=1e-5, atol=1e-6)
    delta = (x[0] - det.latent_mean[pos].double())
    ref = float(delta @ det.latent_precision[pos].double() @ delta)
    got = det.latent_mahalanobis(z[:1].float())[0].reshape(-1)[pos]
    assert float(got) == pytest.approx(ref, rel=1e-3)
    # the same network with the paper's AM gives other maps; save / load keeps the latent Gaussian
    plain = create("vqvae_ssim_am", **TINY).fit(images)
    assert not np.allclose(plain.predict(images).anomaly_maps, det.predict(images).anomaly_maps)
    det.save(tmp_path / "g")
    loaded = registry.load(tmp_path / "g")
    assert np.array_equal(loaded.predict(images).anomaly_maps, det.predict(images).anomaly_maps)
    with pytest.raises(ConfigError, match="am"):
        create("vqvae_ssim_am", am="knn", **TINY)
    with pytest.raises(ConfigError, match="alignment map"):  # an option vqvae_ssim would ignore
        create("vqvae_ssim", am="gaussian", **TINY)
    assert det.scored_as("vqvae_ssim").config.am == "code"
