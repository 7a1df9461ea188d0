"""`latentad serve` on a real line: the cases of the "service on a real line" issue against a live
service, each with its bound, printed as one JSON line with `pass` (and appended to --out).

- lock-out: 500 silent connections and 20 slow-body clients, all from the checking client's address;
  /health and a good /predict must answer within 2 s.
- scan bombs: two progressive JPEGs of one 6000x6000 scan repeated 20,000 times, then a good image
  2 s later: the bombs get 4xx, the good image an answer within 2 s; then SIGTERM while two bombs
  under the scan cap decode: the service must be gone within 5 s.
- strip TIFF: a 16 MB TIFF declaring 4 million strips gets 4xx with the server under 700 MB.
- feedback poisoning: a noise image (then three) marked good, /calibrate/feedback pressed twice: a
  broken bottle is still flagged.
- multi-class (with --multi RUN): /calibrate without product is 400, with it the product's threshold
  changes in predictions and /health; a noise image is routed `unknown` and flagged.
- memory: the server's peak (VmHWM) over the attacks above stays under 1 GB plus the model (the
  baseline: a fresh server that scored one image); the decode workers' peak is reported beside it.

    .venv/bin/python benchmarks/serve_line.py --run /tmp/serve_runs/bottle --multi /tmp/serve_runs/multi \
        --data ../shared/data/mvtec_ad/bottle
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from latentad.serve.formats import MAX_JPEG_SCANS
from latentad.serve.load import multipart

LATENTAD = str(Path(sys.executable).with_name("latentad"))
TOKEN = "line"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(run: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([LATENTAD, "serve", "--run", str(run), "--port", str(port), *extra],
                            env={**os.environ, "LATENTAD_TOKEN": TOKEN}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(240):
        try:
            if call(port, "GET", "/health", timeout=2)[0] == 200:
                return proc, port
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("serve did not answer /health")


def call(port: int, method: str, path: str, files=None, fields=None, timeout: float = 60.0) -> tuple[int, dict]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    if files is None and fields is None:
        c.request(method, path, headers=AUTH)
    else:
        body, ctype = multipart(files or [])
        if fields:
            b = ctype.split("boundary=")[1]
            head = b"".join(f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                            for k, v in fields.items())
            body = head + body
        c.request(method, path, body=body, headers={**AUTH, "Content-Type": ctype})
    r = c.getresponse()
    data = r.read()
    try:
        return r.status, json.loads(data)
    except ValueError:
        return r.status, {}


def timed(port: int, method: str, path: str, files=None, timeout: float = 2.0) -> tuple[object, float]:
    t0 = time.perf_counter()
    try:
        status = call(port, method, path, files, timeout=timeout)[0]
    except OSError as exc:
        status = f"no answer ({type(exc).__name__})"
    return status, round(time.perf_counter() - t0, 3)


def family(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    kids = [int(p) for p in out.split()]
    return kids + [g for k in kids for g in family(k)]


def running(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().split(") ")[1][0] not in "ZX"
    except OSError:
        return False


def peak_mb(pid: int, field: str = "VmHWM") -> float:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def workers_peak_mb(pid: int) -> float:
    """The largest peak among the service's child processes (fork server, decode workers)."""
    return max([peak_mb(p) for p in family(pid)] or [0.0])


def good_image(data: Path) -> bytes:
    return (data / "test" / "good" / "000.png").read_bytes()


def noise_png(side: int = 900, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def scan_bomb(scans: int) -> bytes:
    """A progressive 6000x6000 JPEG whose last scan is repeated until it has `scans` scans."""
    buf = io.BytesIO()
    Image.new("L", (6000, 6000), 128).save(buf, "JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xDA]
    head, last = data[:starts[-1]], data[starts[-1]:-2]
    return head + last * (scans - len(starts) + 1) + b"\xff\xd9"


def strip_tiff(strips: int = 4_000_000) -> bytes:
    """A little-endian TIFF 1 pixel wide and `strips` rows high, one row per strip."""
    entries = [(256, 4, 1, 1), (257, 4, 1, strips), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, strips, 0), (277, 3, 1, 1), (278, 4, 1, 1), (279, 4, strips, 0)]
    ifd = 8
    array = ifd + 2 + 12 * len(entries) + 4
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd) + struct.pack("<H", len(entries)))
    for tag, kind, count, value in entries:
        out += struct.pack("<HHII", tag, kind, count, array if count > 1 else value)
    out += b"\x00" * 4
    return bytes(out) + struct.pack("<I", array + 4 * strips) * strips


