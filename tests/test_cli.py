"""The CLI contract scripts rely on: fit / evaluate --json / predict / calibrate / list, and bad input
that ends in one line naming the file (exit 2, no traceback)."""

import csv
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from latentad.cli import JSON_KEYS, app
from latentad.data.synthetic import make_synthetic

runner = CliRunner()
TINY = ["-o", "image_size=32", "-o", "augment_to=16", "-o", "base_width=8", "-o", "latent_dim=8", "--epochs", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "cat"
    make_synthetic(root, n_train=10, n_test_good=3, n_test_defect=3, size=48)
    return root


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    res = runner.invoke(app, ["fit", "--method", "ae_l2", "--data", str(data), "--out", str(out), *TINY])
    assert res.exit_code == 0, res.output
    return out


def test_fit_writes_a_run_folder_without_pickle(run):
    for name in ["config.json", "calibration.json", "fit.json", "model/model.safetensors", "model/detector.json"]:
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["method"] == "ae_l2" and config["seed"] == 0 and config["data"]["format"] == "mvtec"
    for f in run.rglob("*"):
        if f.is_file():
            head = f.read_bytes()[:2]
            assert not (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")), f
            assert head != b"PK", f  # torch.save's zip format


def test_evaluate_json_prints_one_object_with_the_contract_keys(run, data):
    res = runner.invoke(app, ["evaluate", "--run", str(run), "--data", str(data), "--json"])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(JSON_KEYS) <= set(obj)
    assert obj["n_images"] == 6 and 0.0 <= obj["image_auroc"] <= 1.0 and obj["pixel_auroc"] is not None
    assert (run / "metrics.json").is_file() and (run / "report.html").is_file()
    assert "score_histogram.png" in (run / "report.html").read_text()


def test_predict_writes_scores_and_one_overlay_per_image(run, data, tmp_path):
    out = tmp_path / "pred"
    res = runner.invoke(app, ["predict", "--run", str(run), "--out", str(out), str(data / "test")
                              + "/good", str(next((data / "test").glob("[!g]*/*.png")))])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert [list(r) for r in rows][0] == ["path", "score", "is_anomalous"]
    assert len(rows) == 4 and len(list((out / "overlays").glob("*.png"))) == 4


def test_calibrate_rewrites_only_the_threshold(run, data):
    before = (run / "model" / "model.safetensors").read_bytes()
    res = runner.invoke(app, ["calibrate", "--run", str(run), "--target-fpr", "0.5", str(data / "train" / "good")])
    assert res.exit_code == 0, res.output
    cal = json.loads((run / "calibration.json").read_text())
    assert cal["target_fpr"] == 0.5 and cal["n_images"] == 10
    assert (run / "model" / "model.safetensors").read_bytes() == before


def test_list_names_methods_and_presets():
    res = runner.invoke(app, ["list"])
    assert res.exit_code == 0 and "ae_ssim" in res.stdout and "presets:" in res.stdout


def _mvtec(tmp_path, n=4):
    d = tmp_path / "d"
    rng = np.random.default_rng(0)
    for sub in ["train/good", "test/good", "test/crack", "ground_truth/crack"]:
        (d / sub).mkdir(parents=True)
    for i in range(n):
        for sub in ["train/good", "test/good", "test/crack"]:
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(d / sub / f"{i:03d}.png")
        Image.fromarray(np.zeros((40, 40), np.uint8)).save(d / "ground_truth/crack" / f"{i:03d}_mask.png")
    return d


def _fails_cleanly(args, needle):
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("latentad: error")]
    assert len(lines) == 1 and needle in lines[0], res.output
    return lines[0]


def _fit(d, out):
    return ["fit", "--method", "ae_l2", "--data", str(d), "--out", str(out), *TINY]


def test_truncated_png_in_train_is_named(tmp_path):
    d = _mvtec(tmp_path)
    raw = (d / "train/good/000.png").read_bytes()
    (d / "train/good/truncated_one.png").write_bytes(raw[: len(raw) // 3])
    _fails_cleanly(_fit(d, tmp_path / "r"), "truncated_one.png")


def test_empty_train_folder_is_refused(tmp_path):
    d = _mvtec(tmp_path)
    for f in (d / "train/good").iterdir():
        f.unlink()
    _fails_cleanly(_fit(d, tmp_path / "r"), "train/good")


def test_non_image_and_empty_files_are_named(tmp_path):
    d = _mvtec(tmp_path)
    (d / "train/good/notes.txt").write_text("hello")
    _fails_cleanly(_fit(d, tmp_path / "r"), "notes.txt")
    (d / "train/good/notes.txt").unlink()
    (d / "train/good/empty.png").write_bytes(b"")
    _fails_cleanly(_fit(d, tmp_path / "r"), "empty.png")


def test_mask_of_another_size_and_missing_mask_folder_are_named(tmp_path):
    d = _mvtec(tmp_path)
    res = runner.invoke(app, _fit(d, tmp_path / "r"))
    assert res.exit_code == 0, res.output
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(d / "ground_truth/crack/001_mask.png")
    _fails_cleanly(["evaluate", "--run", str(tmp_path / "r"), "--data", str(d)], "001_mask.png")
    for f in (d / "ground_truth/crack").iterdir():
        f.unlink()
    (d / "ground_truth/crack").rmdir()
    (d / "ground_truth/other").mkdir()
    _fails_cleanly(["evaluate", "--run", str(tmp_path / "r"), "--data", str(d)], "ground_truth/crack")


def test_grayscale_image_among_rgb_is_converted_with_a_warning(tmp_path):
    d = _mvtec(tmp_path)
    Image.fromarray(np.full((40, 40), 128, np.uint8)).save(d / "train/good/gray.png")
    res = runner.invoke(app, _fit(d, tmp_path / "r"))
    assert res.exit_code == 0, res.output
    assert "gray.png" in res.output and "converted" in res.output


def test_unknown_method_and_option_are_one_line_errors(tmp_path):
    d = _mvtec(tmp_path)
    _fails_cleanly(["fit", "--method", "nope", "--data", str(d), "--out", str(tmp_path / "r")], "unknown method")
    _fails_cleanly(["fit", "--method", "ae_l2", "--data", str(d), "--out", str(tmp_path / "r"), "-o", "wings=2"],
                   "wings")
    _fails_cleanly(["evaluate", "--run", str(tmp_path / "nothing"), "--data", str(d)], "not a latentad run")


def test_bad_options_are_refused_before_any_work(tmp_path):
    d = tmp_path / "no_data_here"  # never opened: the option is refused first
    base = ["fit", "--data", str(d), "--out", str(tmp_path / "r")]
    _fails_cleanly([*base, "--method", "ae_ssim", "-o", "score=median"], "score=median")
    _fails_cleanly([*base, "--method", "ae_l2", "-o", "lr=-1"], "lr=-1")
    _fails_cleanly([*base, "--method", "patchcore", "-o", "coreset_ratio=2"], "coreset_ratio")
    _fails_cleanly([*base, "--method", "ae_l2", "-o", "epochs=many"], "epochs=many")
    assert not (tmp_path / "r").exists()


def test_null_reaches_the_saved_config(data, tmp_path):
    out = tmp_path / "r"
    res = runner.invoke(app, ["fit", "--method", "ae_l2", "--data", str(data), "--out", str(out), *TINY,
                              "-o", "augment_to=null"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "model" / "detector.json").read_text())["config"]["augment_to"] is None
    assert json.loads((out / "config.json").read_text())["options"]["augment_to"] is None


def test_fit_warns_when_the_held_out_images_cannot_back_the_target_fpr(data, tmp_path):
    res = runner.invoke(app, ["fit", "--method", "ae_l2", "--data", str(data), "--out", str(tmp_path / "r"), *TINY])
    assert res.exit_code == 0
    # the default target follows the hold-out down to 1 in 10; one image cannot back even that
    assert "latentad: warning: calibration: 1 normal image cannot back a target FPR of 0.1" in res.output
    cal = json.loads((tmp_path / "r" / "calibration.json").read_text())
    assert cal["n_images"] == 1 and cal["min_fpr"] == 0.5
    res = runner.invoke(app, ["fit", "--method", "ae_l2", "--data", str(data), "--out", str(tmp_path / "r2"), *TINY,
                              "--target-fpr", "0.01"])  # asked for: the warning names it
    assert "cannot back a target FPR of 0.01" in res.output


def test_the_default_target_is_what_the_hold_out_backs_without_a_warning(tmp_path):
    from latentad.runs import default_target_fpr

    assert default_target_fpr(200) == 0.01 and default_target_fpr(20) == 0.05 and default_target_fpr(3) == 0.1


def test_a_threshold_from_the_training_images_is_named_in_a_warning(data, tmp_path):
    res = runner.invoke(app, ["fit", "--method", "ae_l2", "--data", str(data), "--out", str(tmp_path / "r"), *TINY,
                              "--calibration-fraction", "0"])
    assert res.exit_code == 0 and "falls back to the training images" in res.output
    assert "optimistic" in json.loads((tmp_path / "r" / "calibration.json").read_text())["source"]


def test_evaluate_reports_what_the_calibrated_threshold_achieves(run, data):
    res = runner.invoke(app, ["evaluate", "--run", str(run), "--data", str(data), "--json"])
    a = json.loads(res.output.strip().splitlines()[-1])["at_threshold"]
    scores = list(csv.DictReader(open(run / "scores.csv")))
    flagged_normal = [r for r in scores if r["label"] == "0" and r["is_anomalous"] == "1"]
    assert a["threshold"] == json.loads((run / "calibration.json").read_text())["image_threshold"]
    assert a["fpr"] == pytest.approx(len(flagged_normal) / sum(r["label"] == "0" for r in scores))
    assert set(a) >= {"tpr", "precision", "target_fpr"}


def test_force_builds_aside_and_keeps_the_old_run_when_the_new_fit_fails(run, data, tmp_path):
    import shutil

    out = tmp_path / "r"
    shutil.copytree(run, out)
    before = (out / "config.json").read_text()
    res = runner.invoke(app, ["fit", "--method", "ae_l2", "--data", str(tmp_path / "missing"), "--out", str(out),
                              "--force", *TINY])
    assert res.exit_code == 2 and (out / "config.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no staging folder left behind
    res = runner.invoke(app, ["fit", "--method", "ae_l2", "--data", str(data), "--out", str(out), "--force", *TINY,
                              "--seed", "3"])
    assert res.exit_code == 0 and json.loads((out / "config.json").read_text())["seed"] == 3


def test_fit_reads_a_config_file_and_flags_win(data, tmp_path):
    cfg = tmp_path / "fit.toml"
    cfg.write_text(f'method = "ae_l2"\ndata = "{data}"\nout = "{tmp_path / "r"}"\nseed = 5\nepochs = 1\n'
                   '[option]\nimage_size = 32\naugment_to = 16\nbase_width = 8\nlatent_dim = 8\n')
    res = runner.invoke(app, ["fit", "--config", str(cfg), "--seed", "0"])
    assert res.exit_code == 0, res.output
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["seed"] == 0 and config["options"]["image_size"] == 32
    cfg.write_text('method = "ae_l2"\nseed = "five"\n')
    res = runner.invoke(app, ["fit", "--config", str(cfg)])
    assert res.exit_code == 2 and "seed" in res.output and "int" in res.output
    cfg.write_text('method = "ae_l2"\nno_such = 1\n')
    res = runner.invoke(app, ["fit", "--config", str(cfg)])
    assert res.exit_code == 2 and "no_such" in res.output and str(cfg) in res.output


def test_version_sizes_and_renamed_flags(run, tmp_path):
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.startswith("latentad ")
    res = runner.invoke(app, ["evaluate", "--run", str(run), "--eval-size", "24x3z"])
    assert res.exit_code == 2 and "--eval-size 24x3z" in res.output
    res = runner.invoke(app, ["evaluate", "--run", str(run), "--eval-size", "24x32", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads((run / "metrics.json").read_text())["conditions"]["eval_size"] == [24, 32]
    res = runner.invoke(app, ["export", "--run", str(run), "--format", "onnx", "--out", str(tmp_path / "e")])
    assert res.exit_code == 0 and "--format is deprecated" in res.output and "--to" in res.output
    res = runner.invoke(app, ["export", "--run", str(run), "--format", "onnx", "--to", "openvino",
                              "--out", str(tmp_path / "e2")])
    assert res.exit_code == 2 and "same option" in res.output


def test_resume_with_other_epochs_is_refused_and_the_run_is_kept(data, tmp_path):
    out = tmp_path / "r"
    args = ["fit", "--method", "ae_l2", "--data", str(data), "--out", str(out), *TINY]
    assert runner.invoke(app, args).exit_code == 0
    before = (out / "config.json").read_text()
    _fails_cleanly([*args, "--epochs", "3", "--resume"], "epochs 1 -> 3")
    assert (out / "config.json").read_text() == before


def test_calibrate_reports_the_smallest_fpr_its_images_support(run, data):
    res = runner.invoke(app, ["calibrate", "--run", str(run), str(data / "train" / "good")])
    assert res.exit_code == 0, res.output
    assert "warning" in res.output and "smallest FPR 10 images support: 0.0909" in res.output
    _fails_cleanly(["calibrate", "--run", str(run), "--target-fpr", "2", str(data / "train" / "good")],
                   "--target-fpr 2")


def test_predict_descends_into_sub_folders_unless_told_not_to(run, data, tmp_path):
    import shutil

    nested = tmp_path / "line" / "cam1" / "2026-12-01"
    nested.mkdir(parents=True)
    for i, f in enumerate(sorted((data / "test" / "good").glob("*.png"))):
        shutil.copy(f, nested / f"IMG{i}.PNG")
    (nested / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "line" / "top.png").write_bytes((data / "train" / "good" / "000.png").read_bytes())
    res = runner.invoke(app, ["predict", "--run", str(run), "--out", str(tmp_path / "p"), str(tmp_path / "line")])
    assert res.exit_code == 0, res.output
    assert len(list(csv.DictReader((tmp_path / "p" / "scores.csv").open()))) == 4
    assert "skipped 1 hidden or system file" in res.output
    res = runner.invoke(app, ["predict", "--run", str(run), "--out", str(tmp_path / "q"), "--no-recursive",
                              str(tmp_path / "line")])
    assert res.exit_code == 0 and len(list(csv.DictReader((tmp_path / "q" / "scores.csv").open()))) == 1


def test_folder_classes_named_by_numbers_through_the_cli(tmp_path):
    rng = np.random.default_rng(0)
    for digit in range(3):
        (tmp_path / "d" / str(digit)).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "d" / str(digit) / f"{i}.png")
    res = runner.invoke(app, ["fit", "--method", "ae_l2", "--data", str(tmp_path / "d"), "--format", "folder",
                              "-d", "normal=1", "--out", str(tmp_path / "r"), *TINY])
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "r" / "config.json").read_text())["data"]
    assert info["normal"] == "1" and info["abnormal"] == ["0", "2"]


def test_evaluate_eval_size_is_recorded_with_the_metric_conditions(run, data):
    res = runner.invoke(app, ["evaluate", "--run", str(run), "--data", str(data), "--json", "--eval-size", "24"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((run / "metrics.json").read_text())
    c = metrics["conditions"]
    assert c["eval_size"] == 24 and c["pixel_metrics_size"] == [24, 24] and c["aupro_fpr_limit"] == 0.3
    assert {"pixel_auroc", "aupro", "aupimo"} <= set(next(iter(metrics["per_defect"].values())))


def test_list_describes_every_method_and_what_paper_recipes_change():
    from latentad import available_methods

    out = runner.invoke(app, ["list"]).stdout
    lines = out.splitlines()
    for name in available_methods():
        i = next(k for k, ln in enumerate(lines) if ln.startswith(name + " "))
        assert len(lines[i + 1].strip()) > 20, name  # its one-line description
    for name in ("padim", "patchcore", "simplenet", "gaussian"):
        block = out.split(name + " ", 1)[1]
        assert "paper_recipe" in block and "presets: default, paper," not in block
        assert "EfficientNet-Lite0" in block.split("\n\n")[0]


def test_the_package_advertises_only_families_that_have_methods():
    import latentad
    from latentad.registry import get_method

    families = {get_method(m).family for m in latentad.available_methods()}
    readme = (__import__("pathlib").Path(__file__).parents[1] / "README.md").read_text()
    intro = readme.split("## ", 1)[0]
    if "selfsupervised" not in families:
        assert "self-supervised ones" not in intro and "three latent-space families" not in latentad.__doc__


def test_report_names_the_data_prints_counts_as_integers_and_shows_roc_and_pro(run, data):
    from latentad.report.html import describe_data

    assert runner.invoke(app, ["evaluate", "--run", str(run), "--data", str(data)]).exit_code == 0
    html = (run / "report.html").read_text()
    assert "<title>latentad report: ae_l2 on cat (MVTec layout)</title>" in html
    assert "<td>6</td>" in html and "6.0000" not in html
    assert 'src="maps/roc_pro.png"' in html and (run / "maps" / "roc_pro.png").is_file()
    assert describe_data({"format": "elpv", "cell_type": "mono"}) == "ELPV mono cells"
    assert describe_data({"format": "mvtec", "root": "/x/mvtec_ad/bottle"}) == "MVTec AD bottle"
