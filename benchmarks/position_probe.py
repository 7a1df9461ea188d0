"""Does standardising PaDiM's distances per position help its image score? On validation splits of
`latentad fit --tune` (no test image is read): the per-position mean and std of the distances of the
normal fit images, each to the Gaussians of the other half of them (cross-fitted, as at test time),
then the map (d - mean_p) / std_p against the raw map, image and pixel AUROC. FOLDS=2,5,10: also
the statistics of K-fold out-of-fold distances (each fold's model fitted on the other K-1 folds, so
nearer the full model whose distances are standardised).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/position_probe.py ../shared/data/magnetic_tile 0,1,2 '{"npca": 0.99}'
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch

from latentad.data.open import open_dataset
from latentad.detectors.base import create
from latentad.evaluation import score_set
from latentad.metrics import image_auroc, pixel_auroc
from latentad.tuning import validation_split

FOLDS = tuple(int(k) for k in os.environ.get("FOLDS", "2").split(","))  # out-of-fold schemes, 2 always
KINDS = tuple(os.environ.get("KINDS", "cutpaste,scar,blend,band,graft").split(","))  # rounds 5-10: all five


def grid_distances(det, images) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([det.mahalanobis(g) for g in det._grids(images)])


def main(path: str, seeds: str, options: str) -> None:
    split = open_dataset(path, size=None)
    opts = json.loads(options)
    for seed in (int(s) for s in seeds.split(",")):
        fit, val = validation_split(split.train, 0.2, seed, KINDS)
        n = len(fit)
        stats = {}
        for k_folds in FOLDS:  # out-of-fold distances of the fit images, each fold's model on the rest
            parts = []
            for k in range(k_folds):
                others = fit.subset([i for i in range(n) if i % k_folds != k])
                rest = create("padim", None, seed=seed, **opts).fit(others)
                parts.append(grid_distances(rest, fit.subset(range(k, n, k_folds))))
            cross = torch.cat(parts)
            stats[k_folds] = (cross.mean(0), cross.std(0) + 1e-6)
        mu, sd = stats[2]
        det = create("padim", None, seed=seed, **opts).fit(fit)
        dist = grid_distances(det, val)
        with torch.inference_mode():
            pred, labels, masks, *_ = score_set(det, val, progress=None)
        assert np.allclose(det.smooth_maps(dist, det.config.sigma).numpy(), pred.anomaly_maps, atol=1e-3)
        variants = [("raw", dist), ("per_position", (dist - mu) / sd), ("per_position_mean", dist - mu)]
        variants += [(f"per_position_{k}fold", (dist - stats[k][0]) / stats[k][1]) for k in FOLDS if k != 2]
        for name, m in variants:
            maps = det.smooth_maps(m, det.config.sigma).numpy()
            print(json.dumps({"split": seed, "map": name,
                              "image_auroc": round(float(image_auroc(labels, maps.reshape(len(maps), -1).max(1))), 4),
                              "pixel_auroc": round(float(pixel_auroc(masks, maps)), 4),
                              "sd_p range": [round(float(sd.min()), 2), round(float(sd.max()), 2)]}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
