"""`latentad serve` under the attacks its memory budget is for, at full scale: the server's peak
memory (VmHWM, a fresh server per attack) and what each attack was answered.

Attacks: a 1 GB chunked body; one request of 64 flat 6300x6300 PNGs (each under the 40-megapixel
limit, a few MB on the wire); 24 clients that vanish mid-request, then one good request; a
cross-origin recalibration. The baseline is a fresh server that scored one image. Fits RUN
(patchcore on DATA) unless it exists. Prints one JSON line per attack (and appends it to --out).

    .venv/bin/python benchmarks/serve_attacks.py --data ../shared/data/mvtec_ad/bottle
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import random
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

from PIL import Image
from serve_line import AUTH, LATENTAD, TOKEN, start  # the sibling script: one way to start a service

from latentad.serve.load import multipart


def peak_gb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def post(port: int, path: str, files: list[tuple[str, bytes]], headers: dict, timeout: float = 600) -> int | str:
    body, ctype = multipart(files)
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("POST", path, body=body, headers={"Content-Type": ctype, **headers})
        r = c.getresponse()
        r.read()
        return r.status
    except OSError:
        return "closed"


def chunked_gb(port: int) -> dict:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    b = uuid.uuid4().hex
    c.putrequest("POST", "/predict")
    for k, v in {**AUTH, "Content-Type": f"multipart/form-data; boundary={b}", "Transfer-Encoding": "chunked"}.items():
        c.putheader(k, v)
    c.endheaders()
    chunk, sent = os.urandom(1 << 20), 0
    try:
        head = f'--{b}\r\nContent-Disposition: form-data; name="files"; filename="x.png"\r\n\r\n'.encode()
        c.send(f"{len(head):X}\r\n".encode() + head + b"\r\n")
        for _ in range(1024):
            c.send(f"{len(chunk):X}\r\n".encode() + chunk + b"\r\n")
            sent += 1
        c.send(b"0\r\n\r\n")
        status = c.getresponse().status
    except OSError:
        status = "closed"
    return {"answer": status, "mb_sent": sent}


def bombs(port: int) -> dict:
    buf = io.BytesIO()
    Image.new("RGB", (6300, 6300), (90, 90, 90)).save(buf, "PNG")
    t0 = time.perf_counter()
    status = post(port, "/predict", [(f"b{i}.png", buf.getvalue()) for i in range(64)], AUTH)
    return {"answer": status, "mb_on_wire": round(64 * len(buf.getvalue()) / 2**20, 1),
            "seconds": round(time.perf_counter() - t0, 2)}


def vanishing(port: int, good: bytes) -> dict:
    def client() -> None:
        body, ctype = multipart([("g.png", good)] * 4)
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                  f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(random.uniform(0.0, 0.3))
        s.close()

    threads = [threading.Thread(target=client) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(1)
    return {"next_request": post(port, "/predict", [("g.png", good)], AUTH, 60)}


def cross_origin(port: int, normals: list[tuple[str, bytes]]) -> dict:
    return {"answer": post(port, "/calibrate", normals, {"Origin": "http://evil.example"})}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/mvtec_ad/bottle")
    ap.add_argument("--run", type=Path, default=Path("runs/serve_load/patchcore"))
    ap.add_argument("--out", type=Path, default=None, help="append the JSON lines to this file")
    args = ap.parse_args()
    data = Path(args.data)
    if not (args.run / "model" / "detector.json").is_file():
        subprocess.run([LATENTAD, "fit", "--method", "patchcore", "--data", str(data), "--out", str(args.run),
                        "--force"], check=True, capture_output=True)
    good = sorted(data.glob("test/good/*.png"))[0].read_bytes()
    normals = [(p.name, p.read_bytes()) for p in sorted(data.glob("train/good/*.png"))[:40]]
    attacks = {"baseline (one good image)": lambda p: {"answer": post(p, "/predict", [("g.png", good)], AUTH)},
               "1 GB chunked body": chunked_gb, "64 x 6300x6300 PNG in one request": bombs,
               "24 clients vanish mid-request": lambda p: vanishing(p, good),
               "cross-origin /calibrate": lambda p: cross_origin(p, normals)}
    for name, attack in attacks.items():
        proc, port = start(args.run)
        try:
            row = {"attack": name, **attack(port), "alive": proc.poll() is None, "peak_gb": round(peak_gb(proc.pid), 2),
                   "data": str(data), "machine": platform.node(), "date": time.strftime("%Y-%m-%d")}
        finally:
            proc.kill()
            proc.wait()
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
