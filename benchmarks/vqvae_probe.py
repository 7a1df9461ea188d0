"""Probe a VQ-VAE recipe on one MVTec-layout category: train with config overrides and evaluate
several anomaly-map variants every few epochs (pixel AUROC over all test pixels, masks resized to the
model input size with nearest neighbour, sklearn roc_auc_score). Used to build the CPU presets; the
results are logged in benchmarks/results/vqvae_probes.md.

    python benchmarks/vqvae_probe.py NAME '{"image_size": 128, "epochs": 20}' [--every 5]
        [--data /work/shared/data/mvtec_ad/bottle] [--threads 1] [--preset NAME]

Times: `train_cpu_min` is the process CPU time spent in training (with one thread it is the
single-core compute time, robust to other jobs on the machine); `train_wall_min` the wall time.
Evaluation time is excluded from both.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from latentad.data.mvtec import load_mvtec
from latentad.detectors.base import create
from latentad.detectors.reconstruction.losses import cb_mean_logits
from latentad.maps.fusion import fuse_am_ssim, upsample_map
from latentad.maps.morphology import grey_dilation
from latentad.maps.ssim import ssim_anomaly_map


def gauss(m: torch.Tensor, sigma: float) -> torch.Tensor:
    from kornia.filters import gaussian_blur2d

    k = int(4 * sigma) * 2 + 1
    return gaussian_blur2d(m[:, None], (k, k), (sigma, sigma))[:, 0]


def evaluate(det, xt: torch.Tensor, gt: np.ndarray, labels: np.ndarray) -> tuple[dict, int]:
    model = det.model
    was = model.training
    model.eval()
    xms, ams, codes = [], [], []
    with torch.inference_mode():
        for i in range(0, len(xt), 16):
            out = model(xt[i : i + 16])
            xms.append(cb_mean_logits(out["logits"].float()))
            ams.append(((out["z_e"] - out["z_q"]) ** 2).sum(1))
            codes.append(out["codes"])
    model.train(was)
    xm, am = torch.cat(xms), torch.cat(ams)
    n_codes = int(torch.unique(torch.cat(codes)).numel())

    def au(m: torch.Tensor) -> float:
        return float(roc_auc_score(gt, m.reshape(-1).numpy()))

    c = det.config
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    s = ssim_anomaly_map(xt, xm, c.ssim_window)
    res = {"ssim": au(s)}
    if xt.shape[1] == 3:
        res["ssim_gray"] = au(ssim_anomaly_map((xt * w).sum(1, keepdim=True), (xm * w).sum(1, keepdim=True)))
    res["l2"] = au(((xt - xm) ** 2).mean(1))
    res["am_only"] = au(upsample_map(am, xt.shape[-1]))
    for d in (1, 5, 9, 15, 21, 31):
        res[f"am{d}"] = au(fuse_am_ssim(s, am, d))
    res["amsqrt15"] = au(fuse_am_ssim(s, am.sqrt(), 15))
    for sd in (3, 5, 9):
        res[f"sd{sd}"] = au(grey_dilation(s, sd))
        res[f"sd{sd}am9"] = au(fuse_am_ssim(grey_dilation(s, sd), am, 9))
    res["blur2"] = au(gauss(s, 2))
    res["blur4"] = au(gauss(s, 4))
    res["blur2am15"] = au(gauss(fuse_am_ssim(s, am, 15), 2))
    res["blur4am9"] = au(gauss(fuse_am_ssim(s, am, 9), 4))
    fused = fuse_am_ssim(grey_dilation(s, c.ssim_dilation), am, c.am_dilation, c.am_upsample)
    res["config_map"] = au(fused)
    res["img_ssim"] = float(roc_auc_score(labels, s.flatten(1).mean(1).numpy()))
    res["img_config"] = float(roc_auc_score(labels, fused.flatten(1).mean(1).numpy()))
    return res, n_codes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("overrides", nargs="?", default="{}")
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--data", default="/work/shared/data/mvtec_ad/bottle")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--preset", default=None)
    ap.add_argument("--out", default="/tmp/vqvae_probes")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    over = json.loads(args.overrides)
    det = create("vqvae_ssim_am", args.preset, **over)
    c = det.config
    split = load_mvtec(args.data, c.image_size)
    tb = split.test.with_size(c.image_size, c.channels).load_all()
    xt, labels = tb.images, tb.labels.numpy()
    gt = tb.masks.numpy().astype(bool).reshape(-1)
    log = open(out_dir / f"{args.name}.log", "a")

    def say(msg: str) -> None:
        print(msg, flush=True)
        log.write(msg + "\n")
        log.flush()

    say(f"== {args.name} preset={args.preset} {json.dumps(over)} threads={args.threads}")
    clock = {"cpu": 0.0, "wall": 0.0, "c0": time.process_time(), "w0": time.perf_counter()}
    results: list[dict] = []

    def stop_clock() -> None:
        clock["cpu"] += time.process_time() - clock["c0"]
        clock["wall"] += time.perf_counter() - clock["w0"]

    def start_clock() -> None:
        clock["c0"], clock["w0"] = time.process_time(), time.perf_counter()

    def report(tag: str) -> None:
        res, n_codes = evaluate(det, xt, gt, labels)
        entry = {"tag": tag, "train_cpu_min": clock["cpu"] / 60, "train_wall_min": clock["wall"] / 60,
                 "test_codes": n_codes, **res}
        results.append(entry)
        say(f"[{tag}] cpu {clock['cpu'] / 60:.2f}min wall {clock['wall'] / 60:.2f}min codes {n_codes} "
            + " ".join(f"{k} {v:.4f}" for k, v in res.items()))

    orig_end = det.epoch_end

    def epoch_end(epoch: int, entry: dict) -> dict:
        stop_clock()
        usage = orig_end(epoch, entry)
        shown = {k: v for k, v in {**entry, **usage}.items() if k != "epoch"}
        say(f"ep {epoch + 1} cpu {clock['cpu'] / 60:.2f}min " + " ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()))
        if args.every and (epoch + 1) % args.every == 0 and epoch + 1 < c.epochs:
            report(f"ep{epoch + 1}")
        start_clock()
        return usage

    det.epoch_end = epoch_end  # type: ignore[method-assign]
    start_clock()
    det.fit(split.train)
    stop_clock()
    report(f"final ep{c.epochs}")
    (out_dir / f"{args.name}.json").write_text(json.dumps({"overrides": over, "preset": args.preset,
                                                            "results": results}, indent=1))
    det.save(out_dir / f"{args.name}_model")


if __name__ == "__main__":
    main()
