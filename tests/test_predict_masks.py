"""Pixel decisions in `predict`: a mask per image at its own size (named like its overlay), regions at
the calibrated pixel threshold, areas in mm^2 with --pixel-size."""

import csv
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from latentad.cli import app
from latentad.data.synthetic import make_synthetic
from latentad.maps.regions import regions

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "cat"
    make_synthetic(root, n_train=20, n_test_good=3, n_test_defect=3, size=48)
    out = tmp_path_factory.mktemp("runs") / "padim"
    res = runner.invoke(app, ["fit", "--method", "padim", "--data", str(root), "--out", str(out), "-o",
                              "image_size=48"])
    assert res.exit_code == 0, res.output
    return out, root


def test_regions_of_a_mask_largest_first_with_boxes_areas_and_scores():
    mask = np.zeros((10, 12), bool)
    mask[1:3, 1:3] = True  # 4 px
    mask[5:9, 6:11] = True  # 20 px
    amap = np.arange(120, dtype=np.float32).reshape(10, 12)
    got = regions(mask, amap, pixel_size=0.5)
    assert [(r["region"], r["x"], r["y"], r["width"], r["height"], r["area_px"]) for r in got] == [
        (1, 6, 5, 5, 4, 20), (2, 1, 1, 2, 2, 4)]
    assert got[0]["peak"] == amap[8, 10] and got[1]["mean"] == pytest.approx(amap[1:3, 1:3].mean())
    assert got[0]["area_mm2"] == pytest.approx(5.0)


def test_predict_writes_masks_at_each_images_size_and_regions(run, tmp_path):
    out, root = run
    cal = json.loads((out / "calibration.json").read_text())
    # pixel_fpr is measured on held-out images, not the pixels the threshold was set on: a rate, not ~0
    assert cal["pixel_threshold"] is not None and 0 <= cal["pixel_fpr"] < 0.5
    res = runner.invoke(app, ["predict", "--run", str(out), "--out", str(tmp_path / "p"), "--pixel-size", "0.1",
                              str(root / "test")])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(tmp_path / "p" / "scores.csv")))
    for i, r in enumerate(rows):
        stem = r["path"].rsplit("/", 1)[1].rsplit(".", 1)[0]
        mask = Image.open(tmp_path / "p" / "masks" / f"{i:05d}_{stem}.png")
        assert mask.size == Image.open(r["path"]).size
        assert (tmp_path / "p" / "overlays" / f"{i:05d}_{stem}.png").is_file()
    with open(tmp_path / "p" / "regions.csv") as fh:
        header = next(csv.reader(fh))
    assert header == ["path", "region", "x", "y", "width", "height", "area_px", "peak", "mean", "area_mm2"]
    res = runner.invoke(app, ["predict", "--run", str(out), "--out", str(tmp_path / "q"), "--no-masks",
                              str(root / "test")])
    assert res.exit_code == 0 and not (tmp_path / "q" / "masks").exists()
    res = runner.invoke(app, ["predict", "--run", str(out), "--out", str(tmp_path / "r"), "--pixel-size", "0",
                              str(root / "test")])
    assert res.exit_code == 2 and "--pixel-size 0.0: must be a positive length in mm" in res.output


def test_heat_maps_are_clear_below_the_normal_quantile_and_outline_the_pixel_decisions():
    from latentad.calibration import Calibration
    from latentad.report.figures import heat_scale, overlay

    cal = Calibration(1.0, 0.01, map_low=0.0, map_high=1.0, n_images=10, source="test", pixel_threshold=2.0,
                      pixel_fpr=1e-4)
    assert heat_scale(cal) == (1.0, 4.0, 2.0)
    image = np.full((40, 40, 3), 100, np.uint8)
    calm = np.full((20, 20), 0.5, np.float32)
    assert np.array_equal(np.asarray(overlay(image, calm, cal)), image)  # a good part looks clean
    hot = calm.copy()
    hot[5:15, 5:15] = 3.0
    out = np.asarray(overlay(image, hot, cal))
    assert (out[0, 0] == 100).all() and (out == 255).all(axis=2).any()  # clear outside, outlined inside


def test_an_exported_model_writes_the_same_masks_and_regions(run, tmp_path):
    pytest.importorskip("onnxruntime")
    out, root = run
    exp = tmp_path / "exp"
    assert runner.invoke(app, ["export", "--run", str(out), "--out", str(exp)]).exit_code == 0
    for src, name in ((out, "t"), (exp, "o")):
        res = runner.invoke(app, ["predict", "--run", str(src), "--out", str(tmp_path / name), "--overlays", "none",
                                  str(root / "test")])
        assert res.exit_code == 0, res.output
    t, o = (list(csv.DictReader(open(tmp_path / n / "regions.csv"))) for n in ("t", "o"))
    assert [(r["path"], r["x"], r["y"], r["area_px"]) for r in t] == [(r["path"], r["x"], r["y"], r["area_px"])
                                                                      for r in o]


def test_files_written_beside_scoring_equal_each_image_drawn_in_turn(run, tmp_path):
    import torch

    from latentad.evaluation import score_set
    from latentad.maps.regions import defect_mask, full_size
    from latentad.predict import images_from_paths
    from latentad.report.figures import overlay
    from latentad.runs import load_run

    out, root = run
    res = runner.invoke(app, ["predict", "--run", str(out), "--out", str(tmp_path / "p"), str(root / "test")])
    assert res.exit_code == 0, res.output
    _, det, cal = load_run(out)
    images = images_from_paths([root / "test"], det.config.channels)
    images.keep_originals = True
    drawn, masks, found = [], [], []
    with torch.inference_mode():
        pred, *_, paths, _ = score_set(det, images, None, on_batch=lambda b, p: drawn.extend(b.originals))
    for image, amap, path in zip(drawn, pred.anomaly_maps, paths, strict=True):
        masks.append(defect_mask(full_size(amap, image.shape[:2]), cal.pixel_threshold))
        found += [(path, r["x"], r["y"], r["area_px"]) for r in regions(masks[-1], full_size(amap, image.shape[:2]))]
    rows = list(csv.DictReader(open(tmp_path / "p" / "scores.csv")))
    assert [r["path"] for r in rows] == paths
    for i, (image, amap, mask, path) in enumerate(zip(drawn, pred.anomaly_maps, masks, paths, strict=True)):
        name = f"{i:05d}_{path.rsplit('/', 1)[1].rsplit('.', 1)[0]}.png"
        assert np.array_equal(np.asarray(Image.open(tmp_path / "p" / "overlays" / name)),
                              np.asarray(overlay(image, amap, cal)))
        assert np.array_equal(np.asarray(Image.open(tmp_path / "p" / "masks" / name)), mask * np.uint8(255))
    got = [(r["path"], int(r["x"]), int(r["y"]), int(r["area_px"])) for r in
           csv.DictReader(open(tmp_path / "p" / "regions.csv"))]
    assert got == found and found  # in image order, largest region first within an image


def test_a_file_that_cannot_be_written_ends_predict_with_one_line(run, tmp_path):
    out, root = run
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "overlays").write_text("a file where the overlays' folder goes")
    res = runner.invoke(app, ["predict", "--run", str(out), "--out", str(tmp_path / "p"), str(root / "test")])
    assert res.exit_code == 1 and "overlays" in res.output and "Traceback" not in res.output
