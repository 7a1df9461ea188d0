"""Every registered method exports its scoring graph, and onnxruntime (and OpenVINO, when installed)
scores like torch: maps and scores within 1e-4 relative, the same verdicts, the calibration beside."""

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from latentad.cli import app
from latentad.data.synthetic import make_synthetic
from latentad.export.engine import ExportedDetector
from latentad.export.graph import relative_difference
from latentad.registry import METHODS, get_method
from latentad.runs import load_run

runner = CliRunner()
SIZE = 64
VIT = {"dino_knn", "dinomaly"}  # DINOv2 inputs are multiples of its 14-pixel patch


def size_of(method: str) -> int:
    return 56 if method in VIT else SIZE


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "cat"
    make_synthetic(root, n_train=8, n_test_good=2, n_test_defect=2, size=SIZE)
    return root


@pytest.fixture(scope="module")
def images(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    for f in sorted(data.glob("test/*/*.png")):
        (folder / f"{f.parent.name}_{f.name}").write_bytes(f.read_bytes())
    return folder


def fit(method: str, data, out, *options: str):
    args = ["fit", "--method", method, "--data", str(data), "--out", str(out), "-o", f"image_size={size_of(method)}"]
    for o in options:
        args += ["-o", o]
    if "epochs" in {f.name for f in dataclasses.fields(get_method(method).Config)}:
        args += ["--epochs", "1", "-o", "augment_to=8"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return out


def scores(path):
    return {r["path"].split("/")[-1]: r for r in csv.DictReader(open(path))}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_onnxruntime_scores_like_torch(method, data, images, tmp_path, one_thread):
    run = fit(method, data, tmp_path / "run")
    exp = tmp_path / "export"
    res = runner.invoke(app, ["export", "--run", str(run), "--format", "onnx", "--out", str(exp)])
    assert res.exit_code == 0, res.output
    meta = json.loads((exp / "export.json").read_text())
    size = size_of(method)
    assert meta["method"] == method and meta["input"]["shape"][2:] == [size, size]
    assert json.loads((exp / "calibration.json").read_text()) == json.loads((run / "calibration.json").read_text())
    # maps and scores on the same tensors
    _, det, _ = load_run(run)
    x = torch.rand(3, det.config.channels, size, size, generator=torch.Generator().manual_seed(1))
    want, got = det.predict(x), ExportedDetector(exp).predict(x)
    assert relative_difference(want.image_scores, got.image_scores) <= 1e-4
    assert (want.anomaly_maps is None) == (got.anomaly_maps is None) == (not meta["localizes"])
    if want.anomaly_maps is not None:
        assert got.anomaly_maps.shape == (3, size, size)
        assert relative_difference(want.anomaly_maps, got.anomaly_maps) <= 1e-4
    # the CLI end to end: same scores and verdicts from files
    for args, out in ((["--run", str(run)], "pt"), (["--run", str(exp), "--engine", "onnxruntime"], "po")):
        res = runner.invoke(app, ["predict", *args, "--out", str(tmp_path / out), "--overlays", "none", str(images)])
        assert res.exit_code == 0, res.output
    t, o = scores(tmp_path / "pt" / "scores.csv"), scores(tmp_path / "po" / "scores.csv")
    assert set(t) == set(o) and len(t) == 4
    for k in t:
        assert relative_difference([float(t[k]["score"])], [float(o[k]["score"])]) <= 1e-4, k
        assert t[k]["is_anomalous"] == o[k]["is_anomalous"], k


@pytest.mark.parametrize("method, options", [("padim", ("center=median", "npca=0.9", "score_top=0.05")),
                                             ("padim", ("head_epochs=1", "head_variants=1", "head_count=2",
                                                        "head_score=gaussian", "head_gate=1")),
                                             ("padim", ("standardize=position", "npca=0.9", "head_epochs=1",
                                                        "head_variants=1", "head_score=gaussian")),
                                             ("patchcore", ("whiten=true", "embed_dim=0"))])
def test_the_analysis_options_export_too(method, options, data, tmp_path, one_thread):
    run = fit(method, data, tmp_path / "run", *options)
    exp = tmp_path / "export"
    res = runner.invoke(app, ["export", "--run", str(run), "--format", "onnx", "--out", str(exp)])
    assert res.exit_code == 0, res.output
    _, det, _ = load_run(run)
    x = torch.rand(3, det.config.channels, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    want, got = det.predict(x), ExportedDetector(exp).predict(x)
    assert relative_difference(want.image_scores, got.image_scores) <= 1e-4
    assert relative_difference(want.anomaly_maps, got.anomaly_maps) <= 1e-4


@pytest.fixture(scope="module")
def padim_run(data, tmp_path_factory):
    return fit("padim", data, tmp_path_factory.mktemp("padim") / "run")


def test_calibrate_rewrites_the_export_calibration_only(padim_run, data, tmp_path):
    exp = tmp_path / "export"
    assert runner.invoke(app, ["export", "--run", str(padim_run), "--out", str(exp)]).exit_code == 0
    model = (exp / "model.onnx").read_bytes()
    before = json.loads((exp / "calibration.json").read_text())
    res = runner.invoke(app, ["calibrate", "--run", str(exp), "--target-fpr", "0.3", str(data / "train" / "good")])
    assert res.exit_code == 0, res.output
    after = json.loads((exp / "calibration.json").read_text())
    assert after["target_fpr"] == 0.3 and after["image_threshold"] != before["image_threshold"]
    assert (exp / "model.onnx").read_bytes() == model
    assert json.loads((padim_run / "calibration.json").read_text()) == before  # the run keeps its own


def test_engine_and_folder_mismatches_are_one_line_errors(padim_run, images, tmp_path):
    res = runner.invoke(app, ["predict", "--run", str(padim_run), "--engine", "onnxruntime", "--out",
                              str(tmp_path / "p"), str(images)])
    assert res.exit_code == 2 and "export it first" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["export", "--run", str(padim_run), "--format", "tflite", "--out", str(tmp_path / "e")])
    assert res.exit_code == 2 and "--format tflite" in res.output
    exp = tmp_path / "e2"
    assert runner.invoke(app, ["export", "--run", str(padim_run), "--out", str(exp)]).exit_code == 0
    res = runner.invoke(app, ["predict", "--run", str(exp), "--engine", "torch", "--out", str(tmp_path / "q"),
                              str(images)])
    assert res.exit_code == 2 and "export folder" in res.output


def test_a_tiled_detector_is_refused_by_name(data, tmp_path):
    run = tmp_path / "tiled"
    res = runner.invoke(app, ["fit", "--method", "padim", "--data", str(data), "--out", str(run),
                              "-o", "image_size=64", "-o", "tile=32"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["export", "--run", str(run), "--out", str(tmp_path / "e")])
    assert res.exit_code == 2 and "tiled" in res.output


def test_openvino_scores_like_torch(padim_run, images, tmp_path):
    pytest.importorskip("openvino", reason="the openvino package is not installed")
    exp = tmp_path / "ov"
    res = runner.invoke(app, ["export", "--run", str(padim_run), "--format", "openvino", "--out", str(exp)])
    assert res.exit_code == 0, res.output
    assert (exp / "model.xml").is_file() and (exp / "model.bin").is_file()
    for args, out in ((["--run", str(padim_run)], "pt"), (["--run", str(exp), "--engine", "openvino"], "pv")):
        res = runner.invoke(app, ["predict", *args, "--out", str(tmp_path / out), "--overlays", "none", str(images)])
        assert res.exit_code == 0, res.output
    t, o = scores(tmp_path / "pt" / "scores.csv"), scores(tmp_path / "pv" / "scores.csv")
    assert set(t) == set(o)
    for k in t:
        assert relative_difference([float(t[k]["score"])], [float(o[k]["score"])]) <= 1e-4, k


def test_patchcore_reweighting_at_large_distances_exports_to_openvino_like_torch(data, tmp_path):
    """Whitened banks put patch distances near 100, where exp(d) overflows float32: the re-weighting's
    log-sum-exp must stay stable in every engine."""
    pytest.importorskip("openvino", reason="the openvino package is not installed")
    from latentad.data.open import open_dataset
    from latentad.export.graph import export_detector
    from latentad.registry import create

    det = create("patchcore", image_size=SIZE, seed=0).fit(open_dataset(data, size=SIZE).train)
    det.memory, det.components = det.memory * 200, det.components * 200  # distances about 200x larger
    x = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    want = det.score_batch(x)[0].numpy()
    assert want.min() > 200  # far past exp's float32 range (88)
    (tmp_path / "cal.json").write_text("{}")
    export_detector(det, tmp_path / "cal.json", tmp_path / "ov", "openvino")
    got = ExportedDetector(tmp_path / "ov", "openvino").predict(x).image_scores
    assert relative_difference(want, got) <= 1e-5
    # on a real whitened bank (bottle) OpenVINO's ReduceLogSumExp was off by 2 in 112: the graph spells it out
    onnx = pytest.importorskip("onnx")
    ops = {n.op_type for n in onnx.load(str(tmp_path / "ov" / "model.onnx"), load_external_data=False).graph.node}
    assert "ReduceLogSumExp" not in ops


def test_relative_difference_is_the_checks_measure():
    assert relative_difference(np.array([1.0, 100.0]), np.array([1.0, 100.01])) == pytest.approx(1e-4, rel=1e-3)


@pytest.fixture(scope="module")
def search_built():
    """The ensemble as `fit --method auto` builds it (`Ensemble.of_fitted` on members fitted one by one):
    members on one backbone at two sizes, a discriminator, the fine-tuned encoder."""
    from latentad import create

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny workloads (restored below)
    split = make_synthetic(n_train=8, n_test_good=2, n_test_defect=2, size=SIZE)
    members = {"gaussian": create("gaussian", image_size=48), "padim": create("padim", image_size=48),
               "patchcore_whiten": create("patchcore", image_size=48, whiten=True, embed_dim=0),
               "simplenet": create("simplenet", image_size=48, steps=5),
               "ssl_gaussian": create("ssl_gaussian", image_size=48, objective="contrastive", epochs=1, augment_to=8),
               "patchcore_64": create("patchcore", image_size=SIZE)}
    fitted = [d.fit(split.train) for d in members.values()]
    torch.set_num_threads(threads)
    from latentad.selection.ensemble import Ensemble

    stats = [[0.1 * k, 1.0 + k, 0.2 * k, 1.5] for k in range(len(fitted))]
    return Ensemble.of_fitted(list(members), fitted, stats, 48, seed=0)


def test_the_search_built_ensemble_exports_one_copy_of_each_backbone(search_built, tmp_path):
    from latentad.export.dedupe import weight_copies
    from latentad.export.graph import export_detector

    (tmp_path / "calibration.json").write_text("{}")
    exp = tmp_path / "export"
    meta = export_detector(search_built, tmp_path / "calibration.json", exp, "onnx")
    assert meta["input"]["shape"][2:] == [SIZE, SIZE] and meta["localizes"]
    copies = weight_copies(exp / "model.onnx")
    assert copies and max(copies.values()) == 1
    x = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    want, got = search_built.predict(x), ExportedDetector(exp).predict(x)
    assert relative_difference(want.image_scores, got.image_scores) <= 1e-4
    assert relative_difference(want.anomaly_maps, got.anomaly_maps) <= 1e-4


def test_an_export_failure_is_one_line(padim_run, tmp_path, monkeypatch):
    def fails(*_, **__):
        raise RuntimeError("Cannot insert a Tensor that requires grad as a constant.\nTensor:\n" + "0.1 " * 5000)

    monkeypatch.setattr(torch.onnx, "export", fails)
    res = runner.invoke(app, ["export", "--run", str(padim_run), "--out", str(tmp_path / "e")])
    assert res.exit_code == 2 and "cannot be exported" in res.output and "requires grad" in res.output
    assert len(res.output.strip().splitlines()) == 1 and "Tensor:" not in res.output
