"""One model for several products: `fit --data A --data B`, a threshold per product, evaluate per
category and their mean, and the one-line refusals."""

import json

import pytest
from typer.testing import CliRunner

from latentad.cli import app
from latentad.data.synthetic import make_synthetic

runner = CliRunner()


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi")
    make_synthetic(root / "alpha", n_train=12, n_test_good=3, n_test_defect=3, size=32, seed=0)
    make_synthetic(root / "beta", n_train=12, n_test_good=3, n_test_defect=3, size=32, seed=1)
    return root


@pytest.fixture(scope="module")
def run(two, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "multi"
    res = runner.invoke(app, ["fit", "--method", "padim", "-o", "image_size=32", "--data", str(two / "alpha"),
                              "--data", str(two / "beta"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_one_model_a_threshold_per_category(run):
    config = json.loads((run / "config.json").read_text())
    assert [c["name"] for c in config["categories"]] == ["alpha", "beta"]
    assert sum(c["n_fit"] for c in config["categories"]) == config["calibration"]["n_fit"]
    cals = {n: json.loads((run / "calibrations" / f"{n}.json").read_text()) for n in ("alpha", "beta")}
    assert all(c["source"].endswith("held-out normal training images") for c in cals.values())


def test_evaluate_one_category_with_its_threshold_and_all_with_their_mean(run, two):
    res = runner.invoke(app, ["evaluate", "--run", str(run), "--data", str(two / "beta"), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output.strip().splitlines()[-1])
    beta = json.loads((run / "calibrations" / "beta.json").read_text())
    assert got["category"] == "beta" and got["at_threshold"]["threshold"] == beta["image_threshold"]
    res = runner.invoke(app, ["evaluate", "--run", str(run), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output.strip().splitlines()[-1])
    per = got["per_category"]
    assert set(per) == {"alpha", "beta"}
    assert got["image_auroc"] == pytest.approx((per["alpha"]["image_auroc"] + per["beta"]["image_auroc"]) / 2)
    assert (run / "eval" / "alpha" / "report.html").is_file()
    res = runner.invoke(app, ["evaluate", "--run", str(run), "--data", str(two), "--json"])
    assert res.exit_code == 2 and "not a category of this multi-class run (its categories: alpha, beta)" in res.output


def test_two_categories_of_one_name_and_an_empty_one_are_refused(two, tmp_path):
    make_synthetic(tmp_path / "x" / "alpha", n_train=6, n_test_good=2, n_test_defect=2, size=32)
    res = runner.invoke(app, ["fit", "--method", "padim", "--data", str(two / "alpha"), "--data",
                              str(tmp_path / "x" / "alpha"), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "a second category named 'alpha'" in res.output
    empty = tmp_path / "empty"
    (empty / "train" / "good").mkdir(parents=True)
    (empty / "test" / "good").mkdir(parents=True)
    res = runner.invoke(app, ["fit", "--method", "padim", "--data", str(two / "alpha"), "--data", str(empty),
                              "--out", str(tmp_path / "r2")])
    assert res.exit_code == 2 and "empty" in res.output and "Traceback" not in res.output, res.output
    assert not (tmp_path / "r").exists() and not (tmp_path / "r2").exists()
