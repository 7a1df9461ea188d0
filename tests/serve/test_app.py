"""The service's HTTP contract with FastAPI's test client: scores equal `latentad predict`, refusals
are one line with their 4xx, the calibration swaps (and comes back) without a restart."""

import base64
import csv
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from latentad.cli import app as cli
from latentad.serve.app import create_app

AUTH = {"Authorization": "Bearer s3cret"}
LOCAL = "http://127.0.0.1"  # the Host a loopback service answers to


@pytest.fixture
def client(run):
    api = create_app(run, token="s3cret", max_upload_mb=1)
    with TestClient(api, base_url=LOCAL) as c:
        yield c
    api.state.service.close()


def files_of(paths):
    return [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]


def test_scores_equal_predict_in_upload_order_with_overlays(client, run, images, tmp_path):
    res = CliRunner().invoke(cli, ["predict", "--run", str(run), "--out", str(tmp_path / "p"), "--overlays", "none",
                                   *map(str, images)])
    assert res.exit_code == 0, res.output
    want = [(r["path"].split("/")[-1], float(r["score"]), r["is_anomalous"] == "1")
            for r in csv.DictReader(open(tmp_path / "p" / "scores.csv"))]
    regions = {}  # predict's regions.csv, per file: the service answers the same regions
    for r in csv.DictReader(open(tmp_path / "p" / "regions.csv")):
        regions.setdefault(r["path"].split("/")[-1], []).append((int(r["x"]), int(r["y"]), int(r["area_px"])))
    order = images[::-1]  # upload order is kept, whatever it is
    r = client.post("/predict?map=png", files=files_of(order), headers=AUTH)
    assert r.status_code == 200, r.text
    got = r.json()["results"]
    assert [g["filename"] for g in got] == [p.name for p in order]
    by_name = {n: (s, a) for n, s, a in want}
    for g in got:
        s, a = by_name[g["filename"]]
        assert abs(g["score"] - s) <= 1e-4 * max(abs(s), 1e-6) and g["is_anomalous"] == a
        assert [(x["x"], x["y"], x["area_px"]) for x in g["regions"]] == regions.get(g["filename"], [])
        png = Image.open(io.BytesIO(base64.b64decode(g["overlay_png"])))
        assert png.format == "PNG" and png.size == (64, 64)
    assert "overlay_png" not in client.post("/predict", files=files_of(images[:1]), headers=AUTH).json()["results"][0]


def test_masks_in_the_answer_equal_predicts_and_can_be_left_out(client, run, images, tmp_path):
    res = CliRunner().invoke(cli, ["predict", "--run", str(run), "--out", str(tmp_path / "p"), "--overlays", "none",
                                   *map(str, images[:2])])
    assert res.exit_code == 0, res.output
    written = sorted((tmp_path / "p" / "masks").glob("*.png"))
    got = client.post("/predict?masks=png", files=files_of(images[:2]), headers=AUTH).json()["results"]
    for g, path in zip(got, written, strict=True):
        served = np.asarray(Image.open(io.BytesIO(base64.b64decode(g["mask_png"]))))
        assert np.array_equal(served, np.asarray(Image.open(path))) and "regions" in g
    bare = client.post("/predict?masks=none", files=files_of(images[:1]), headers=AUTH).json()["results"][0]
    assert "regions" not in bare and "mask_png" not in bare and "score" in bare
    r = client.post("/predict?masks=jpeg", files=files_of(images[:1]), headers=AUTH)
    assert r.status_code == 400 and "masks='jpeg'" in r.json()["detail"]


