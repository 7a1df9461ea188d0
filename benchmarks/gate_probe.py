"""Score `padim -o head_gate=k` for several k from one fit per validation split (the gate acts at
scoring time only, so one fit serves every k); validation splits of `latentad fit --tune` (seeds
given, 20 % of the normal training images, each once as it is and once with a synthetic defect of KINDS);
no test image is read.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/gate_probe.py ../shared/data/magnetic_tile 0,1,2 \
        '{"npca": 0.99, "head_epochs": 3, "head_score": "gaussian", "head_count": 3, ...}' none,0,1,2,3
"""

from __future__ import annotations

import json
import sys
import time

import torch

from latentad.data.open import open_dataset
from latentad.detectors.base import create
from latentad.evaluation import score_set
from latentad.metrics import image_auroc, pixel_auroc
from latentad.tuning import validation_split

KINDS = ("cutpaste", "scar", "blend", "band", "graft")  # the validation kinds of rounds 5-10


def main(path: str, seeds: str, options: str, gates: str) -> None:
    split = open_dataset(path, size=None)
    for seed in (int(s) for s in seeds.split(",")):
        fit, val = validation_split(split.train, 0.2, seed, KINDS)
        t0 = time.perf_counter()
        det = create("padim", None, seed=seed, **json.loads(options)).fit(fit)
        print(f"split {seed}: fitted in {time.perf_counter() - t0:.0f} s", flush=True)
        for raw in gates.split(","):
            det.config.head_gate = None if raw == "none" else float(raw)
            with torch.inference_mode():
                pred, labels, masks, *_ = score_set(det, val, progress=None)
            print(json.dumps({"split": seed, "head_gate": det.config.head_gate,
                              "image_auroc": round(float(image_auroc(labels, pred.image_scores)), 4),
                              "pixel_auroc": round(float(pixel_auroc(masks, pred.anomaly_maps)), 4)}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:5])
