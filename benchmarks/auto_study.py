"""Which validation ranks like the real test, and which fusion transfers? The development study of
`fit --method auto` (issues 31 and 41).

For each task (bottle, magnetic tile, ELPV mono and poly, the ten MNIST one-vs-rest digits), every
candidate of the portfolio is fitted once on the validation's fitting part (the normal training images
less the calibration hold-out and the validation hold-out, exactly as `fit --method auto` builds them)
and scored on the validation folds (held-out normal images and the same images with one synthetic
defect of each kind, `data.defects.EVERY_KIND`) and on the task's test split. Raw scores are kept
with each test image's label and defect type, so that any criterion, any fusion and any per-type
task can be recomputed afterwards. One JSON line per (task, candidate) goes to `--out`; a rerun skips
what is there. `benchmarks/auto_study_loso.py` turns the lines into the leave-one-source-out table.

Reuse (`--reuse`, the lines of issue 31's run, same seed and protocol): such a candidate's test
scores and its validation scores for the kinds it has are taken from there, the defect types of its
test images are read from the split (same order), and it is refitted only to score the kinds it
lacks (`refit_normal`, `refit_kinds`: those kinds' AUROCs are taken against the refitted model's own
normal scores). Why: refitting and scoring the validation is about a third of what the test costs.

Sized for 2 shared CPU cores: magnetic tile's training images are capped at 300 and the MNIST tasks
at 100 training images, 100 test normals and 400 test anomalies (as in issue 31); on top, the test
split is capped per defect type (`TEST_CAP`, seeded; `test_index` names the images kept, and every
candidate of a task is scored on the same ones) and the candidates costing more than `--heavy-cost`
are fitted on at most `--heavy-fit` images and scored on at most `--heavy-held` held-out images (as a
budget would). `--deadline` stops starting new lines after that many seconds. The VQ-VAE candidate is
left out (its training alone exceeds the default 10-minute budget).

    python benchmarks/auto_study.py --out benchmarks/results/auto_study2.jsonl \\
        --reuse benchmarks/results/auto_study.jsonl [--tasks bottle,elpv_mono] [--deadline 4200]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from latentad.data.base import ImageSet, array_record
from latentad.data.defects import EVERY_KIND
from latentad.metrics import image_auroc
from latentad.registry import create
from latentad.runs import holdout, open_split
from latentad.selection.folds import cached, make_validation
from latentad.selection.portfolio import PORTFOLIO, Candidate

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MNIST = str(DATA / "mnist" / "t10k-images-idx3-ubyte.gz")
TASKS = {
    "bottle": (str(DATA / "mvtec_ad" / "bottle"), "mvtec", {}, None),
    "magnetic_tile": (str(DATA / "magnetic_tile"), "auto", {}, (300, None, None)),
    "elpv_mono": ("elpv", "elpv", {"cell_type": "mono"}, None),
    "elpv_poly": ("elpv", "elpv", {"cell_type": "poly"}, None),
    **{f"mnist_{d}": (MNIST, "mnist", {"normal_class": d}, (100, 100, 400)) for d in range(10)},
}
# test images kept per defect type ("good": the normals); None: all of them
TEST_CAP = {"bottle": None, "magnetic_tile": {"good": 120, "*": 25}, "elpv_mono": {"good": 100, "*": 150},
            "elpv_poly": {"good": 100, "*": 150}, **{f"mnist_{d}": {"good": 50, "*": 17} for d in range(10)}}
LEFT_OUT = {"vqvae_ssim_am"}


def draw(n: int, k: int | None, seed: int) -> list[int]:
    if k is None or k >= n:
        return list(range(n))
    return sorted(np.random.default_rng(seed).choice(n, k, replace=False).tolist())


def decoded(images: ImageSet) -> ImageSet:
    """`images` decoded once (the synthetic defects drawn once), so each candidate scores the same
    pixels without redrawing them."""
    records = [array_record(r.path, r.load()[0], r.label, r.defect_type) for r in images.records]
    return ImageSet(records, images.size, images.channels, False, images.name, resize=images.resize)


def capped_test(name: str, seed: int) -> ImageSet:
    """The task's test split as issue 31 scored it (MNIST's seeded caps), images not decoded."""
    path, fmt, options, caps = TASKS[name]
    test = open_split(path, fmt, options).test
    if caps is not None and caps[1] is not None:
        labels = test.labels
        normal, anom = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
        keep = [normal[i] for i in draw(len(normal), caps[1], seed + 2)] + \
               [anom[i] for i in draw(len(anom), caps[2], seed + 3)]
        test = test.subset(sorted(int(i) for i in keep))
    return test


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
    return make_validation(cached(fit_set), seed, EVERY_KIND), test, caps


def test_index(name: str, test: ImageSet, seed: int) -> list[int]:
    """The test images kept: per defect type at most TEST_CAP's count, a seeded draw."""
    cap = TEST_CAP[name]
    if cap is None:
        return list(range(len(test)))
    types = np.array([r.defect_type if r.label else "good" for r in test.records])
    keep: list[int] = []
    for i, t in enumerate(sorted(set(types))):
        where = np.flatnonzero(types == t)
        keep += [int(where[j]) for j in draw(len(where), cap.get(t, cap["*"]), seed + 40 + i)]
    return sorted(keep)