def test_bad_requests_get_their_4xx_and_one_line(client, data):
    good = sorted(data.glob("test/good/*.png"))[0].read_bytes()
    one = [("files", ("a.png", good, "application/octet-stream"))]
    assert client.post("/predict", files=one).status_code == 401
    assert client.post("/predict", files=one, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/metrics").status_code == 401
    assert client.get("/health").status_code == 200  # open, for probes
    cases = {"cut.png": good[: len(good) // 3], "notes.png": b"hello, this is text", "empty.png": b""}
    for name, body in cases.items():
        r = client.post("/predict", files=[("files", (name, body, "application/octet-stream"))], headers=AUTH)
        assert r.status_code == 400 and r.json()["detail"].startswith(name), r.text
        assert "\n" not in r.json()["detail"]
    big = [("files", ("big.png", good + bytes(2 << 20), "application/octet-stream"))]
    r = client.post("/predict", files=big, headers=AUTH)
    assert r.status_code == 413 and "--max-upload-mb" in r.json()["detail"]
    padded = good + bytes(600 << 10)  # three files of 0.6 MB: the limit is per file, not per request
    r = client.post("/predict", files=[("files", (f"p{i}.png", padded, "image/png")) for i in range(3)], headers=AUTH)
    assert r.status_code == 200, r.text
    r = client.post("/predict", files=[("files", ("../../etc/passwd", good, "image/png"))], headers=AUTH)
    assert r.status_code == 200 and r.json()["results"][0]["filename"] == "passwd"  # a label, never a path
    assert client.get("/health").json()["status"] == "ok"


def test_a_decompression_bomb_is_refused_before_decoding(run):
    api = create_app(run, max_pixels=10_000)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((200, 200), np.uint8)).save(buf, format="PNG")  # 40000 px, tiny file
    with TestClient(api, base_url=LOCAL) as c:
        r = c.post("/predict", files=[("files", ("bomb.png", buf.getvalue(), "image/png"))])
    api.state.service.close()
    assert r.status_code == 400 and "bomb.png" in r.json()["detail"] and "bomb" in r.json()["detail"]


def test_calibrate_changes_the_next_threshold_and_undo_restores_it(client, run, data, images):
    before = client.get("/health").json()["threshold"]
    normals = sorted(data.glob("train/good/*.png"))
    r = client.post("/calibrate", files=files_of(normals), data={"target_fpr": "0.3"}, headers=AUTH)
    assert r.status_code == 200, r.text
    new = r.json()
    assert new["n_images"] == len(normals) and new["target_fpr"] == 0.3 and new["threshold"] != before
    assert json.loads((run / "calibration.json").read_text())["image_threshold"] == new["threshold"]
    kept = sorted((run / "calibration.history" / "run").glob("*.json"))
    assert [json.loads(k.read_text())["image_threshold"] for k in kept] == [before]
    one = files_of(images[:1])
    assert client.post("/predict", files=one, headers=AUTH).json()["results"][0]["threshold"] == new["threshold"]
    second = client.post("/calibrate", files=files_of(normals), data={"target_fpr": "0.5"}, headers=AUTH).json()
    assert second["threshold"] != new["threshold"]
    # undo walks back the whole history, one write at a time
    assert client.post("/calibrate/undo", headers=AUTH).json()["threshold"] == new["threshold"]
    assert client.post("/calibrate/undo", headers=AUTH).json()["threshold"] == before
    assert client.post("/predict", files=one, headers=AUTH).json()["results"][0]["threshold"] == before
    assert client.post("/calibrate/undo", headers=AUTH).status_code == 400  # nothing left to undo
    r = client.post("/calibrate", files=files_of(normals), data={"target_fpr": "2"}, headers=AUTH)
    assert r.status_code == 400 and "target_fpr" in r.json()["detail"]


def test_health_and_prometheus_metrics_count_what_happened(client, images):
    one = files_of(images[:2])
    client.post("/predict", files=one, headers=AUTH)
    client.post("/predict", files=[("files", ("x.png", b"nope", "image/png"))], headers=AUTH)
    h = client.get("/health").json()
    assert h["method"] == "padim" and h["images_scored"] == 2 and h["uptime_s"] > 0
    text = client.get("/metrics", headers=AUTH).text
    assert 'latentad_requests_total{endpoint="/predict",status="200"} 1.0' in text
    assert 'latentad_errors_total{kind="bad_request"} 1.0' in text
    assert "latentad_request_latency_seconds_bucket" in text and "latentad_images_scored_total 2.0" in text
    assert h["drift"]["window"] == 2 and h["drift"]["z"] is not None and h["drift"]["alarm"] is False
    assert "latentad_drift_z " in text and 'latentad_window_score_quantile{q="0.5"}' in text


def test_an_export_folder_is_served_with_its_calibration(run, images, tmp_path):
    exp = tmp_path / "export"
    assert CliRunner().invoke(cli, ["export", "--run", str(run), "--out", str(exp)]).exit_code == 0
    api = create_app(exp)
    img = files_of(images[:2])
    with TestClient(api, base_url=LOCAL) as c:
        h = c.get("/health").json()
        served = c.post("/predict", files=img).json()["results"]
    api.state.service.close()
    api2 = create_app(run)
    with TestClient(api2, base_url=LOCAL) as c:
        ref = c.post("/predict", files=img).json()["results"]
    api2.state.service.close()
    assert h["engine"] == "onnxruntime"
    for a, b in zip(served, ref, strict=True):
        assert abs(a["score"] - b["score"]) <= 1e-4 * abs(b["score"]) and a["is_anomalous"] == b["is_anomalous"]


def test_the_operator_page_is_served_without_a_token(client):
    r = client.get("/")
    assert r.status_code == 200 and "latentad inspection" in r.text and "/predict?map=png" in r.text


def test_only_flagged_parts_are_kept_once_and_recalibrate_with_undo(client, run, images, data):
    before = client.get("/health").json()["threshold"]
    bad = client.post("/calibrate/feedback", headers=AUTH)
    assert bad.status_code == 400 and "no part has been marked good yet" in bad.text
    candidates = [*images, *sorted(data.glob("train/good/*.png"))]
    scored = client.post("/predict", files=files_of(candidates), headers=AUTH).json()["results"]
    flagged = [p for p, r in zip(candidates, scored, strict=True) if r["is_anomalous"]][:4]
    passed = [p for p, r in zip(candidates, scored, strict=True) if not r["is_anomalous"]]
    assert flagged and passed
    r = client.post("/feedback", files=files_of([*flagged, passed[0], flagged[0]]), headers=AUTH)
    assert r.status_code == 200 and r.json()["kept"] == len(flagged) and r.json()["total"] == len(flagged)
    reasons = [x.get("reason", "") for x in r.json()["results"]]
    assert reasons[len(flagged)].startswith("not flagged") and reasons[-1] == "already kept"
    index = json.loads((run / "feedback" / "feedback.json").read_text())["parts"]
    assert sorted((run / "feedback" / p["file"]).read_bytes() for p in index) == sorted(p.read_bytes() for p in flagged)
    assert client.get("/health").json()["feedback"] == len(flagged)
    first = client.post("/calibrate/feedback", headers=AUTH).json()
    again = client.post("/calibrate/feedback", headers=AUTH).json()
    assert first["marked"] == len(flagged) and again["threshold"] == first["threshold"]  # rebuilt, never stacked
    cal = json.loads((run / "calibration.json").read_text())
    assert f"{len(flagged)} parts an operator marked good" in cal["source"]
    assert client.post("/calibrate/undo", headers=AUTH).json()["threshold"] == first["threshold"]
    assert client.post("/calibrate/undo", headers=AUTH).json()["threshold"] == before
    assert client.post("/feedback/clear", headers=AUTH).json() == {"removed": len(flagged), "total": 0}
