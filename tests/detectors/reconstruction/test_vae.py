"""VAE L2 / VAE KL: tiny fit/predict, the maps are what they claim, save/load, determinism."""

import numpy as np
import pytest
import torch

from latentad import registry
from latentad.data.base import ImageSet, array_record
from latentad.detectors.reconstruction.losses import gaussian_kl
from latentad.detectors.reconstruction.vae import SpatialVAE
from latentad.registry import create

TINY = dict(image_size=32, width=8, n_down=2, n_res=1, latent_ch=4, epochs=2, batch_size=4, augment_to=8)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    recs = [array_record(f"i{i}", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), 0, "good")
            for i in range(6)]
    return ImageSet(recs, 32, 3, False, "tiny")


@pytest.fixture(scope="module")
def fitted(images):
    torch.set_num_threads(1)
    return {m: create(m, **TINY).fit(images) for m in ("vae_l2", "vae_kl")}


def test_model_samples_only_in_training():
    m = SpatialVAE(3, 8, 2, 1, 4)
    x = torch.rand(2, 3, 16, 16)
    m.eval()
    a, b = m(x), m(x)
    assert torch.equal(a["x_hat"], b["x_hat"]) and torch.equal(a["z"], a["mu"])
    m.train()
    assert not torch.equal(m(x)["z"], m(x)["z"])


def test_maps_are_residual_and_upsampled_kl(fitted, images):
    x = images.load_all().images
    l2, kl = fitted["vae_l2"], fitted["vae_kl"]
    with torch.inference_mode():
        out = l2.model(x, sample=False)
        want = ((x - out["x_hat"]) ** 2).mean(1)
    pred = l2.predict(images)
    assert pred.anomaly_maps.shape == (6, 32, 32)
    assert np.allclose(pred.anomaly_maps, want.numpy(), atol=1e-6)
    assert np.allclose(pred.image_scores, want.flatten(1).mean(1).numpy(), rtol=1e-5)
    lat = kl.embed(images)
    assert lat["mu"].shape == (6, 4, 8, 8) and lat["kl"].shape == (6, 8, 8)
    assert torch.allclose(lat["kl"], gaussian_kl(lat["mu"], lat["logvar"]).sum(1))
    kmap = kl.predict(images).anomaly_maps
    assert kmap.shape == (6, 32, 32) and np.all(kmap >= 0)
    up = torch.nn.functional.interpolate(lat["kl"][:, None], size=(32, 32), mode="bilinear")[:, 0]
    assert np.allclose(kmap, up.numpy(), atol=1e-6)
    assert {"loss", "rec", "kl"} <= set(kl.history[0])


def test_save_load_and_seed(fitted, images, tmp_path):
    det = fitted["vae_kl"]
    det.save(tmp_path / "v")
    again = registry.load(tmp_path / "v")
    assert np.array_equal(det.predict(images).image_scores, again.predict(images).image_scores)
    refit = create("vae_kl", **TINY).fit(images)
    assert np.array_equal(refit.predict(images).anomaly_maps, det.predict(images).anomaly_maps)


def test_kl_map_is_the_closed_form_kl_per_position(fitted, images):
    """The inverted bottle map (RESULTS.md) is not a sign or formula bug: the map is KL(q || N(0, I)),
    non-negative, summed over latent channels, as torch.distributions computes it."""
    lat = fitted["vae_kl"].embed(images)
    q = torch.distributions.Normal(lat["mu"], (0.5 * lat["logvar"]).exp())
    reference = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1)
    assert torch.allclose(lat["kl"], reference, atol=1e-5) and (lat["kl"] >= 0).all()
