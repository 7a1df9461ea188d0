"""Prototype probe (issue 14), a disclosed look at magnetic tile's test tiles: does a whole-tile term
added to PaDiM's image score raise the image AUROC? The rule is fixed before the look, nothing in it is
tuned: score = z(map max) + z(global), each z-scored by the mean / std of that score on normal
training tiles held out from every fit (every 10th tile); global = the Mahalanobis distance of the
tile's pooled patch feature (mean over the grid) to a Gaussian of the fitting tiles' pooled features,
with the same NPCA fraction (0.99) and regulariser (0.01) as PaDiM's per-position Gaussians.

Why (docs/ANALYSIS.md, magnetic tile): the map's mean far from any defect separates the defect-class
tiles from normal ones at 0.949, so part of the image signal is a whole-tile one, which the map's
maximum reads only indirectly.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/global_score_probe.py ../shared/data/magnetic_tile
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from latentad.data.open import open_dataset
from latentad.detectors.base import create
from latentad.detectors.gaussians import GaussianAccumulator, precision_of
from latentad.evaluation import score_set
from latentad.metrics import image_auroc


def main(path: str) -> None:
    split = open_dataset(path, size=None)
    train, test = split.train, split.test
    hold = list(range(0, len(train), 10))
    fit = train.subset([i for i in range(len(train)) if i % 10 != 0])
    held = train.subset(hold)
    out = {}
    for backbone in ("efficientnet_lite0", "efficientnet_lite2"):
        det = create("padim", None, seed=0, npca=0.99, backbone=backbone)
        det.fit(fit)

        parts = {}
        for name, images in (("fit", fit), ("held", held), ("test", test)):
            with torch.inference_mode():
                pooled = torch.cat([g.mean((2, 3)) for g in det._grids(images)]).double()
                pred, labels, *_ = score_set(det, images, progress=None)
            parts[name] = (pooled, np.asarray(pred.image_scores, dtype=float), labels)
        acc = GaussianAccumulator()
        acc.update(parts["fit"][0][:, None, :].float())
        mean, cov = acc.mean_cov()
        cov = cov + 0.01 * torch.eye(cov.shape[-1], dtype=cov.dtype)
        prec = precision_of(cov, 0.99).double()[0]
        mean = mean.double()[0]

        def glob(p: torch.Tensor, mean: torch.Tensor = mean, prec: torch.Tensor = prec) -> np.ndarray:
            d = p - mean
            return ((d @ prec) * d).sum(1).clamp_min(0).sqrt().numpy()

        gh, mh = glob(parts["held"][0]), parts["held"][1]
        gt, mt, y = glob(parts["test"][0]), parts["test"][1], parts["test"][2]
        fused = (mt - mh.mean()) / mh.std() + (gt - gh.mean()) / gh.std()
        out[backbone] = {"map_max": image_auroc(y, mt), "global": image_auroc(y, gt), "fused": image_auroc(y, fused),
                         "spearman": float(__import__("scipy.stats").stats.spearmanr(mt, gt)[0])}
        print(backbone, out[backbone], flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
