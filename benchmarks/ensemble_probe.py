"""Probe (issue 14): do PaDiM maps from several backbones / input sizes, standardised and averaged, beat
one model on magnetic tile's validation split (normal training tiles with synthetic defects)?

No test tile is read. Each member is fitted on the fitting part; its map is standardised by the mean
and std of its maps on a calibration slice of the fitting part held out from its own fit (20 tiles),
so every member speaks in "normal-tile standard deviations" before the average.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/ensemble_probe.py ../shared/data/magnetic_tile
"""

from __future__ import annotations

import itertools
import json
import sys
import time

import numpy as np
import torch

from latentad.data.open import open_dataset
from latentad.detectors.base import create
from latentad.evaluation import score_set
from latentad.metrics import image_auroc, pixel_auroc
from latentad.tuning import validation_split

MEMBERS = {
    "L0-224": {"backbone": "efficientnet_lite0"},
    "L1-224": {"backbone": "efficientnet_lite1"},
    "L2-224": {"backbone": "efficientnet_lite2"},
    "L0-320": {"backbone": "efficientnet_lite0", "image_size": 320},
    "L2-320": {"backbone": "efficientnet_lite2", "image_size": 320},
}
KINDS = ("cutpaste", "scar", "blend", "band", "graft")


def main(path: str) -> None:
    split = open_dataset(path, size=None)
    fit, val = validation_split(split.train, 0.2, 0, KINDS)
    calib_idx = list(range(0, len(fit), max(1, len(fit) // 20)))[:20]
    keep = [i for i in range(len(fit)) if i not in set(calib_idx)]
    fit_part, calib = fit.subset(keep), fit.subset(calib_idx)
    maps, out = {}, {}
    for name, opts in MEMBERS.items():
        t0 = time.perf_counter()
        det = create("padim", None, seed=0, npca=0.99, **opts)
        det.fit(fit_part)
        with torch.inference_mode():
            cal, *_ = score_set(det, calib, progress=None, eval_size=224)
            pred, labels, masks, *_ = score_set(det, val, progress=None, eval_size=224)
        mu, sd = float(cal.anomaly_maps.mean()), float(cal.anomaly_maps.std())
        maps[name] = (np.asarray(pred.anomaly_maps) - mu) / sd
        out[name] = {"image": float(image_auroc(labels, pred.image_scores)),
                     "pixel": float(pixel_auroc(masks, pred.anomaly_maps)), "s": round(time.perf_counter() - t0, 1)}
        print(name, out[name], flush=True)
    for r in (2, 3):
        for combo in itertools.combinations(MEMBERS, r):
            m = np.mean([maps[c] for c in combo], axis=0)
            key = "+".join(combo)
            out[key] = {"image": float(image_auroc(labels, m.reshape(len(m), -1).max(1))),
                        "pixel": float(pixel_auroc(masks, m))}
            print(key, out[key], flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
