"""The service under attack, at small scale: cross-origin writes, a wrong Host, bodies and pixels over
their caps, waiters that vanish, a model that raises for one image, no path on /health, too few
images for a recalibration, and SIGKILL while the calibration is written."""

import http.client
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from latentad.calibration import Calibration
from latentad.cli import app as cli
from latentad.serve.app import create_app
from latentad.serve.batcher import Batcher, ItemFailed, Job
from latentad.serve.options import serve_token

LOCAL = "http://127.0.0.1"


def files_of(paths):
    return [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]


@pytest.fixture
def open_client(run):
    """A service without a token, as `latentad serve` starts by default (loopback)."""
    api = create_app(run)
    with TestClient(api, base_url=LOCAL) as c:
        yield c
    api.state.service.close()


def test_cross_origin_writes_are_refused_and_the_threshold_stays(open_client, data):
    normals = files_of(sorted(data.glob("train/good/*.png")))
    before = open_client.get("/health").json()["threshold"]
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": "http://127.0.0.1:9999"}):  # another port is another origin
        r = open_client.post("/calibrate", files=normals, data={"target_fpr": "0.3"}, headers=headers)
        assert r.status_code == 403 and "\n" not in r.json()["detail"], (headers, r.text)
        assert open_client.post("/calibrate/undo", headers=headers).status_code == 403
    assert open_client.get("/health").json()["threshold"] == before
    r = open_client.post("/calibrate", files=normals, data={"target_fpr": "0.3"}, headers={"Origin": LOCAL})
    assert r.status_code == 200, r.text  # the service's own page (same origin) may write
    assert open_client.post("/calibrate", files=normals, data={"target_fpr": "0.3"}).status_code == 200  # curl


def test_a_page_under_another_host_name_is_refused_and_allowed_origins_pass(run, data):
    """DNS rebinding: evil.example resolving to 127.0.0.1 sends `Host: evil.example`."""
    api = create_app(run, allow_origins=["https://line.example"])
    one = files_of(sorted(data.glob("test/good/*.png"))[:1])
    with TestClient(api, base_url="http://evil.example") as c:
        assert c.get("/health").status_code == 421
    with TestClient(api, base_url=LOCAL) as c:
        assert c.post("/predict", files=one, headers={"Origin": "https://line.example"}).status_code == 200
    with TestClient(api, base_url="https://line.example") as c:
        assert c.get("/health").status_code == 200
    api.state.service.close()
    wild = create_app(run, token="s3cret", bind="0.0.0.0")
    with TestClient(wild, base_url="http://inspect.plant.lan") as c:  # any name reaches a wildcard bind
        assert c.get("/health").status_code == 200
    wild.state.service.close()


def test_health_shows_no_path_and_a_failure_answers_only_a_request_id(open_client, run, data, caplog):
    text = open_client.get("/health").text
    assert str(run) not in text and "/" not in json.loads(text)["method"]
    h = json.loads(text)
    assert h["status"] == "ok" and h["model_thread"] == {"alive": True, "restarts": 0}

    service = open_client.app.state.service
    real = service._predict

    def flaky(uploads):  # the model raises on one image only
        if any(u.name == "boom.png" for u in uploads):
            raise RuntimeError(f"secret detail {run}")
        return real(uploads)

    service._predict = flaky
    good = sorted(data.glob("test/good/*.png"))[0].read_bytes()
    files = [("files", (n, good, "image/png")) for n in ("a.png", "boom.png", "c.png")]
    rows = open_client.post("/predict", files=files).json()["results"]
    assert [r["filename"] for r in rows] == ["a.png", "boom.png", "c.png"]
    assert "score" in rows[0] and "score" in rows[2] and "request id" in rows[1]["error"]
    assert "secret" not in rows[1]["error"]
    r = open_client.post("/predict", files=[("files", ("boom.png", good, "image/png"))])
    assert r.status_code == 500 and "request id" in r.json()["detail"] and "secret" not in r.text
    rid = r.json()["detail"].split("request id ")[1].rstrip(")")
    assert any(rid in rec.getMessage() and "secret detail" in rec.getMessage() for rec in caplog.records)
    assert open_client.get("/health").json()["status"] == "ok"


