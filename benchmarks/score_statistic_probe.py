"""Probe (issue 14): which statistic of PaDiM's map makes the best image score on a data set's
validation split (normal training images with synthetic defects; no test image read)?

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/score_statistic_probe.py ../shared/data/magnetic_tile
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from latentad.data.open import open_dataset
from latentad.detectors.base import create
from latentad.evaluation import score_set
from latentad.metrics import image_auroc
from latentad.tuning import validation_split

KINDS = ("cutpaste", "scar", "blend", "band", "graft")


def main(path: str) -> None:
    split = open_dataset(path, size=None)
    fit, val = validation_split(split.train, 0.2, 0, KINDS)
    for backbone in ("efficientnet_lite0", "efficientnet_lite2"):
        det = create("padim", None, seed=0, npca=0.99, backbone=backbone)
        det.fit(fit)
        with torch.inference_mode():
            pred, labels, *_ = score_set(det, val, progress=None)
        ranked = np.sort(np.asarray(pred.anomaly_maps).reshape(len(labels), -1), 1)[:, ::-1]
        res = {"max": image_auroc(labels, ranked[:, 0])}
        for q in (0.001, 0.01, 0.05, 0.1, 0.25, 1.0):
            res[f"top{q}"] = image_auroc(labels, ranked[:, : max(1, int(q * ranked.shape[1]))].mean(1))
        print(backbone, {k: round(v, 4) for k, v in res.items()}, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
