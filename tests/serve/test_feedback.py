"""Feedback that cannot switch detection off: a noise image marked good lifts the threshold no higher
than the calibration's top score allows (unless forced), pressing twice changes nothing, the store is
bounded, written off the event loop, and /feedback decodes through the same slots as /predict."""

import asyncio
import io
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from latentad.calibration import Calibration
from latentad.serve.app import create_app
from latentad.serve.calibrations import feedback_ceiling, with_feedback
from latentad.serve.feedback import FeedbackStore
from latentad.serve.load import post
from latentad.serve.service import DECODE_SLOTS

AUTH = {"Authorization": "Bearer s3cret"}


def noise(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def client(run):
    api = create_app(run, token="s3cret")
    with TestClient(api, base_url="http://127.0.0.1") as c:
        yield c
    api.state.service.close()


def test_noise_marked_good_cannot_switch_detection_off(client, images, data):
    normals = [("files", (p.name, p.read_bytes(), "image/png")) for p in sorted(data.glob("train/good/*.png"))]
    before = client.post("/calibrate", files=normals, data={"target_fpr": "0.1"}, headers=AUTH).json()["threshold"]
    defects = [p for p in images if not p.name.startswith("good")]
    scores = [r["score"] for r in client.post("/predict", files=[("files", (p.name, p.read_bytes(), "image/png"))
                                                                  for p in defects], headers=AUTH).json()["results"]]
    marked = [("files", (f"noise{k}.png", noise(k), "image/png")) for k in range(3)]
    r = client.post("/feedback", files=marked, headers=AUTH)
    assert r.json()["kept"] == 3, r.text  # flagged, so kept
    first = client.post("/calibrate/feedback", headers=AUTH).json()
    second = client.post("/calibrate/feedback", headers=AUTH).json()
    assert first["threshold"] == second["threshold"] and "capped_at" in first and "force" in first["warning"]
    cal = client.app.state.service.calibrations.get(None)
    assert first["threshold"] == pytest.approx(feedback_ceiling(cal)) and len(cal.normal_scores) == len(normals)
    again = client.post("/predict", files=[("files", (p.name, p.read_bytes(), "image/png")) for p in defects],
                        headers=AUTH)
    still = [r["is_anomalous"] for r in again.json()["results"]]
    assert sum(still) == sum(s > first["threshold"] for s in scores) > 0
    forced = client.post("/calibrate/feedback?force=true", headers=AUTH).json()
    assert forced["threshold"] > first["threshold"] and "capped_at" not in forced
    for want in (second["threshold"], first["threshold"], before):  # undo walks back every write
        assert client.post("/calibrate/undo", headers=AUTH).json()["threshold"] == want


def test_feedback_is_rebuilt_from_its_base_and_capped():
    base = Calibration(9.0, 0.01, None, None, 10, "ten", 1 / 11, None, None, 4.5, [float(v) for v in range(10)])
    assert feedback_ceiling(base) == pytest.approx(9 + 0.25 * 4.5)
    cal, capped = with_feedback(base, [100.0], force=False)
    assert cal.image_threshold == capped == pytest.approx(10.125) and cal.normal_scores == base.normal_scores
    again, _ = with_feedback(base, [100.0], force=False)
    assert again == cal  # the same base and parts: the same calibration, however often
    lifted, capped = with_feedback(base, [100.0], force=True)
    assert capped is None and lifted.image_threshold > 10.125 and lifted.n_images == 11


def test_the_store_is_bounded_and_keeps_an_image_once_per_product(tmp_path):
    from latentad.serve.feedback import FeedbackFull

    store = FeedbackStore(tmp_path, max_parts=2, max_bytes=1 << 20)
    assert store.keep("a.png", b"a", 1.0, "bottle", 0.5) and not store.keep("a2.png", b"a", 1.0, "bottle", 0.5)
    assert store.keep("a.png", b"a", 1.0, "tile", 0.5)  # another product's judgement
    with pytest.raises(FeedbackFull, match="2 parts"):
        store.keep("c.png", b"c", 1.0, "bottle", 0.5)
    assert [p["product"] for p in FeedbackStore(tmp_path).entries()] == ["bottle", "tile"]  # on disk
    big = FeedbackStore(tmp_path / "b", max_bytes=10)
    with pytest.raises(FeedbackFull, match="MB"):
        big.keep("big.png", bytes(11), 1.0, None, 0.5)


def test_feedback_is_written_off_the_event_loop(client, monkeypatch):
    service = client.app.state.service
    where, real = [], service.feedback.keep

    def keep(*args):
        try:
            asyncio.get_running_loop()
            where.append("event loop")
        except RuntimeError:
            where.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(service.feedback, "keep", keep)
    r = client.post("/feedback", files=[("files", ("noise.png", noise(), "image/png"))], headers=AUTH)
    assert r.status_code == 200 and where and "event loop" not in where


def test_feedback_decodes_within_the_decode_slots(server_factory, images, monkeypatch):
    base, api, _ = server_factory()
    service, lock, now, most = api.state.service, threading.Lock(), [0], [0]
    real = service.prepare

    def prepare(*args):
        with lock:
            now[0] += 1
            most[0] = max(most[0], now[0])
        try:
            return real(*args)
        finally:
            with lock:
                now[0] -= 1

    monkeypatch.setattr(service, "prepare", prepare)
    files = [(p.name, p.read_bytes()) for p in images[:3]]
    with ThreadPoolExecutor(6) as ex:
        answers = list(ex.map(lambda _: post(base + "/feedback", files, "s3cret")[0], range(6)))
    assert answers == [200] * 6 and 1 <= most[0] <= DECODE_SLOTS