def test_a_recalibration_needs_enough_images_for_its_target(open_client, data):
    normals = sorted(data.glob("train/good/*.png"))
    before = open_client.get("/health").json()["threshold"]
    r = open_client.post("/calibrate", files=files_of(normals[:1]), data={"target_fpr": "0.01"})
    assert r.status_code == 400 and "at least 100" in r.json()["detail"], r.text
    r = open_client.post("/calibrate", files=files_of(normals[:3]), data={"target_fpr": "0.25"})
    assert r.status_code == 400 and "at least 4" in r.json()["detail"]
    assert open_client.get("/health").json()["threshold"] == before
    assert open_client.post("/calibrate", files=files_of(normals[:4]), data={"target_fpr": "0.25"}).status_code == 200


@pytest.mark.parametrize("limit, fits, flag", [
    ({"max_request_mpix": 0.01}, 2, "--max-request-mpix"),  # 64x64 images: 4096 px each
    ({"memory_budget_mb": 0.1}, 1, "--memory-budget-mb"),  # one 64x64 input (48 KB) fits, three do not
])
def test_pixels_and_decoded_bytes_of_a_request_are_bounded(run, data, limit, fits, flag):
    good = files_of(sorted(data.glob("test/good/*.png"))[:3])
    api = create_app(run, **limit)
    with TestClient(api, base_url=LOCAL) as c:
        assert c.post("/predict", files=good[:fits]).status_code == 200
        r = c.post("/predict", files=good)
        assert r.status_code == 413 and flag in r.json()["detail"]
        assert api.state.service.budget.held == 0
    api.state.service.close()


def test_uploads_are_reduced_to_the_input_right_after_decoding(run, data):
    api = create_app(run)
    big = Image.open(sorted(data.glob("test/good/*.png"))[0]).resize((640, 640))
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    service = api.state.service
    up = service.prepare("big.png", buf.getvalue(), False, service.pixel_count(), service.budget.hold())
    assert tuple(up.tensor.shape[-2:]) == service.detector.input_shape and up.orig_size == (640, 640)
    assert up.preview is None and up.nbytes == up.tensor.numel() * 4
    api.state.service.close()


