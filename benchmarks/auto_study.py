"""Which validation ranks like the real test? The development study of `fit --method auto` (issue 31).

For each task (bottle, magnetic tile, ELPV mono and poly, the ten MNIST one-vs-rest digits), every
candidate of the portfolio is fitted once on the validation's fitting part (the normal training images
less the calibration hold-out and the validation hold-out, exactly as `fit --method auto` builds them)
and scored twice: on the validation folds (held-out normal images and the same images with one
synthetic defect of each kind) and on the task's test split (image AUROC). Raw scores are kept, so
any criterion, and any fusion of two candidates, can be recomputed. One JSON line per (task,
candidate) goes to `--out`; a rerun skips what is there. `benchmarks/auto_study_table.py` turns the
lines into the leave-one-task-out table.

Sized for 2 CPU cores: magnetic tile's training images are capped at 300 and the MNIST tasks at 100
training images, 100 test normals and 400 test anomalies (seeded draws; stated in the output). The
VQ-VAE candidate is left out (its training alone exceeds the default 10-minute budget).

    python benchmarks/auto_study.py --out benchmarks/results/auto_study.jsonl [--tasks bottle,elpv_mono]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from latentad.metrics import image_auroc
from latentad.registry import create
from latentad.runs import holdout, open_split
from latentad.selection.folds import cached, make_validation
from latentad.selection.portfolio import PORTFOLIO

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MNIST = str(DATA / "mnist" / "t10k-images-idx3-ubyte.gz")
TASKS = {
    "bottle": (str(DATA / "mvtec_ad" / "bottle"), "mvtec", {}, None),
    "magnetic_tile": (str(DATA / "magnetic_tile"), "auto", {}, (300, None, None)),
    "elpv_mono": ("elpv", "elpv", {"cell_type": "mono"}, None),
    "elpv_poly": ("elpv", "elpv", {"cell_type": "poly"}, None),
    **{f"mnist_{d}": (MNIST, "mnist", {"normal_class": d}, (100, 100, 400)) for d in range(10)},
}
LEFT_OUT = {"vqvae_ssim_am"}


def draw(n: int, k: int | None, seed: int) -> list[int]:
    if k is None or k >= n:
        return list(range(n))
    return sorted(np.random.default_rng(seed).choice(n, k, replace=False).tolist())


def task_sets(name: str, seed: int):
    path, fmt, options, caps = TASKS[name]
    split = open_split(path, fmt, options)
    train, test = split.train, split.test
    if caps is not None:
        n_train, n_normal, n_anom = caps
        train = train.subset(draw(len(train), n_train, seed + 1))
        if n_normal is not None:
            labels = test.labels
            normal, anom = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
            keep = [normal[i] for i in draw(len(normal), n_normal, seed + 2)] + \
                   [anom[i] for i in draw(len(anom), n_anom, seed + 3)]
            test = test.subset(sorted(int(i) for i in keep))
    fit_set, _ = holdout(train, 0.1, seed)  # as fit_run: the calibration images are never used here
    return make_validation(cached(fit_set), seed), test, caps


def scores(det, images) -> list[float]:
    with torch.inference_mode():
        return [round(float(v), 6) for v in det.predict(images).image_scores]


def run_task(name: str, out: Path, done: set, seed: int) -> None:
    val, test, caps = task_sets(name, seed)
    test_labels = test.labels
    for c in PORTFOLIO:
        if c.name in LEFT_OUT or (name, c.name) in done:
            continue
        t0 = time.perf_counter()
        det = create(c.method, c.preset, seed=seed, **c.options)
        det.fit(val.fit)
        row = {"task": name, "candidate": c.name, "family": c.family, "seed": seed, "caps": caps,
               "n_fit": len(val.fit), "n_held": len(val.normal), "groups": val.groups.tolist(),
               "normal": scores(det, val.normal),
               "defective": {k: scores(det, s) for k, s in val.defective.items()}}
        row["test_scores"] = scores(det, test)  # kept, so that fusions can be scored afterwards
        row["test_labels"] = test_labels.tolist()
        row["test_image_auroc"] = float(image_auroc(test_labels, np.array(row["test_scores"])))
        row["seconds"] = round(time.perf_counter() - t0, 1)
        with out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(f"{name} {c.name}: test {row['test_image_auroc']:.4f} ({row['seconds']:.0f}s)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.is_file():
        done = {(r["task"], r["candidate"]) for r in map(json.loads, out.read_text().splitlines()) if r}
    for name in args.tasks.split(","):
        run_task(name, out, done, args.seed)


if __name__ == "__main__":
    main()
