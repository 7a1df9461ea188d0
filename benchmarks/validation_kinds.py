"""How hard each synthetic defect kind is on a data set's validation split (no test image read): one
method is fitted on the split's fit images (the same split `fit --tune` makes: the calibration
hold-out removed, then `fraction` held out), and scored on the held-out images with one kind at a
time: pooled pixel AUROC, image AUROC and the mean within-image AUROC of the kind's masks. A
validation kind is a proxy of a real defect class when its within-image figure is close to the
class's (benchmarks/pixel_breakdown.py on the test set).

    python benchmarks/validation_kinds.py ../shared/data/magnetic_tile padim -o npca=0.99 --kinds band graft
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from latentad.config import coerce_options
from latentad.data.defects import ALL_KINDS
from latentad.detectors.base import create, get_method
from latentad.evaluation import score_set
from latentad.runs import holdout, open_split, parse_options


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("method")
    ap.add_argument("-o", "--option", action="append", default=[], help="key=value, as in latentad fit")
    ap.add_argument("--kinds", nargs="+", default=list(ALL_KINDS), choices=ALL_KINDS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fraction", type=float, default=0.2, help="share of the fit images held out")
    ap.add_argument("--calibration-fraction", type=float, default=0.1)
    args = ap.parse_args()
    from latentad.tuning import validation_split

    split = open_split(args.data, "auto", {})
    train, _ = holdout(split.train, args.calibration_fraction, args.seed)
    fit, _ = validation_split(train, args.fraction, args.seed, (args.kinds[0],))  # the fit part: kind-free
    options = coerce_options(get_method(args.method).Config, parse_options(args.option))
    detector = create(args.method, seed=args.seed, **options).fit(fit)
    rows = {}
    for kind in args.kinds:
        _, val = validation_split(train, args.fraction, args.seed, (kind,))
        with torch.inference_mode():
            pred, labels, masks, *_ = score_set(detector, val, progress=None)
        maps, masks = pred.anomaly_maps, masks.astype(bool)
        within = [roc_auc_score(m.ravel(), a.ravel()) for a, m in zip(maps, masks, strict=True) if 0 < m.mean() < 1]
        rows[kind] = {"pixel_auroc": float(roc_auc_score(masks.ravel(), maps.ravel())),
                      "image_auroc": float(roc_auc_score(labels, pred.image_scores)),
                      "within_image_auroc": float(np.mean(within))}
        print(kind, json.dumps(rows[kind]), flush=True)


if __name__ == "__main__":
    main()
