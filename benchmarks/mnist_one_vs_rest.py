"""MNIST one-vs-rest with the foundation's protocol (`latentad.data.mnist.load_mnist`: the t10k file,
seed 0, 80 % of the normal digit's images train, the other 20 % + all other digits test): image
AUROC per digit and the mean, for reconstruction methods at their `mnist` preset.

`vqvae` trains one VQ-VAE per digit and scores it with both maps (`vqvae_ssim`, `vqvae_ssim_am`):
the two methods share the model and differ only in the map. Results are appended as JSON lines to
`--out` (one per method and digit), so an interrupted run continues where it stopped.

    OMP_NUM_THREADS=1 python benchmarks/mnist_one_vs_rest.py vqvae ae_l2 vae_l2 --out benchmarks/results/mnist.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from latentad.data.mnist import load_mnist
from latentad.evaluation import evaluate
from latentad.registry import create

SCORED_BY = {"vqvae": ("vqvae_ssim", "vqvae_ssim_am"), "ae_l2": ("ae_l2",), "vae_l2": ("vae_l2",),
             "ae_ssim": ("ae_ssim",), "dsvdd": ("dsvdd",), "ssl_gaussian": ("ssl_gaussian",),
             "cutpaste": ("cutpaste",)}
TRAINED_AS = {"vqvae": "vqvae_ssim_am"}


def done_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def run_one(model: str, digit: int, args) -> list[dict]:
    trained = create(TRAINED_AS.get(model, model), args.preset, **json.loads(args.overrides))
    split = load_mnist(args.images, normal_class=digit, seed=0, train_fraction=0.8, size=trained.config.image_size)
    c0, w0 = time.process_time(), time.perf_counter()
    trained.fit(split.train)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    rows = []
    for method in SCORED_BY[model]:
        det = trained if method == trained.name else trained.scored_as(method)
        m = evaluate(det, split.test).metrics
        rows.append({"method": method, "digit": digit, "preset": args.preset, "image_auroc": m["image_auroc"],
                     "f1_max": m.get("f1_max"), "n_train": len(split.train), "n_test": len(split.test),
                     "fit_cpu_s": round(cpu, 1), "fit_wall_s": round(wall, 1), "threads": args.threads})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+", choices=sorted(SCORED_BY))
    ap.add_argument("--images", default="../shared/data/mnist/t10k-images-idx3-ubyte.gz")
    ap.add_argument("--preset", default="mnist")
    ap.add_argument("--overrides", default="{}")
    ap.add_argument("--digits", default="0,1,2,3,4,5,6,7,8,9")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for model in args.models:
        for digit in (int(d) for d in args.digits.split(",")):
            seen = {(r["method"], r["digit"], r["preset"]) for r in done_rows(out)}
            if all((m, digit, args.preset) in seen for m in SCORED_BY[model]):
                continue
            for row in run_one(model, digit, args):
                print(json.dumps(row), flush=True)
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    rows = [r for r in done_rows(out) if r["preset"] == args.preset]
    for method in sorted({r["method"] for r in rows}):
        per = {r["digit"]: r["image_auroc"] for r in rows if r["method"] == method}
        mean = float(np.mean(list(per.values())))
        print(method, " ".join(f"{d}:{per[d]:.3f}" for d in sorted(per)), f"mean {mean:.3f} ({len(per)} digits)")


if __name__ == "__main__":
    main()
