"""How good are the defect masks? `latentad predict` on a fitted run's test images, then, against the
ground-truth masks: the share of ground-truth regions with at least 30 % of their pixels inside the
predicted mask (region recall, PRO-style, at the calibrated pixel threshold, not over thresholds), the
mean IoU of predicted and true masks over defective images, and the share of a good image's pixels
the mask covers (false alarms). One JSON line per (run, data) to `--out`.

    python benchmarks/masks_eval.py --run RUN --data ../shared/data/mvtec_ad/bottle --out benchmarks/results/masks.jsonl
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage


def ground_truth(data: Path, path: str) -> np.ndarray | None:
    p = Path(path)
    f = data / "ground_truth" / p.parent.name / f"{p.stem}_mask.png"
    return np.asarray(Image.open(f).convert("L")) > 127 if f.is_file() else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    data = Path(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        cli = str(Path(sys.executable).parent / "latentad")
        subprocess.run([cli, "predict", "--run", args.run, "--out", tmp, "--overlays", "none", str(data / "test")],
                       check=True)
        rows = list(csv.DictReader(open(f"{tmp}/scores.csv")))
        found = total = 0
        ious, cover = [], []
        per_type: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            stem = Path(r["path"]).stem
            mask = np.asarray(Image.open(f"{tmp}/masks/{i:05d}_{stem}.png")) > 127
            kind = Path(r["path"]).parent.name
            if kind == "good":
                cover.append(float(mask.mean()))
                continue
            gt = ground_truth(data, r["path"])
            if gt is None or gt.shape != mask.shape:
                continue
            ious.append(float((gt & mask).sum() / max(1, (gt | mask).sum())))
            lab, n = ndimage.label(gt, structure=np.ones((3, 3)))
            for k in range(1, n + 1):
                hit = int(mask[lab == k].mean() >= 0.3)
                found, total = found + hit, total + 1
                per_type.setdefault(kind, [0, 0])
                per_type[kind][0] += hit
                per_type[kind][1] += 1
    cal = json.loads((Path(args.run) / "calibration.json").read_text())
    line = {"run": args.run, "data": str(data), "region_recall": found / max(1, total), "regions": total,
            "mean_iou": float(np.mean(ious)) if ious else None, "good_cover": float(np.mean(cover)) if cover else None,
            "per_type_recall": {k: v[0] / v[1] for k, v in per_type.items()},
            "pixel_threshold": cal.get("pixel_threshold"), "pixel_fpr": cal.get("pixel_fpr")}
    with open(args.out, "a") as fh:
        fh.write(json.dumps(line) + "\n")
    print(json.dumps(line))


if __name__ == "__main__":
    main()