def lock_out(run: Path, data: Path) -> dict:
    proc, port = start(run)
    good = good_image(data)
    try:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(500)]
        stop = threading.Event()

        def slow_body() -> None:
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                      "Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 1000000\r\n\r\n"
                      '--x\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n'.encode())
            s.settimeout(0.5)
            while not stop.is_set():
                try:
                    s.sendall(b"x")
                    got = s.recv(64)
                    slow_answers.append(got)
                    break
                except TimeoutError:
                    continue
                except OSError:
                    break
            s.close()

        slow_answers: list[bytes] = []
        slow = [threading.Thread(target=slow_body, daemon=True) for _ in range(20)]
        for t in slow:
            t.start()
        time.sleep(1.0)
        health = timed(port, "GET", "/health")
        predict = timed(port, "POST", "/predict", [("good.png", good)])
        time.sleep(12.0)  # past the head deadline and the body grace
        closed = sum(1 for s in idle if s.recv(1) == b"") if all(s.settimeout(0.5) is None for s in idle) else 0
        stop.set()
        answered = [a for a in slow_answers if a.startswith(b"HTTP/1.1 408")]
        after = timed(port, "GET", "/health")
        ok = health[0] == 200 and predict[0] == 200 and health[1] < 2 and predict[1] < 2
        return {"case": "500 silent connections + 20 slow bodies", "health": health, "predict": predict,
                "silent_closed_after_12s": closed, "slow_bodies_408": len(answered), "health_after": after,
                "peak_mb": peak_mb(proc.pid), "worker_peak_mb": workers_peak_mb(proc.pid),
                "bound": "/health and /predict within 2 s", "pass": ok}
    finally:
        proc.kill()
        proc.wait()


def scan_bombs(run: Path, data: Path) -> list[dict]:
    proc, port = start(run)
    good, bomb = good_image(data), scan_bomb(20_000)
    answers: list = []
    try:
        threads = [threading.Thread(target=lambda i=i: answers.append(
            timed(port, "POST", "/predict", [(f"bomb{i}.jpg", bomb)], timeout=300))) for i in range(2)]
        for t in threads:
            t.start()
        time.sleep(2.0)
        good_answer = timed(port, "POST", "/predict", [("good.png", good)])
        for t in threads:
            t.join()
        ok = all(isinstance(s, int) and 400 <= s < 500 for s, _ in answers) and good_answer[0] == 200 \
            and good_answer[1] < 2
        first = {"case": "two 20,000-scan progressive JPEG bombs", "mb_each": round(len(bomb) / 2**20, 2),
                 "bombs": answers, "good_2s_later": good_answer, "peak_mb": peak_mb(proc.pid),
                 "worker_peak_mb": workers_peak_mb(proc.pid),
                 "bound": "bombs 4xx, good image within 2 s", "pass": ok}
    finally:
        proc.kill()
        proc.wait()
    return [first, sigterm_while_decoding(run)]


def sigterm_while_decoding(run: Path) -> dict:
    """SIGTERM while two requests of slow decodes run (bombs just under the scan cap, a CPU limit that
    lets them go on): is the service gone within 5 s?"""
    proc, port = start(run, "--decode-cpu-s", "60")
    slow = [(f"s{k}.jpg", scan_bomb(MAX_JPEG_SCANS)) for k in range(5)]
    try:
        for _ in range(2):
            threading.Thread(target=lambda: timed(port, "POST", "/predict", slow, timeout=60), daemon=True).start()
        time.sleep(1.0)
        busy = [p for p in family(proc.pid) if peak_mb(p, "VmRSS") > 0]
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        took = round(time.perf_counter() - t0, 2)
        time.sleep(1.0)
        left = [p for p in busy if running(p)]
        gone = proc.poll() is not None
        return {"case": f"SIGTERM while two requests of {MAX_JPEG_SCANS}-scan bombs decode", "exit_s": took,
                "alive": not gone, "children_left_1s_later": len(left), "bound": "gone within 5 s",
                "pass": gone and took < 5}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def tiff_strips(run: Path) -> dict:
    proc, port = start(run)
    tiff = strip_tiff()
    try:
        status, body = call(port, "POST", "/predict", [("strips.tif", tiff)], timeout=120)
        peak = peak_mb(proc.pid)
        return {"case": "TIFF declaring 4 million strips", "mb": round(len(tiff) / 2**20, 1), "answer": status,
                "detail": body.get("detail", ""), "peak_mb": peak, "worker_peak_mb": workers_peak_mb(proc.pid),
                "bound": "4xx with the server under 700 MB",
                "pass": 400 <= status < 500 and peak < 700}
    finally:
        proc.kill()
        proc.wait()


