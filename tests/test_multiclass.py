"""One model for several products: `fit --data A --data B`, a threshold per product, evaluate per
category and their mean, and the one-line refusals."""

import json

import pytest
from typer.testing import CliRunner

from latentad.cli import app
from latentad.data.synthetic import make_synthetic

runner = CliRunner()


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
    assert {r["routed"] for r in rows if "/good/" in r["path"]} == {"inferred"}
    assert all(r["is_anomalous"] == "1" for r in rows if r["routed"] == "unknown")  # beyond every radius: flagged
    rows = [r for r in rows if r["routed"] == "inferred"]
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


def noise_png(seed: int = 0) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_the_router_answers_unknown_beyond_each_products_radius(run, two):
    import torch

    from latentad import io
    from latentad.data.base import decode_image, to_input
    from latentad.multiclass import route_known

    router = io.read_tensors(run / "routing.safetensors")
    assert router["radius"].shape == (2,) and bool(((router["radius"] > 0) & (router["radius"] < 2)).all())
    own = [to_input(decode_image(p, p.name), (32, 32), 3) for p in sorted((two / "beta" / "train" / "good").glob("*"))]
    assert all(known for _, _, known in route_known(router, torch.stack(own)))
    noise = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert not any(known for _, _, known in route_known(router, noise))
    del router["radius"]  # a router fitted before the radius existed accepts everything
    assert all(known for _, _, known in route_known(router, noise))


def test_multi_class_writes_name_their_product_and_take_effect(run, two, tmp_path):
    import shutil

    from fastapi.testclient import TestClient

    from latentad.serve.app import create_app

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    api = create_app(copy, token="s3cret")
    auth = {"Authorization": "Bearer s3cret"}
    goods = [("files", (p.name, p.read_bytes(), "image/png")) for p in sorted((two / "beta").glob("train/good/*"))]
    tests = [("files", (p.name, p.read_bytes(), "image/png")) for p in sorted((two / "beta").glob("test/*/*.png"))]
    try:
        with TestClient(api, base_url="http://127.0.0.1") as c:
            alpha = c.get("/health").json()["products"]["alpha"]["threshold"]
            beta = c.get("/health").json()["products"]["beta"]["threshold"]
            r = c.post("/calibrate", files=goods, data={"target_fpr": "0.25"}, headers=auth)
            assert r.status_code == 400 and "product=one of alpha, beta" in r.json()["detail"]
            r = c.post("/calibrate?product=beta", files=goods, data={"target_fpr": "0.25"}, headers=auth)
            new = r.json()["threshold"]
            assert r.status_code == 200 and new != beta and r.json()["product"] == "beta"
            rows = c.post("/predict?product=beta", files=tests, headers=auth).json()["results"]
            assert {r["threshold"] for r in rows} == {new}
            rows = c.post("/predict", files=tests, headers=auth).json()["results"]
            assert all(r["threshold"] == new for r in rows if r["category"] == "beta")
            h = c.get("/health").json()
            assert h["products"]["beta"]["threshold"] == new and h["products"]["alpha"]["threshold"] == alpha
            assert h["products"]["beta"]["drift"]["window"] == len(tests) + sum(r["category"] == "beta" for r in rows)
            row = c.post("/predict", files=[("files", ("noise.png", noise_png(), "image/png"))],
                         headers=auth).json()["results"][0]
            assert row["routed"] == "unknown" and row["is_anomalous"] == 1 and row["threshold"] is None
            assert c.post("/calibrate/undo", headers=auth).status_code == 400
            assert c.post("/calibrate/undo?product=beta", headers=auth).json()["threshold"] == beta
            assert c.post("/calibrate/feedback", headers=auth).status_code == 400
    finally:
        api.state.service.close()


def test_predict_answers_unknown_for_an_image_of_no_product_and_flags_it(run, tmp_path):
    import csv

    import numpy as np
    from PIL import Image

    folder = tmp_path / "noise"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"n{k}.png")
    res = runner.invoke(app, ["predict", "--run", str(run), "--out", str(tmp_path / "p"), "--overlays", "none",
                              str(folder)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(tmp_path / "p" / "scores.csv")))
    assert {(r["category"], r["routed"], r["is_anomalous"]) for r in rows} == {("", "unknown", "1")}
