"""Connection-level limits on a live server: silent and slow connections cost a socket, not the
service (/health and /predict still answer), a silent connection is closed after the head deadline,
a slow body gets 408, and a decode whose client went away is stopped."""

import json
import socket
import threading
import time
import urllib.request

import pytest

from latentad.serve import limits
from latentad.serve.load import post


@pytest.fixture
def quick_limits(monkeypatch):
    """The deadlines of `serve.limits`, short enough for a test."""
    monkeypatch.setattr(limits.HeadDeadline, "header_timeout", 1.0)
    monkeypatch.setattr(limits, "BODY_GRACE_S", 1.0)


def slow_body(port: int, stop: threading.Event, answers: list) -> None:
    """Headers, then a body at one byte per 0.2 s; the answer (if any) is kept."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer s3cret\r\n"
              b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 100000\r\n\r\n"
              b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n')
    s.settimeout(0.2)
    got = b""
    while not stop.is_set():
        try:
            s.sendall(b"x")
            got += s.recv(4096)
            if got:
                break
        except TimeoutError:
            continue
        except OSError:
            break
    s.settimeout(2.0)
    while got and not got.endswith(b"}"):  # the rest of the answer
        more = s.recv(4096)
        if not more:
            break
        got += more
    answers.append(got)
    s.close()


def test_silent_and_slow_connections_do_not_lock_the_service_out(server_factory, images, quick_limits):
    base, api, port = server_factory()
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]  # more than the old cap of 128
    stop, answers = threading.Event(), []
    slow = [threading.Thread(target=slow_body, args=(port, stop, answers)) for _ in range(5)]
    for t in slow:
        t.start()
    time.sleep(0.3)
    t0 = time.perf_counter()
    assert json.loads(urllib.request.urlopen(base + "/health", timeout=2).read())["status"] == "ok"
    status, out = post(base + "/predict", [(images[0].name, images[0].read_bytes())], "s3cret", timeout=2)
    assert status == 200 and time.perf_counter() - t0 < 2.0, out
    time.sleep(2.0)  # past the head deadline and the body's grace
    for s in silent:
        s.settimeout(1.0)
    assert sum(s.recv(1) == b"" for s in silent) == 300  # closed by the server
    stop.set()
    for t in slow:
        t.join(5)
    assert len(answers) == 5 and all(a.startswith(b"HTTP/1.1 408") and b"too slow" in a for a in answers), answers


def test_a_decode_whose_client_went_away_is_stopped(server_factory, slow_jpeg):
    base, api, port = server_factory(decode_cpu_s=60)
    from latentad.serve.load import multipart

    body, ctype = multipart([("slow.jpg", slow_jpeg)])
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer s3cret\r\n"
              f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    time.sleep(0.5)
    s.close()  # the client gives up while its image decodes
    pool = api.state.service.decoders
    for _ in range(30):
        if pool.cancelled:
            break
        time.sleep(0.1)
    assert pool.cancelled == 1 and api.state.service.budget.held == 0


def descendants(pid: int) -> list[int]:
    import subprocess

    kids = [int(p) for p in subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                                           text=True).stdout.split()]
    return kids + [g for k in kids for g in descendants(k)]


def running(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().split(") ")[1][0] not in "ZX"
    except OSError:
        return False


def test_sigterm_while_images_decode_stops_the_service_and_its_workers_within_seconds(run, slow_jpeg):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(Path(sys.executable).with_name("latentad")), "serve", "--run", str(run), "--port",
                             str(port), "--decode-cpu-s", "60"], env={**os.environ, "LATENTAD_TOKEN": "s3cret"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        slow = [(f"slow{k}.jpg", slow_jpeg) for k in range(3)]
        threading.Thread(target=post, args=(f"http://127.0.0.1:{port}/predict", slow, "s3cret"), daemon=True).start()
        time.sleep(1.0)
        workers = descendants(proc.pid)
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        assert time.perf_counter() - t0 < 6.0  # drained: requests cancelled after 3 s, decodes killed
        for _ in range(50):  # the fork server and the decode workers follow
            if not [p for p in workers if running(p)]:
                break
            time.sleep(0.1)
        assert len(workers) >= 3 and not [p for p in workers if running(p)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