def scores(det, images) -> list[float]:
    with torch.inference_mode():
        return [round(float(v), 6) for v in det.predict(images).image_scores]


def run_line(name: str, c: Candidate, parts: dict, old: dict | None, args) -> dict:
    val, test, idx, caps = parts["val"], parts["test"], parts["idx"], parts["caps"]
    heavy = c.cost > args.heavy_cost and old is None
    fit = val.fit if not heavy else val.fit.subset(draw(len(val.fit), args.heavy_fit, args.seed + 5))
    held = list(range(len(val.normal))) if not heavy else draw(len(val.normal), args.heavy_held, args.seed + 6)
    row = {"task": name, "candidate": c.name, "family": c.family, "cost": c.cost, "seed": args.seed, "caps": caps,
           "n_fit": len(fit), "n_held": len(held), "held_index": held,
           "groups": val.groups[held].tolist(), "test_index": idx}
    t0 = time.perf_counter()
    det = create(c.method, c.preset, seed=args.seed, **c.options)
    det.fit(fit)
    t1 = time.perf_counter()
    row["fit_seconds"] = round(t1 - t0, 1)
    sub = parts["held"] if not heavy else {k: s.subset(held) for k, s in parts["held"].items()}
    if old is None:
        row["normal"] = scores(det, sub["normal"])
        row["defective"] = {k: scores(det, sub[k]) for k in EVERY_KIND}
    else:  # issue 31's scores, and the kinds it lacks from the refitted model
        missing = [k for k in EVERY_KIND if k not in old["defective"]]
        row["normal"], row["defective"] = old["normal"], dict(old["defective"])
        row["refit_normal"] = scores(det, sub["normal"])
        row["refit_kinds"] = missing
        row["defective"].update({k: scores(det, sub[k]) for k in missing})
        row["refit_normal_max_diff"] = round(float(np.max(np.abs(np.subtract(row["refit_normal"], old["normal"])))), 6)
    t2 = time.perf_counter()
    row["val_seconds"] = round(t2 - t1, 1)
    if old is None:
        row["test_scores"] = scores(det, parts["test_kept"])
        row["test_seconds"] = round(time.perf_counter() - t2, 1)
    else:
        if old["test_labels"] != test.labels.tolist():
            raise RuntimeError(f"{name} {c.name}: the reused test labels differ from the split's")
        row["test_scores"] = [old["test_scores"][i] for i in idx]
        row["test_seconds_issue31"] = old["seconds"]
    kept = test.subset(idx)
    row["test_labels"] = kept.labels.tolist()
    row["test_types"] = [r.defect_type if r.label else "good" for r in kept.records]
    row["test_image_auroc"] = float(image_auroc(kept.labels, np.array(row["test_scores"])))
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--reuse", default=None, help="issue 31's JSON lines (same seed and protocol)")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--candidates", default=",".join(c.name for c in PORTFOLIO if c.name not in LEFT_OUT))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--heavy-cost", type=float, default=3.0)
    ap.add_argument("--heavy-fit", type=int, default=150)
    ap.add_argument("--heavy-held", type=int, default=40)
    ap.add_argument("--deadline", type=float, default=None, help="seconds after which no new line starts")
    ap.add_argument("--types-only", action="store_true",
                    help="write each test image's [label, defect type] of issue 31's test splits to --out")
    args = ap.parse_args()
    if args.types_only:  # for issue 31's lines, which kept no defect types: the split's order is theirs
        types = {}
        for name in args.tasks.split(","):
            test = capped_test(name, args.seed)
            types[name] = [[r.label, r.defect_type if r.label else "good"] for r in test.records]
        Path(args.out).write_text(json.dumps(types) + "\n")
        return
    start = time.perf_counter()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.is_file():
        done = {(r["task"], r["candidate"]) for r in map(json.loads, out.read_text().splitlines()) if r}
    reuse = {}
    if args.reuse:
        for r in map(json.loads, Path(args.reuse).read_text().splitlines()):
            if r and r["seed"] == args.seed:
                reuse[(r["task"], r["candidate"])] = r
    wanted = [c for c in PORTFOLIO if c.name in set(args.candidates.split(","))]
    for name in args.tasks.split(","):
        todo = [c for c in wanted if (name, c.name) not in done]
        if not todo:
            continue
        if args.deadline is not None and time.perf_counter() - start > args.deadline:
            print(f"deadline: {name} and what follows not started", flush=True)
            break
        val, test, caps = task_sets(name, args.seed)
        held = {"normal": decoded(val.normal), **{k: decoded(s) for k, s in val.defective.items()}}
        idx = test_index(name, test, args.seed)
        parts = {"val": val, "test": test, "idx": idx, "caps": caps, "held": held,
                 "test_kept": decoded(test.subset(idx))}
        for c in todo:
            if args.deadline is not None and time.perf_counter() - start > args.deadline:
                print(f"deadline: {name} {c.name} not started", flush=True)
                break
            row = run_line(name, c, parts, reuse.get((name, c.name)), args)
            with out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"{name} {c.name}: test {row['test_image_auroc']:.4f} (fit {row['fit_seconds']:.0f}s, "
                  f"val {row['val_seconds']:.0f}s, test {row.get('test_seconds', 0):.0f}s; "
                  f"at {time.perf_counter() - start:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
