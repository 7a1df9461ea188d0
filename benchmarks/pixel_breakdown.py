"""Where a run's pooled pixel AUROC is lost: per defect type, the share of all defect pixels, the
AUROC of that type's defect pixels against every normal pixel of the test set (what the pooled figure
mixes), the mean within-image AUROC (does the map find the defect inside its own image?), and the
pooled figure without that type's images. Then how much of the image AUROC is visible far from any
defect: the map's mean over the pixels more than `--margin` pixels (evaluation grid) from a defect;
and, for comparison, how well the raw images' height, width, aspect, mean and contrast alone separate
the test set's defective images from its normal ones (AUROC, either sign).

A diagnosis of a test set, for docs/ANALYSIS.md: nothing here chooses an option.

    python benchmarks/pixel_breakdown.py runs/mt_best [--margin 20]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_dilation
from sklearn.metrics import roc_auc_score

from latentad.evaluation import evaluate
from latentad.runs import load_run, open_split


def breakdown(maps: np.ndarray, masks: np.ndarray, labels: np.ndarray, defects: np.ndarray, margin: int) -> dict:
    masks = masks.astype(bool)
    negatives = maps[~masks]
    out: dict = {"pooled_pixel_auroc": float(roc_auc_score(masks.ravel(), maps.ravel())), "types": {}}
    for kind in sorted(set(defects.tolist()) - {"good"}):
        sel = defects == kind
        pos = maps[sel][masks[sel]]
        y = np.r_[np.ones(len(pos)), np.zeros(len(negatives))]
        within = [roc_auc_score(masks[i].ravel(), maps[i].ravel()) for i in np.flatnonzero(sel)
                  if 0 < masks[i].mean() < 1]
        rest = ~sel
        out["types"][kind] = {
            "images": int(sel.sum()), "defect_pixel_share": float(len(pos) / masks.sum()),
            "vs_all_normal_pixels": float(roc_auc_score(y, np.r_[pos, negatives])),
            "within_image_auroc": float(np.mean(within)),
            "pooled_without_this_type": float(roc_auc_score(masks[rest].ravel(), maps[rest].ravel())),
        }
    far = np.array([m[~(binary_dilation(k, iterations=margin) if k.any() else k)].mean()
                    for m, k in zip(maps, masks, strict=True)])
    out["image_auroc_of_map_max"] = float(roc_auc_score(labels, maps.reshape(len(maps), -1).max(1)))
    out[f"image_auroc_far_from_defects_{margin}px"] = float(roc_auc_score(labels, far))
    return out


def raw_statistics(records) -> dict:
    """AUROC (max of either sign) of simple per-image statistics of the original files."""
    rows = []
    for rec in records:
        image = rec.load()[0].astype(np.float64)
        rows.append((image.shape[0], image.shape[1], image.shape[0] / image.shape[1], image.mean(), image.std()))
    values, labels = np.array(rows), np.array([r.label for r in records])
    out = {}
    for j, name in enumerate(("height", "width", "aspect", "mean", "std")):
        auc = roc_auc_score(labels, values[:, j])
        out[name] = float(max(auc, 1 - auc))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--margin", type=int, default=20, help="pixels (evaluation grid) kept away from defects")
    args = ap.parse_args()
    config, detector, _ = load_run(args.run)
    data = config["data"]
    split = open_split(data["path"], data.get("format_option", "auto"), data.get("data_options", {}))
    result = evaluate(detector, split.test)
    if result.masks is None:
        raise SystemExit(f"{data['path']}: no pixel masks, nothing to break down")
    out = breakdown(result.prediction.anomaly_maps, result.masks, result.labels, np.array(result.defect_types),
                    args.margin)
    out["raw_statistics_image_auroc"] = raw_statistics(split.test.records)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
