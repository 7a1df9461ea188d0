"""Devices and precision: a runtime choice (never saved), clear refusals, CPU bfloat16, and on a CUDA
machine (skipped here when there is none) GPU training whose model scores the same on the CPU."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from latentad import available_methods, create, load
from latentad.cli import app
from latentad.data.synthetic import make_synthetic
from latentad.devices import check_precision, resolve_device
from latentad.errors import ConfigError

CUDA = torch.cuda.is_available()
TINY = {
    "ae_l2": {"image_size": 32, "epochs": 1, "augment_to": 8, "base_width": 4, "latent_dim": 4},
    "vqvae_ssim_am": {"image_size": 32, "n_down": 2, "width": 16, "code_dim": 16, "codebook_size": 32, "epochs": 1,
                      "augment_to": 8},
    "patchcore": {"image_size": 32}, "padim": {"image_size": 32}, "simplenet": {"image_size": 32, "steps": 10},
    "gaussian": {"image_size": 32},
}


@pytest.fixture(scope="module")
def split():
    return make_synthetic(n_train=8, n_test_good=2, n_test_defect=2, size=32, seed=0)


def test_auto_takes_a_gpu_only_when_torch_sees_one():
    assert resolve_device("auto").type == ("cuda" if CUDA else resolve_device("auto").type)
    assert resolve_device("cpu") == torch.device("cpu")
    if not CUDA:
        assert resolve_device("auto").type in ("cpu", "mps")


@pytest.mark.skipif(CUDA, reason="this machine has a CUDA GPU: the refusal cannot be seen")
def test_a_missing_gpu_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="--device cuda: torch sees no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="--precision 16-mixed needs a CUDA GPU"):
        check_precision("16-mixed", torch.device("cpu"))
    res = CliRunner().invoke(app, ["fit", "--method", "padim", "--data", "nowhere", "--out", "r", "--device", "cuda"])
    assert res.exit_code == 2 and "torch sees no CUDA GPU" in res.output


def test_unknown_devices_and_precisions_are_refused():
    with pytest.raises(ConfigError, match="--device tpu"):
        resolve_device("tpu")
    with pytest.raises(ConfigError, match="--precision 8: expected one of 32, 16-mixed, bf16-mixed"):
        check_precision("8", torch.device("cpu"))


@pytest.mark.parametrize("method", ["ae_l2", "patchcore"])
def test_bfloat16_autocast_on_the_cpu_scores_close_to_float32(method, split):
    full = create(method, seed=0, **TINY[method]).fit(split.train)
    half = create(method, device="cpu", precision="bf16-mixed", seed=0, **TINY[method]).fit(split.train)
    a, b = full.predict(split.test).image_scores, half.predict(split.test).image_scores
    assert np.isfinite(b).all() and np.corrcoef(a, b)[0, 1] > 0.9


def test_the_device_is_not_part_of_the_saved_model(split, tmp_path):
    det = create("patchcore", device="cpu", **TINY["patchcore"]).fit(split.train)
    det.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "detector.json").read_text())
    assert "device" not in json.dumps(meta["config"]) and "precision" not in meta["config"]
    again = load(tmp_path / "m", device="cpu")
    assert again.device.type == "cpu"
    np.testing.assert_array_equal(again.predict(split.test).image_scores, det.predict(split.test).image_scores)


@pytest.mark.skipif(not CUDA, reason="no CUDA GPU on this machine")
@pytest.mark.parametrize("method", [m for m in TINY if m in available_methods()])
def test_fitted_on_the_gpu_loads_and_scores_on_the_cpu(method, split, tmp_path):
    det = create(method, device="cuda", seed=0, **TINY[method]).fit(split.train)
    gpu = det.predict(split.test)
    det.save(tmp_path / "m")
    cpu = load(tmp_path / "m").predict(split.test)
    np.testing.assert_allclose(cpu.image_scores, gpu.image_scores, rtol=2e-3, atol=1e-4)
    if gpu.anomaly_maps is not None:
        np.testing.assert_allclose(cpu.anomaly_maps, gpu.anomaly_maps, rtol=2e-3, atol=1e-3)
