"""Fit one reconstruction-family method (vqvae_ssim, vqvae_ssim_am, vae_l2, vae_kl, ...) on an
MVTec-layout category and print its metrics through the project's own evaluation (the numbers the
CLI's `evaluate` reports). Training time is measured as wall and process CPU time.

    python benchmarks/vqvae_family_bottle.py vae_kl '{"epochs": 20}' [--threads 1] [--preset P]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from latentad.data.mvtec import load_mvtec
from latentad.evaluation import evaluate
from latentad.registry import create


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("method")
    ap.add_argument("overrides", nargs="?", default="{}")
    ap.add_argument("--data", default="../shared/data/mvtec_ad/bottle")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--preset", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    det = create(args.method, args.preset, **json.loads(args.overrides))
    split = load_mvtec(args.data, det.config.image_size)
    c0, w0 = time.process_time(), time.perf_counter()
    det.fit(split.train)
    cpu, wall = (time.process_time() - c0) / 60, (time.perf_counter() - w0) / 60
    m = evaluate(det, split.test).metrics
    keys = ("image_auroc", "pixel_auroc", "aupro")
    print(json.dumps({"method": args.method, "preset": args.preset, "overrides": args.overrides,
                      "threads": args.threads, "fit_cpu_min": round(cpu, 2), "fit_wall_min": round(wall, 2),
                      **{k: m.get(k) for k in keys}}))


if __name__ == "__main__":
    main()
