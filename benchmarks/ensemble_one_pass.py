"""What the shared backbone pass buys an auto run, measured in one run on one machine.

For a fitted run (the default `fit --method auto` on bottle):
  (a) `latentad predict --overlays none --no-masks` on DATA/test as a whole process, with sharing (the
      default) and with `LATENTAD_SHARED_PASS=0`, rounds interleaved (A B A B ...): images per second
      of each (median over rounds), the ratio pair by pair (median), and the largest relative score
      difference between the two;
  (b) `latentad evaluate` likewise (seconds, ratio);
  (c) `latentad export --to onnx` (and openvino, with --engines): large constants stored more than
      once in model.onnx (0 expected), the model's size, and each engine against torch on the real test
      images: scores and verdicts through the CLI on every image (relative to the scores' scale and
      elementwise, the export checks' measure), scores and maps in this process on the first --check
      images.
Prints one JSON object.

    .venv/bin/python benchmarks/ensemble_one_pass.py --run /tmp/op/auto \\
        --data /work/shared/data/mvtec_ad/bottle --rounds 3
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

LATENTAD = str(Path(sys.executable).with_name("latentad"))
EXTS = {".png", ".jpg", ".jpeg", ".bmp"}


def timed(cmd: list[str], shared: bool) -> float:
    env = {**os.environ, "LATENTAD_SHARED_PASS": "1" if shared else "0"}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(f"failed ({(r.stderr or r.stdout).strip().splitlines()[-1:]}): {' '.join(cmd)}")
    return time.perf_counter() - t0


def scores(path: Path) -> dict[str, float]:
    return {r["path"]: float(r["score"]) for r in csv.DictReader(open(path))}


def scale_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max|a - b| / max|a|: the difference against the array's scale. The ensemble's standardised
    scores and maps sit around 0, where an elementwise relative difference measures nothing."""
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(float(np.abs(a).max()), 1e-12))


def elementwise(a: dict[str, float], b: dict[str, float]) -> float:
    """max over images of |a - b| / max(|a|, |b|, 1e-6): the export checks' measure."""
    return max(abs(a[k] - b[k]) / max(abs(a[k]), abs(b[k]), 1e-6) for k in a)


def verdicts(path: Path) -> dict[str, str]:
    return {r["path"]: r["is_anomalous"] for r in csv.DictReader(open(path))}


def rel_diff(a: dict[str, float], b: dict[str, float]) -> float:
    keys = sorted(a)
    if set(keys) != set(b):
        raise SystemExit("the two score files name different images")
    return scale_diff(np.array([a[k] for k in keys]), np.array([b[k] for k in keys]))


def interleaved(cmd_for, rounds: int) -> dict[str, list[float]]:
    """Seconds of each mode, A (shared) and B (unshared) in turn, after one unmeasured warm-up each."""
    out: dict[str, list[float]] = {"shared": [], "unshared": []}
    for r in range(rounds + 1):
        for mode in ("shared", "unshared"):
            t = timed(cmd_for(mode), mode == "shared")
            if r:
                out[mode].append(t)
    return out


def summary(times: dict[str, list[float]], n: int | None = None) -> dict:
    ratios = [u / s for s, u in zip(times["shared"], times["unshared"], strict=True)]
    out = {"seconds_median": {k: statistics.median(v) for k, v in times.items()},
           "speedup_pairwise_median": statistics.median(ratios), "speedup_pairs": ratios}
    if n:
        out["images_per_second"] = {k: n / statistics.median(v) for k, v in times.items()}
    return out


def check_export(run: Path, test: Path, files: list[Path], work: Path, n_check: int, torch_scores: dict,
                 engines: tuple[str, ...] = ("onnxruntime",)) -> dict:
    from latentad.export.dedupe import weight_copies
    from latentad.export.engine import ExportedDetector
    from latentad.runs import load_run

    out: dict = {}
    _, det, _ = load_run(run)
    h, w = det.input_shape
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB").resize((w, h), Image.BILINEAR)).copy())
                     .permute(2, 0, 1) for f in files[:n_check]]).float().div(255)
    want = det.predict(x)
    for engine in engines:
        fmt = "onnx" if engine == "onnxruntime" else engine
        exp = work / f"export-{fmt}"
        t0 = time.perf_counter()
        timed([LATENTAD, "export", "--run", str(run), "--out", str(exp), "--to", fmt], True)
        seconds = time.perf_counter() - t0
        timed([LATENTAD, "predict", "--run", str(exp), "--engine", engine, "--out", str(work / f"p-{engine}"),
               "--overlays", "none", "--no-masks", str(test)], True)
        got_scores = scores(work / f"p-{engine}" / "scores.csv")
        mine, theirs = verdicts(work / "shared" / "scores.csv"), verdicts(work / f"p-{engine}" / "scores.csv")
        got = ExportedDetector(exp, engine).predict(x)
        maps = None if want.anomaly_maps is None else scale_diff(want.anomaly_maps, got.anomaly_maps)
        row = {"export_seconds": seconds, "vs_torch_scores_cli": rel_diff(torch_scores, got_scores),
               "vs_torch_scores_cli_elementwise": elementwise(torch_scores, got_scores),
               "verdicts_differ": sum(mine[k] != theirs[k] for k in mine),
               "vs_torch_inprocess": {"images": len(x), "scores": scale_diff(want.image_scores, got.image_scores),
                                      "maps": maps}}
        if fmt == "onnx":
            copies = weight_copies(exp / "model.onnx")
            row |= {"model_onnx_mb": (exp / "model.onnx").stat().st_size / 1e6, "large_constants": sum(copies.values()),
                    "duplicated_large_constants": sum(n - 1 for n in copies.values())}
        out[engine] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True, help="the data set folder (its test/ is scored)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--check", type=int, default=8, help="images checked in process against onnxruntime")
    ap.add_argument("--no-evaluate", action="store_true")
    ap.add_argument("--no-export", action="store_true")
    ap.add_argument("--engines", default="onnxruntime", help="comma-separated: onnxruntime, openvino")
    args = ap.parse_args()
    test = args.data / "test"
    files = sorted(f for f in test.rglob("*") if f.suffix.lower() in EXTS)
    work = Path(tempfile.mkdtemp(prefix="ensemble_one_pass."))

    def predict(mode: str) -> list[str]:
        return [LATENTAD, "predict", "--run", str(args.run), "--out", str(work / mode), "--overlays", "none",
                "--no-masks", str(test)]

    out: dict = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                             "platform": platform.platform()}, "run": str(args.run), "images": len(files)}
    times = interleaved(predict, args.rounds)  # --rounds 0: one unmeasured run each, for the scores
    out["predict"] = summary(times, len(files)) if args.rounds else {}
    shared = scores(work / "shared" / "scores.csv")
    out["predict"]["shared_vs_unshared_scores"] = rel_diff(shared, scores(work / "unshared" / "scores.csv"))
    if not args.no_evaluate and args.rounds:
        out["evaluate"] = summary(interleaved(lambda m: [LATENTAD, "evaluate", "--run", str(args.run)], args.rounds))
    if not args.no_export:
        out["export"] = check_export(args.run, test, files, work, args.check, shared,
                                     tuple(e.strip() for e in args.engines.split(",")))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
