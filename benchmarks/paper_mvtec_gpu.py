"""The paper's MVTec setting on a GPU: `vqvae_ssim_am --preset paper_mvtec` (256 px, latent 32x32,
width = D = 256, M = 512, 100 epochs of 1024 augmented images) on one MVTec category, then the same
trained VQ-VAE scored with both maps (SSIM and SSIM+AM), beside the paper's Table 1.

One short run, prepared for scarce device time (`device` tool, one H200):

    python benchmarks/paper_mvtec_gpu.py --data ../shared/data/mvtec_ad/bottle --device cuda \
        [--precision bf16-mixed] [--epochs 100] [--out benchmarks/results/paper_mvtec_gpu.json]

It prints one JSON line per map (pixel / image AUROC, AUPRO, AUPIMO, fit minutes, device name).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from latentad.data.mvtec import load_mvtec
from latentad.evaluation import evaluate
from latentad.registry import create

PAPER_TABLE1_BOTTLE = {"vqvae_ssim": 0.94, "vqvae_ssim_am": 0.95}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/mvtec_ad/bottle")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="32")
    ap.add_argument("--epochs", type=int, default=None, help="default: the preset's 100")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    overrides = {"epochs": args.epochs} if args.epochs else {}
    det = create("vqvae_ssim_am", "paper_mvtec", device=args.device, precision=args.precision, **overrides)
    split = load_mvtec(args.data, det.config.image_size)
    t0 = time.perf_counter()
    det.fit(split.train)
    if det.device.type == "cuda":
        torch.cuda.synchronize()
    fit_min = (time.perf_counter() - t0) / 60
    rows = []
    for method in ("vqvae_ssim", "vqvae_ssim_am"):
        m = evaluate(det.scored_as(method), split.test).metrics
        rows.append({"method": method, "preset": "paper_mvtec", "epochs": det.config.epochs,
                     "device": torch.cuda.get_device_name(det.device) if det.device.type == "cuda" else str(det.device),
                     "precision": args.precision, "fit_minutes": round(fit_min, 2),
                     "pixel_auroc": m["pixel_auroc"], "image_auroc": m["image_auroc"], "aupro": m["aupro"],
                     "aupimo": m["aupimo"], "paper_pixel_auroc": PAPER_TABLE1_BOTTLE[method]})
    text = "\n".join(json.dumps(r) for r in rows)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
