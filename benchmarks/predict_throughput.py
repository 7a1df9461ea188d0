"""Throughput of `latentad predict` against the work it cannot avoid, measured in one run.

For each method (fitted on DATA's train/good unless --runs-dir holds it), on DATA's test images:
  (a) `latentad predict --overlays none` as a whole process, files to scores.csv;
  (a') the same with the exported ONNX graph (`--engine onnxruntime`);
  (b) a bare loop as a whole process too (Python start, torch import, backbone build included, as
      for (a)): decode + resize the same files (PIL, main thread), run the detector's own backbone
      (its truncated feature extractor) forward, batch 16; also timed inside this process (b_inproc);
  (c) that backbone forward alone, in this process, on tensors decoded beforehand;
  (d) `latentad predict` with its default outputs (an overlay and a mask per image, regions.csv)
      against (e) scores only (`--overlays none --no-masks`): what writing the results costs.
Rounds are interleaved and each figure is the best of --rounds. Prints one JSON line per method.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/predict_throughput.py --data ../shared/data/mvtec_ad/bottle
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

LATENTAD = str(Path(sys.executable).with_name("latentad"))


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"failed ({(r.stderr or r.stdout).strip().splitlines()[-1:]}): {' '.join(cmd)}")
    return time.perf_counter() - t0


def decode(path: Path, shape: tuple[int, int]) -> torch.Tensor:
    img = Image.open(path).convert("RGB").resize((shape[1], shape[0]), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


def bare_loop(files: list[Path], extractor, shape, batch: int = 16) -> float:
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(files), batch):
            x = torch.stack([decode(f, shape) for f in files[i:i + batch]]).float().div(255)
            extractor(x)
    return time.perf_counter() - t0


BARE = """
import sys, numpy as np, torch
from PIL import Image
from latentad.backbones import load_backbone
name, levels, h, w = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), int(sys.argv[4])
fx = load_backbone(name, levels)
files = sys.argv[5:]
def load(f):
    img = Image.open(f).convert("RGB").resize((w, h), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)
with torch.inference_mode():
    for i in range(0, len(files), 16):
        fx(torch.stack([load(f) for f in files[i:i + 16]]).float().div(255))
"""


def forward_only(tensors: list[torch.Tensor], extractor) -> float:
    t0 = time.perf_counter()
    with torch.inference_mode():
        for x in tensors:
            extractor(x)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/mvtec_ad/bottle")
    ap.add_argument("--methods", nargs="+", default=["patchcore", "padim"])
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/throughput"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="append the JSON lines to this file")
    args = ap.parse_args()

    from latentad.runs import load_run

    data = Path(args.data)
    files = sorted(data.glob("test/*/*.png"))
    if not files:
        raise SystemExit(f"{data}: no test/*/*.png files")
    for method in args.methods:
        run, exp = args.runs_dir / method, args.runs_dir / f"{method}-onnx"
        if not (run / "model" / "detector.json").is_file():
            timed([LATENTAD, "fit", "--method", method, "--data", str(data), "--out", str(run), "--force"])
        if not (exp / "model.onnx").is_file():
            timed([LATENTAD, "export", "--run", str(run), "--out", str(exp)])
        _, det, _ = load_run(run)
        fx, shape = det.extractor, det.input_shape
        tensors = [torch.stack([decode(f, shape) for f in files[i:i + 16]]).float().div(255)
                   for i in range(0, len(files), 16)]
        bare = [sys.executable, "-c", BARE, det.config.backbone, ",".join(det.levels), str(shape[0]), str(shape[1]),
                *map(str, files)]
        a = a_onnx = b = b_in = c = d = e = float("inf")
        predict = [LATENTAD, "predict", "--run", str(run), str(data / "test"), "--out"]
        for _ in range(args.rounds):
            d = min(d, timed([*predict, str(args.runs_dir / f"pred-{method}-outputs")]))
            e = min(e, timed([*predict, str(args.runs_dir / f"pred-{method}-scores"), "--overlays", "none",
                              "--no-masks"]))
            a = min(a, timed([LATENTAD, "predict", "--run", str(run), "--out", str(args.runs_dir / f"pred-{method}"),
                              "--overlays", "none", str(data / "test")]))
            a_onnx = min(a_onnx, timed([LATENTAD, "predict", "--run", str(exp), "--engine", "onnxruntime", "--out",
                                        str(args.runs_dir / f"pred-{method}-onnx"), "--overlays", "none",
                                        str(data / "test")]))
            b = min(b, timed(bare))
            b_in = min(b_in, bare_loop(files, fx, shape))
            c = min(c, forward_only(tensors, fx))
        n = len(files)
        row = {"method": method, "images": n, "input": list(shape), "threads": torch.get_num_threads(),
               "predict_img_s": n / a, "predict_onnx_img_s": n / a_onnx, "bare_decode_forward_img_s": n / b,
               "bare_in_process_img_s": n / b_in, "forward_img_s": n / c, "ratio_a_b": b / a, "ratio_a_c": c / a,
               "ratio_onnx_b": b / a_onnx, "predict_outputs_img_s": n / d, "predict_scores_only_img_s": n / e,
               "ratio_outputs_scores": e / d,
               "machine": platform.node(), "date": time.strftime("%Y-%m-%d")}
        line = json.dumps(row)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(line + "\n")


if __name__ == "__main__":
    main()
