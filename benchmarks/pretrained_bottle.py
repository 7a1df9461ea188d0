"""Fit and evaluate the four pretrained-feature detectors on MVTec AD bottle, per backbone.

    python benchmarks/pretrained_bottle.py [--backbones efficientnet_lite0,mobilenet_v2]
        [--methods gaussian,padim,patchcore,simplenet] [--threads 1]
        [--data ../shared/data/mvtec_ad/bottle] [--out benchmarks/results/pretrained_bottle]

Every (backbone, method) runs in its own process (under /usr/bin/time -v when available, for its
peak RSS), with the default config (only the backbone changed), fitted on all 209 training images and
evaluated on the 83 test images exactly as `latentad evaluate` does (latentad.evaluation.score_set,
then latentad.metrics.compute_metrics on masks resized to the input size). Reported:
  fit_s      wall seconds of fit(), PNG decoding included;
  score_s    wall seconds of scoring the test set, decoding included (predict img/s = 83 / score_s);
  metrics_s  seconds of image/pixel AUROC, AUPRO, AUPIMO;
  total_s    fit + score + metrics (the 120 s budget); process_s the whole process (imports too);
  cpu_s      process CPU seconds (with one thread about the compute time, robust to other load).
Timings are noisy when other jobs share the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

METHODS = ["gaussian", "padim", "patchcore", "simplenet"]


def one(method: str, backbone: str, data: str, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    from latentad.data.mvtec import load_mvtec
    from latentad.evaluation import score_set
    from latentad.metrics import compute_metrics
    from latentad.registry import create

    cpu0 = time.process_time()
    det = create(method, None, backbone=backbone)
    split = load_mvtec(data, det.config.image_size)
    t0 = time.perf_counter()
    det.fit(split.train)
    t1 = time.perf_counter()
    with torch.inference_mode():
        pred, labels, masks, _, _ = score_set(det, split.test, None)
    t2 = time.perf_counter()
    metrics = compute_metrics(labels, pred.image_scores, masks, pred.anomaly_maps)
    t3 = time.perf_counter()
    cfg = det.config
    return {
        "method": method, "backbone": backbone, "image_size": cfg.image_size, "levels": list(det.levels),
        **{k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()
           if v is None or isinstance(v, (int, float))},
        "fit_s": round(t1 - t0, 2), "score_s": round(t2 - t1, 2), "metrics_s": round(t3 - t2, 2),
        "total_s": round(t3 - t0, 2), "predict_img_s": round(len(labels) / (t2 - t1), 1),
        "cpu_s": round(time.process_time() - cpu0, 1), "n_train": len(split.train), "n_test": len(labels),
        "threads": threads,
    }


def run_child(method: str, backbone: str, args) -> dict:
    cmd = [sys.executable, __file__, "--one", method, "--backbones", backbone, "--data", args.data,
           "--threads", str(args.threads)]
    timer = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    if timer:
        cmd = [timer, "-v", *cmd]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LATENTAD_PROGRESS": "0"})
    wall = time.perf_counter() - t
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"method": method, "backbone": backbone, "error": proc.stderr.strip().splitlines()[-3:]}
    row = json.loads(lines[-1])
    row["process_s"] = round(wall, 1)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    row["peak_rss_mb"] = round(int(rss.group(1)) / 1024) if rss else None
    return row


def table(rows: list[dict]) -> str:
    head = (f"{'backbone':<18} {'method':<10} {'img AUROC':>9} {'pix AUROC':>9} {'AUPRO':>6} {'AUPIMO':>6} "
            f"{'fit s':>6} {'pred img/s':>10} {'total s':>7} {'proc s':>6} {'cpu s':>6} {'RSS MB':>6}")
    out = [head, "-" * len(head)]

    def f(v, spec):
        return format(v, spec) if isinstance(v, (int, float)) else format("-", re.match(r"\D*\d+", spec)[0])

    for r in rows:
        if "error" in r:
            out.append(f"{r['backbone']:<18} {r['method']:<10} ERROR {r['error']}")
            continue
        out.append(
            f"{r['backbone']:<18} {r['method']:<10} {f(r['image_auroc'], '>9.4f')} {f(r['pixel_auroc'], '>9.4f')} "
            f"{f(r['aupro'], '>6.3f')} {f(r['aupimo'], '>6.3f')} {r['fit_s']:>6.1f} {r['predict_img_s']:>10.1f} "
            f"{r['total_s']:>7.1f} {r['process_s']:>6.1f} {r['cpu_s']:>6.1f} {f(r['peak_rss_mb'], '>6d')}"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbones", default="efficientnet_lite0,mobilenet_v2")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--data", default="../shared/data/mvtec_ad/bottle")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/pretrained_bottle")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.backbones, args.data, args.threads)), flush=True)
        return
    rows = []
    for backbone in args.backbones.split(","):
        for method in args.methods.split(","):
            row = run_child(method, backbone, args)
            rows.append(row)
            print(json.dumps(row), flush=True)
    text = table(rows) + (
        f"\n\nMVTec AD bottle only (not MVTec AD results); {args.threads} thread(s); default configs with the "
        "backbone swapped.\nTimings are noisy when other jobs share the cores."
    )
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".txt").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
