"""Learning curve of a reconstruction detector on an MVTec-layout category, evaluated at chosen epochs.
`--method vqvae` (the default) is one VQ-VAE training scored with both maps (`vqvae_ssim`,
`vqvae_ssim_am`: the two methods share the model and differ only in the map); any other trainable
method (`ae_ssim`, `vae_l2`, ...) is scored with its own map. Prints one JSON line
per evaluation and writes them all to `--out`/curve.json; the final detector is saved there too.

Training time is the sum of the epochs' own seconds (evaluation excluded), in wall and process CPU
time. Checkpoints go to `--out`/checkpoints, so a killed run continues with `--resume`.

    OMP_NUM_THREADS=1 python benchmarks/vqvae_learning_curve.py --preset cpu_long --out runs/curve_cpu_long
    OMP_NUM_THREADS=1 python benchmarks/vqvae_learning_curve.py --method vae_l2 --preset none --at 20 --out runs/x
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from latentad import io
from latentad.data.mvtec import load_mvtec
from latentad.evaluation import evaluate
from latentad.registry import create

KEYS = ("pixel_auroc", "aupro", "aupimo", "image_auroc", "f1_max")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="vqvae")
    ap.add_argument("--preset", default="cpu_long", help="a preset name, or 'none' for the config defaults")
    ap.add_argument("--overrides", default="{}")
    ap.add_argument("--data", default="../shared/data/mvtec_ad/bottle")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--at", default="1,2,5,10,20,30,45,60,80,100", help="epochs (1-based) to evaluate at")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    at = {int(e) for e in args.at.split(",")}

    preset = None if args.preset == "none" else args.preset
    overrides = json.loads(args.overrides)
    am_det = create("vqvae_ssim_am" if args.method == "vqvae" else args.method, preset, **overrides)
    scored_as = ["vqvae_ssim", "vqvae_ssim_am"] if args.method == "vqvae" else [am_det.name]
    split = load_mvtec(args.data, am_det.config.image_size)
    am_det.set_checkpointing(out / "checkpoints", resume=args.resume)
    usage_hook = am_det.epoch_end
    clock = {"cpu": 0.0, "wall": 0.0, "mark": time.process_time()}
    rows: list[dict] = []

    def epoch_end(epoch: int, entry: dict) -> dict:
        clock["cpu"] += time.process_time() - clock["mark"]
        clock["wall"] += entry["seconds"]
        extra = usage_hook(epoch, entry)
        if epoch + 1 in at:
            row = {"epoch": epoch + 1, "train_wall_min_this_process": round(clock["wall"] / 60, 2),
                   "train_cpu_min_this_process": round(clock["cpu"] / 60, 2),
                   **{k: extra[k] for k in ("codes_used", "perplexity") if k in extra}}
            am_det.fitted = True
            for name in scored_as:
                det = am_det if name == am_det.name else am_det.scored_as(name)
                m = evaluate(det, split.test).metrics
                row[name] = {k: m.get(k) for k in KEYS}
            am_det.model.train()
            rows.append(row)
            print(json.dumps(row), flush=True)
            io.write_json(out / "curve.json", {"method": args.method, "preset": args.preset,
                                               "overrides": args.overrides, "data": args.data,
                                               "threads": args.threads, "rows": rows})
        clock["mark"] = time.process_time()
        return extra

    am_det.epoch_end = epoch_end  # type: ignore[method-assign]
    am_det.fit(split.train)
    am_det.save(out / "model")
    print(json.dumps({"done": True, "epochs": am_det.config.epochs}), flush=True)


if __name__ == "__main__":
    main()