def chunked_post(port: int, total_mb: int, token: str) -> tuple[object, int]:
    """Stream `total_mb` MB as a chunked multipart body; (answer status or 'closed', MB sent)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    b = uuid.uuid4().hex
    c.putrequest("POST", "/predict")
    c.putheader("Authorization", f"Bearer {token}")
    c.putheader("Content-Type", f"multipart/form-data; boundary={b}")
    c.putheader("Transfer-Encoding", "chunked")
    c.endheaders()
    head = f'--{b}\r\nContent-Disposition: form-data; name="files"; filename="x.png"\r\n\r\n'.encode()
    chunk, sent = os.urandom(1 << 20), 0
    try:
        c.send(f"{len(head):X}\r\n".encode() + head + b"\r\n")
        for _ in range(total_mb):
            c.send(f"{len(chunk):X}\r\n".encode() + chunk + b"\r\n")
            sent += 1
        c.send(b"0\r\n\r\n")
        return c.getresponse().status, sent
    except OSError:
        return "closed", sent


def test_a_chunked_body_over_the_cap_is_cut_while_it_streams(server_factory):
    base, api, port = server_factory(max_request_mb=2)
    status, sent = chunked_post(port, 64, "s3cret")
    print("chunked:", status, sent)
    assert status == "closed" or (status == 413 and sent < 64), (status, sent)
    if status == "closed":
        assert sent < 64
    assert json.loads(urllib_get(base + "/health"))["status"] == "ok"


def urllib_get(url: str) -> bytes:
    import urllib.request

    return urllib.request.urlopen(url, timeout=10).read()


def test_a_cancelled_waiter_does_not_kill_the_model_thread():
    gate, started = threading.Event(), threading.Event()

    def score(items):
        started.set()
        gate.wait(5)
        return [x * 2 for x in items]

    b = Batcher(score, batch_size=1, max_wait_s=0.0)
    released = []
    first = b.submit(Job(items=[1]))
    started.wait(5)
    gone = b.submit(Job(items=[2], on_done=lambda: released.append("gone")))
    assert gone.cancel()  # the client went away while its job waited
    gate.set()
    assert first.result(5) == [2]
    assert b.submit(Job(items=[3])).result(5) == [6]
    assert b.alive and b.restarts == 0 and released == ["gone"]
    b.close()


def test_one_failing_item_fails_only_its_own_result():
    def score(items):
        if "bad" in items:
            raise ValueError("cannot score bad")
        return [f"ok:{x}" for x in items]

    b = Batcher(score, batch_size=8, max_wait_s=0.2)
    jobs = [b.submit(Job(items=items)) for items in (["a", "bad"], ["c"])]
    first, second = (j.result(5) for j in jobs)
    assert first[0] == "ok:a" and isinstance(first[1], ItemFailed) and second == ["ok:c"]
    b.close()


def test_a_dead_model_loop_is_restarted_and_counted():
    calls = []

    def score(items):
        calls.append(items)
        if len(calls) == 1:
            raise SystemExit("the loop dies")  # not an Exception: escapes the item isolation
        return items

    b = Batcher(score, batch_size=1, max_wait_s=0.0)
    with pytest.raises(SystemExit):
        b.submit(Job(items=[1])).result(5)
    assert b.submit(Job(items=[2])).result(5) == [2]
    assert b.restarts == 1 and b.alive
    b.close()


def test_sigkill_while_recalibrating_always_leaves_a_calibration_that_loads(tmp_path):
    path = tmp_path / "calibration.json"
    Calibration(1.0, 0.01, 0.0, 1.0, 100, "start").save(path)
    writer = textwrap.dedent(f"""
        from latentad import io
        from latentad.calibration import Calibration
        k = 0
        while True:
            k += 1
            io.write_bytes({str(tmp_path / 'calibration.prev.json')!r}, open({str(path)!r}, 'rb').read())
            Calibration(float(k), 0.01, 0.0, 1.0, 100 + k, "loop" * 200).save({str(path)!r})
    """)
    for delay in (0.3, 0.45, 0.6):
        proc = subprocess.Popen([sys.executable, "-c", writer])
        time.sleep(delay + 0.5)  # the import, then writes in a loop
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        cal = Calibration.load(path)
        assert cal.image_threshold >= 1.0 and cal.n_images >= 100


def test_the_token_comes_from_a_file_and_off_loopback_needs_one(run, tmp_path):
    secret = tmp_path / "token"
    secret.write_text("from-a-file\n")
    assert serve_token(None, secret) == "from-a-file" and serve_token("flag", None) == "flag"
    res = CliRunner().invoke(cli, ["serve", "--run", str(run), "--host", "0.0.0.0", "--port", "8911"],
                             env={"LATENTAD_TOKEN": ""})
    assert res.exit_code == 2 and "needs a token" in res.output
    res = CliRunner().invoke(cli, ["serve", "--run", str(run), "--token-file", str(tmp_path / "none")])
    assert res.exit_code == 2 and "--token-file" in res.output
    res = CliRunner().invoke(cli, ["serve", "--run", str(run), "--allow-origin", "line.example"])
    assert res.exit_code == 2 and "--allow-origin" in res.output


def test_a_bad_image_among_good_ones_fails_only_its_row(open_client, data):
    good = sorted(data.glob("test/good/*.png"))[0].read_bytes()
    arr = np.zeros((8, 8), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    files = [("files", ("g.png", good, "image/png")), ("files", ("cut.png", buf.getvalue()[:20], "image/png"))]
    r = open_client.post("/predict", files=files)
    assert r.status_code == 200, r.text
    rows = r.json()["results"]
    assert "score" in rows[0] and rows[1]["error"].startswith("cut.png") and "score" not in rows[1]
    r = open_client.post("/predict", files=files[1:])  # every file failed: the request fails
    assert r.status_code == 400 and r.json()["detail"].startswith("cut.png")