def poisoning(run: Path, data: Path, marked: int = 1) -> dict:
    copy = Path(tempfile.mkdtemp()) / "run"
    shutil.copytree(run, copy)
    proc, port = start(copy)
    broken = (data / "test" / "broken_large" / "000.png").read_bytes()
    try:
        before = call(port, "GET", "/health")[1]["threshold"]
        kept = call(port, "POST", "/feedback", [(f"noise{k}.png", noise_png(seed=k)) for k in range(marked)])[1]
        presses = [call(port, "POST", "/calibrate/feedback", fields={})[1] for _ in range(2)]
        row = call(port, "POST", "/predict", [("broken.png", broken)])[1]["results"][0]
        return {"case": f"{marked} noise image(s) marked good, /calibrate/feedback pressed twice",
                "threshold_before": before,
                "kept": kept.get("kept"), "thresholds_after": [p.get("threshold") for p in presses],
                "capped_at": presses[-1].get("capped_at"), "broken_score": row["score"],
                "broken_flagged": row["is_anomalous"], "bound": "a broken bottle is still flagged",
                "pass": row["is_anomalous"] == 1}
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(copy.parent, ignore_errors=True)


def multiclass(run: Path, data: Path) -> dict:
    copy = Path(tempfile.mkdtemp()) / "run"
    shutil.copytree(run, copy)
    proc, port = start(copy)
    goods = [(f.name, f.read_bytes()) for f in sorted((data / "train" / "good").glob("*.png"))[:30]]
    one = [("good.png", good_image(data))]
    try:
        before = call(port, "GET", "/health")[1]["products"]["bottle"]["threshold"]
        without = call(port, "POST", "/calibrate", goods, {"target_fpr": "0.05"})
        status, new = call(port, "POST", "/calibrate?product=bottle", goods, {"target_fpr": "0.05"}, timeout=300)
        given = call(port, "POST", "/predict?product=bottle", one)[1]["results"][0]
        routed = call(port, "POST", "/predict", one)[1]["results"][0]
        shown = call(port, "GET", "/health")[1]["products"]["bottle"]["threshold"]
        noise = call(port, "POST", "/predict", [("noise.png", noise_png())])[1]["results"][0]
        undo = call(port, "POST", "/calibrate/undo?product=bottle")[1]
        t = new.get("threshold")
        ok = (without[0] == 400 and status == 200 and given["threshold"] == t and routed["threshold"] == t
              and routed["category"] == "bottle" and shown == t and noise["routed"] == "unknown"
              and noise["is_anomalous"] == 1 and undo.get("threshold") == before)
        return {"case": "multi-class writes", "without_product": without[0], "detail": without[1].get("detail"),
                "threshold_before": before, "calibrated": t, "given": given["threshold"],
                "routed": [routed["category"], routed["threshold"]], "health": shown,
                "noise": [noise["routed"], noise["is_anomalous"], round(noise["route_distance"], 3)],
                "undo": undo.get("threshold"), "bound": "400 without product; the write takes effect; noise unknown",
                "pass": ok}
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(copy.parent, ignore_errors=True)


def baseline(run: Path, data: Path) -> float:
    proc, port = start(run)
    try:
        call(port, "POST", "/predict", [("good.png", good_image(data))])
        return peak_mb(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a patchcore run on bottle")
    ap.add_argument("--multi", type=Path, help="a multi-class run with bottle among its products")
    ap.add_argument("--data", type=Path, required=True, help="the MVTec bottle folder")
    ap.add_argument("--out", type=Path, help="append the JSON lines here")
    args = ap.parse_args()
    model = baseline(args.run, args.data)
    rows = [lock_out(args.run, args.data), *scan_bombs(args.run, args.data), tiff_strips(args.run),
            poisoning(args.run, args.data), poisoning(args.run, args.data, marked=3)]
    if args.multi:
        rows.append(multiclass(args.multi, args.data))
    peak = max(r.get("peak_mb", 0.0) for r in rows)
    workers = max(r.get("worker_peak_mb", 0.0) for r in rows)
    rows.append({"case": "peak memory under attack", "baseline_mb": model, "peak_mb": peak, "worker_peak_mb": workers,
                 "bound": "under 1 GB plus the model (the baseline)", "pass": peak < model + 1024})
    stamp = {"machine": platform.node() or "vm", "date": time.strftime("%Y-%m-%d")}
    for r in rows:
        line = json.dumps({**r, **stamp})
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")
    sys.exit(0 if all(r["pass"] for r in rows) else 1)


if __name__ == "__main__":
    main()
