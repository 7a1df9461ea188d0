"""Decoding in worker processes: the model's input as `predict` builds it, a decode over its CPU time
killed (and its slot refilled), a decode whose client went away stopped, and shutdown never waiting
on a decode."""

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from latentad.data.base import decode_image, to_input
from latentad.errors import DataError
from latentad.serve.decoder import Cancelled, DecodeJob, DecodePool, Ticket


def job(name: str, data: bytes) -> DecodeJob:
    return DecodeJob(name, data, (32, 32), 3, "squash", 40_000_000, 16)


@pytest.fixture
def pool():
    p = DecodePool(1, cpu_s=0.2, memory_mb=1024)
    yield p
    p.close()


def test_a_worker_decodes_as_predict_does(pool):
    img = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    out = pool.run(job("a.png", buf.getvalue()))
    want = to_input(decode_image(io.BytesIO(buf.getvalue()), "a.png", None, (32, 32)), (32, 32), 3, "squash")
    assert np.array_equal(out.tensor, want.numpy()) and out.orig_size == (40, 50) and out.preview.shape == (13, 16, 3)
    with pytest.raises(DataError, match="^cut.png: corrupt or truncated"):
        pool.run(job("cut.png", buf.getvalue()[:200]))


def test_a_decode_over_its_cpu_time_is_killed_and_the_slot_refilled(pool, slow_jpeg):
    t0 = time.perf_counter()
    # killed by the kernel at its CPU time, or by us at the wall-clock deadline on a busy machine
    with pytest.raises(DataError, match=r"^slow.jpg: refused, decoding (used more than 0.2 s of CPU|took more than)"):
        pool.run(job("slow.jpg", slow_jpeg))
    assert time.perf_counter() - t0 < pool.wall_s + 0.5 and pool.killed == 1
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    assert pool.run(job("next.png", buf.getvalue())).orig_size == (8, 8)  # a fresh worker took the slot


def test_a_decode_whose_client_went_away_is_stopped_and_close_does_not_wait(pool, slow_jpeg):
    ticket, errors = Ticket(), []

    def run():
        try:
            pool.run(job("slow.jpg", slow_jpeg), ticket)
        except Exception as exc:  # noqa: BLE001 (what the waiting request would see)
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)
    t0 = time.perf_counter()
    ticket.cancel()
    t.join(5)
    assert isinstance(errors[0], Cancelled) and time.perf_counter() - t0 < 1.0
    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)
    workers = [w.process for w in pool.workers]
    t0 = time.perf_counter()
    pool.close()  # what SIGTERM comes to: the decode in progress is killed
    t.join(5)
    assert not t.is_alive() and time.perf_counter() - t0 < 2.0
    assert workers and not any(p.is_alive() for p in workers)
