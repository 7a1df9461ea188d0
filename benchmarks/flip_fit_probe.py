"""Probe (issue 14): does fitting PaDiM's per-position Gaussians on the training images and their flips
(4x the samples per position for a 176-192-dimensional covariance, n/d ~ 3 on magnetic tile) help,
or does it blur the position-dependent structure the Gaussians model? Validation splits only (three,
as `tune` with folds = 3); no test image read.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/flip_fit_probe.py ../shared/data/magnetic_tile efficientnet_lite1
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from latentad.data.open import open_dataset
from latentad.detectors.base import create
from latentad.detectors.gaussians import GaussianAccumulator
from latentad.evaluation import score_set
from latentad.metrics import image_auroc, pixel_auroc
from latentad.tuning import validation_split

KINDS = ("cutpaste", "scar", "blend", "band", "graft")
FLIPS = {"none": [()], "h": [(), (-1,)], "hv": [(), (-1,), (-2,), (-2, -1)]}


def fit_with_flips(det, images, flips) -> None:
    """PaDiM's fit, with each batch also accumulated under the given flips."""
    det.channels = None
    acc = GaussianAccumulator()
    for x in det.iter_batches(images):
        for dims in flips:
            with torch.inference_mode():
                g = next(det._grids(x.flip(dims) if dims else x))
            acc.update(g.flatten(2).transpose(1, 2))
    det.mean, det.precision = det._gaussian(acc)
    det.head = None
    det.fitted = True


def main(path: str, backbone: str) -> None:
    split = open_dataset(path, size=None)
    for name, flips in FLIPS.items():
        rows = []
        for k in range(3):
            fit, val = validation_split(split.train, 0.2, k, KINDS)
            det = create("padim", None, seed=0, npca=0.99, backbone=backbone)
            fit_with_flips(det, fit, flips)
            with torch.inference_mode():
                pred, labels, masks, *_ = score_set(det, val, progress=None)
            rows.append((image_auroc(labels, pred.image_scores), pixel_auroc(masks, pred.anomaly_maps)))
        r = np.array(rows)
        crit = r.mean(1)
        print(name, "image", np.round(r[:, 0], 4), "pixel", np.round(r[:, 1], 4),
              f"mean {crit.mean():.4f} ± {crit.std(ddof=1) / np.sqrt(3):.4f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
