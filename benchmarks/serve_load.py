"""`latentad serve` under load against offline `latentad predict`, measured in one run.

Fits RUN (patchcore on DATA) unless it exists, times `latentad predict --overlays none` on DATA's
test images (offline throughput, best of 2), then starts `latentad serve` on loopback with a token
and runs CLIENTS concurrent clients for SECONDS per phase: good images with no pixel decisions in
the answers (`?masks=none`), with regions (the default), with regions and each defect mask as a PNG
(`?masks=png`), and with a share of the uploads truncated (each must be refused with 400); every
good answer must carry the score `predict` gave the same file (relative 1e-4). Prints one JSON line
per phase.

    .venv/bin/python benchmarks/serve_load.py --data ../shared/data/mvtec_ad/bottle --clients 8 --seconds 60
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from latentad.serve.load import run_load

LATENTAD = str(Path(sys.executable).with_name("latentad"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/mvtec_ad/bottle")
    ap.add_argument("--method", default="patchcore")
    ap.add_argument("--run", type=Path, default=Path("runs/serve_load/patchcore"))
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--corrupt-share", type=float, default=0.2)
    ap.add_argument("--out", type=Path, default=None, help="append the JSON lines to this file")
    args = ap.parse_args()
    data = Path(args.data)
    files = sorted(data.glob("test/*/*.png"))
    if not (args.run / "model" / "detector.json").is_file():
        subprocess.run([LATENTAD, "fit", "--method", args.method, "--data", str(data), "--out", str(args.run),
                        "--force"], check=True, capture_output=True)
    offline = float("inf")
    for k in range(2):
        t0 = time.perf_counter()
        subprocess.run([LATENTAD, "predict", "--run", str(args.run), "--out", str(args.run.parent / f"pred{k}"),
                        "--overlays", "none", str(data / "test")], check=True, capture_output=True)
        offline = min(offline, time.perf_counter() - t0)
    offline_img_s = len(files) / offline
    expected = {f"{Path(r['path']).parent.name}_{Path(r['path']).name}": float(r["score"])
                for r in csv.DictReader(open(args.run.parent / "pred0" / "scores.csv"))}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([LATENTAD, "serve", "--run", str(args.run), "--port", str(port)],
                              env={**os.environ, "LATENTAD_TOKEN": "bench"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(base + "/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        images = [(f"{f.parent.name}_{f.name}", f.read_bytes()) for f in files]
        run_load(base, images[:8], 2, 3.0, "bench")  # warm-up, not reported
        phases = [("good, no masks", 0.0, "masks=none"), ("good, regions", 0.0, ""),
                  ("good, regions + mask PNG", 0.0, "masks=png"),
                  (f"{args.corrupt_share:.0%} corrupt", args.corrupt_share, "")]
        for phase, share, query in phases:
            report = run_load(base, images, args.clients, args.seconds, "bench", share, expected=expected, query=query)
            row = {"phase": phase, **report.summary(),
                   "scores_equal_predict": report.good_scored == report.good_sent,
                   "offline_predict_img_s": round(offline_img_s, 2),
                   "ratio_to_offline": round(report.good_scored / report.seconds / offline_img_s, 3),
                   "first_failures": report.failures[:3], "method": args.method, "data": str(data),
                   "machine": platform.node(), "date": time.strftime("%Y-%m-%d")}
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
        health = json.loads(urllib.request.urlopen(base + "/health", timeout=10).read())
        print(json.dumps({"health_at_end": health}))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
