"""The self-supervised family against frozen ImageNet features, through the CLI's own code
(`fit_run` + `evaluate_run`, seed 0, 10 % of the normal training images held out for the threshold):

- ELPV (mono, the demo's data: 300 normal cells to train, 100 test cells, image labels) and
  magnetic_tile (`../shared/data/magnetic_tile`, pixel masks, non-square): `gaussian` on frozen
  Lite0 (its default levels, and `levels=stage4`, the very features `ssl_gaussian` pools, frozen),
  `padim` (the map `ssl_gaussian` computes, frozen), `ssl_gaussian` with each objective,
  `patchcore` with `dinov2_vits14`, and (ELPV only: time) `cutpaste` and `ssl_gaussian-both`;
- bottle: `ssl_gaussian`, `cutpaste`, `dsvdd`, and `patchcore` / `padim` with `dinov2_vits14`.

    OMP_NUM_THREADS=1 python benchmarks/ssl_family.py --out benchmarks/results/ssl_family.jsonl [--only DATA]

One JSON line per run (data, label, method, preset, options, metrics, seconds); runs already in
--out are skipped. Defaults and presets only: nothing here is tuned on these test sets.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from latentad.runs import evaluate_run, fit_run

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DINO = {"backbone": "dinov2_vits14"}
COMPARE = [  # (label, method, preset, options)
    ("gaussian", "gaussian", None, {}),
    ("gaussian-stage4", "gaussian", None, {"levels": ["stage4"]}),
    ("padim", "padim", None, {}),
    ("ssl_gaussian-contrastive", "ssl_gaussian", "contrastive", {}),
    ("ssl_gaussian-synthetic", "ssl_gaussian", "synthetic", {}),
    ("ssl_gaussian-both", "ssl_gaussian", "both", {}),
    ("patchcore-dinov2", "patchcore", None, DINO),
    ("cutpaste", "cutpaste", None, {}),
]
BOTTLE = [
    ("ssl_gaussian-both", "ssl_gaussian", "both", {}),
    ("cutpaste", "cutpaste", None, {}),
    ("dsvdd", "dsvdd", None, {}),
    ("patchcore-dinov2", "patchcore", None, DINO),
    ("padim-dinov2", "padim", None, DINO),
]
MAGNETIC = [c for c in COMPARE if c[0] != "cutpaste"]  # cutpaste: not run, for time
DATA = {  # name: (path, format, data options, cells)
    "elpv_mono": ("elpv", "elpv", {"cell_type": "mono", "limit": {"train": 300, "test": 100}}, COMPARE),
    "bottle": (str(SHARED / "mvtec_ad" / "bottle"), "auto", {}, BOTTLE),
    "magnetic_tile": (str(SHARED / "magnetic_tile"), "auto", {}, MAGNETIC),
}
KEYS = ("image_auroc", "pixel_auroc", "aupro", "aupimo", "f1_max", "n_images")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/ssl_family.jsonl")
    ap.add_argument("--work", default="runs/ssl_family")
    ap.add_argument("--only", default=None, help="one data set: " + ", ".join(DATA))
    args = ap.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["data"], r["label"]) for r in map(json.loads, out.read_text().splitlines())} if out.exists() else set()
    for name, (path, fmt, data_options, cells) in DATA.items():
        if args.only and name != args.only:
            continue
        for label, method, preset, options in cells:
            if (name, label) in done:
                continue
            run = Path(args.work) / name / label
            t0 = time.perf_counter()
            fit_run(run, method, path, fmt, dict(data_options), preset, dict(options), 0, False, True, 0.1, 0.01)
            fit_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            m = evaluate_run(run, None, None, None).metrics
            row = {"data": name, "label": label, "method": method, "preset": preset or "default",
                   "options": options, **{k: m.get(k) for k in KEYS}, "fit_seconds": round(fit_s, 1),
                   "evaluate_seconds": round(time.perf_counter() - t1, 1), "threads": torch.get_num_threads()}
            print(json.dumps(row), flush=True)
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
