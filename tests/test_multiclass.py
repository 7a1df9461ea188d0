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


def test_predict_routes_each_image_to_its_products_threshold_or_to_the_one_named(run, two, tmp_path):
    import csv

    res = runner.invoke(app, ["predict", "--run", str(run), "--out", str(tmp_path / "p"), "--overlays", "none",
                              str(two / "alpha" / "test"), str(two / "beta" / "test")])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(tmp_path / "p" / "scores.csv")))
    assert {r["routed"] for r in rows} == {"inferred"}
    right = [r["category"] == ("alpha" if "/alpha/" in r["path"] else "beta") for r in rows]
    assert sum(right) >= 0.8 * len(rows)
    res = runner.invoke(app, ["predict", "--run", str(run), "--out", str(tmp_path / "q"), "--overlays", "none",
                              "--category", "beta", str(two / "alpha" / "test")])
    assert res.exit_code == 0 and {r["category"] for r in csv.DictReader(open(tmp_path / "q" / "scores.csv"))} == {
        "beta"}
    res = runner.invoke(app, ["predict", "--run", str(run), "--out", str(tmp_path / "r"), "--category", "gamma",
                              str(two / "alpha" / "test")])
    assert res.exit_code == 2
    assert "--category gamma: not a product of this run (its products: alpha, beta)" in res.output
    res = runner.invoke(app, ["evaluate", "--run", str(run), "--data", str(two / "alpha"), "--json"])
    assert 0 <= json.loads(res.output.strip().splitlines()[-1])["routing_accuracy"] <= 1


def test_the_service_judges_each_upload_by_its_products_threshold(run, two):
    from fastapi.testclient import TestClient

    from latentad.serve.app import create_app

    api = create_app(run, token="s3cret")
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in sorted((two / "beta" / "test").glob("*/*.png"))]
    beta = json.loads((run / "calibrations" / "beta.json").read_text())["image_threshold"]
    try:
        with TestClient(api, base_url="http://127.0.0.1") as c:
            auth = {"Authorization": "Bearer s3cret"}
            rows = c.post("/predict?product=beta", files=files, headers=auth).json()["results"]
            assert {(r["category"], r["routed"], r["threshold"]) for r in rows} == {("beta", "given", beta)}
            rows = c.post("/predict", files=files, headers=auth).json()["results"]
            assert {r["routed"] for r in rows} == {"inferred"} and {r["category"] for r in rows} <= {"alpha", "beta"}
            bad = c.post("/predict?product=gamma", files=files, headers=auth)
            assert bad.status_code == 400 and "product 'gamma': unknown (the products: alpha, beta)" in bad.text
    finally:
        api.state.service.close()
