"""Round 14's validation probes on magnetic tile (docs/RESULTS.md): each on validation splits of the
normal training tiles with synthetic defects (`latentad.tuning.validation_split`, 20 %, kinds
cutpaste, scar, blend, band, graft); no test tile is read.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/round14_probes.py PROBE ../shared/data/magnetic_tile ['{options}']

PROBE: aspect  (does the held-out normal score depend on the tile's aspect? Gaussians per aspect group)
       shape   (image score minus the normal score expected for the tile's log aspect and log area)
       sigma   (the map's smoothing sigma, one fit, rescored; splits 0, 1)
       n_fit   (all fitting tiles against a random 90 % of them)
       backbone (Lite0 / Lite1 / Lite2 under standardize=position)
       size    (Lite1, standardised, at 224 / 240 (Lite1's own training size) / 256 px)
       variants (round 15: Lite1 standardised at 240 px, one change at a time: levels stage3-4,
                npca 0.98 / 0.995, Ledoit-Wolf covariances)
       stride  (round 15: the same base at feature stride 4 instead of 8; split 0)
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
from PIL import Image
from scipy.stats import spearmanr
from sklearn.linear_model import LinearRegression

from latentad.data.open import open_dataset
from latentad.detectors.base import create
from latentad.evaluation import score_set
from latentad.metrics import image_auroc, pixel_auroc
from latentad.tuning import validation_split

KINDS = ("cutpaste", "scar", "blend", "band", "graft")
HEADS = {"npca": 0.99, "standardize": "position", "head_epochs": 3, "head_score": "gaussian", "head_count": 3,
         "head_kinds": list(KINDS)}


def scored(det, images):
    with torch.inference_mode():
        pred, labels, masks, *_ = score_set(det, images, progress=None)
    return pred, labels, masks


def aurocs(pred, labels, masks) -> dict:
    return {"image": round(float(image_auroc(labels, pred.image_scores)), 4),
            "pixel": round(float(pixel_auroc(masks, pred.anomaly_maps)), 4)}


def shape(record) -> tuple[float, float]:
    """(width / height, width x height) of the file a (possibly synthetic) record was read from."""
    w, h = Image.open(record.path.split("#")[0]).size
    return w / h, w * h


def aspect(split, opts: dict, seeds=(0, 1)) -> None:
    for seed in seeds:
        fit, val = validation_split(split.train, 0.2, seed, KINDS)
        pred, labels, masks = scored(create("padim", None, seed=seed, **opts).fit(fit), val)
        asp = np.array([shape(r)[0] for r in val.records])
        s, n = pred.image_scores, labels == 0
        row = {"split": seed, "spearman_normal_score_aspect": round(float(spearmanr(s[n], asp[n])[0]), 3),
               "normal_mean_portrait": round(float(s[n & (asp < 1)].mean()), 2),
               "normal_mean_landscape": round(float(s[n & (asp >= 1)].mean()), 2),
               "one_model": aurocs(pred, labels, masks)}
        fa = np.array([shape(r)[0] for r in fit.records])
        scores, maps = np.zeros(len(val)), np.zeros_like(pred.anomaly_maps)
        for landscape in (False, True):
            fi = [i for i in range(len(fit)) if (fa[i] >= 1) == landscape]
            vi = [i for i in range(len(val)) if (asp[i] >= 1) == landscape]
            p, *_ = scored(create("padim", None, seed=seed, **opts).fit(fit.subset(fi)), val.subset(vi))
            scores[vi], maps[vi] = p.image_scores, p.anomaly_maps
        row["per_group"] = {"image": round(float(image_auroc(labels, scores)), 4),
                            "pixel": round(float(pixel_auroc(masks, maps)), 4)}
        print(json.dumps(row), flush=True)


def shape_adjusted(split, opts: dict, seeds=(0, 1, 2), folds: int = 5) -> None:
    for seed in seeds:
        fit, val = validation_split(split.train, 0.2, seed, KINDS)
        n, oof = len(fit), np.zeros(len(fit))
        for k in range(folds):  # out-of-fold image scores of the fitting tiles
            det = create("padim", None, seed=seed, **opts).fit(fit.subset([i for i in range(n) if i % folds != k]))
            idx = list(range(k, n, folds))
            oof[idx] = scored(det, fit.subset(idx))[0].image_scores
        x = np.log([shape(r) for r in fit.records])
        reg = LinearRegression().fit(x, oof)
        pred, labels, _ = scored(create("padim", None, seed=seed, **opts).fit(fit), val)
        s = pred.image_scores
        adjusted = s - reg.predict(np.log([shape(r) for r in val.records]))
        print(json.dumps({"split": seed, "r2_oof": round(reg.score(x, oof), 3),
                          "raw": round(float(image_auroc(labels, s)), 4),
                          "adjusted": round(float(image_auroc(labels, adjusted)), 4)}), flush=True)


def sigma(split, opts: dict, seeds=(0, 1)) -> None:
    for seed in seeds:
        fit, val = validation_split(split.train, 0.2, seed, KINDS)
        det = create("padim", None, seed=seed, **(opts or HEADS)).fit(fit)
        for s in (2, 4, 6, 8, 12, 16):
            det.config.sigma = s
            print(json.dumps({"split": seed, "sigma": s, **aurocs(*scored(det, val))}), flush=True)


def n_fit(split, opts: dict, seeds=(0, 1, 2)) -> None:
    for seed in seeds:
        fit, val = validation_split(split.train, 0.2, seed, KINDS)
        keep = sorted(np.random.default_rng(seed).permutation(len(fit))[: int(0.9 * len(fit))].tolist())
        for name, part in (("all", fit), ("90%", fit.subset(keep))):
            det = create("padim", None, seed=seed, **opts).fit(part)
            print(json.dumps({"split": seed, "fit": name, "n": len(part), **aurocs(*scored(det, val))}), flush=True)


def sweep(split, opts: dict, changes: list[dict], seeds=(0, 1, 2)) -> None:
    """Each change alone on top of `opts`, on each split."""
    for seed in seeds:
        fit, val = validation_split(split.train, 0.2, seed, KINDS)
        for change in changes:
            t = time.time()
            det = create("padim", None, seed=seed, **{**opts, **change}).fit(fit)
            row = {"split": seed, **change, **aurocs(*scored(det, val)), "s": round(time.time() - t)}
            print(json.dumps(row), flush=True)


def backbone(split, opts: dict) -> None:
    sweep(split, opts, [{"backbone": f"efficientnet_lite{k}"} for k in range(3)])


def size(split, opts: dict) -> None:
    sweep(split, opts, [{"image_size": px} for px in (224, 240, 256)])


def variants(split, opts: dict) -> None:
    """`opts`' own figures are the size probe's 240 px rows."""
    sweep(split, opts, [{"levels": ["stage3", "stage4"]}, {"npca": 0.98}, {"npca": 0.995},
                        {"covariance": "ledoit_wolf"}])


def stride(split, opts: dict) -> None:
    sweep(split, opts, [{"feature_stride": 4}], seeds=(0,))


PROBES = {"aspect": aspect, "shape": shape_adjusted, "sigma": sigma, "n_fit": n_fit, "backbone": backbone, "size": size,
          "variants": variants, "stride": stride}
DEFAULTS = {"aspect": {"npca": 0.99}, "shape": {"npca": 0.99}, "sigma": HEADS,
            "n_fit": {"npca": 0.99, "standardize": "position"}, "backbone": {"npca": 0.99, "standardize": "position"},
            "size": {"npca": 0.99, "standardize": "position", "backbone": "efficientnet_lite1"},
            "variants": {"npca": 0.99, "standardize": "position", "backbone": "efficientnet_lite1", "image_size": 240}}
DEFAULTS["stride"] = DEFAULTS["variants"]

if __name__ == "__main__":
    probe, path = sys.argv[1], sys.argv[2]
    options = json.loads(sys.argv[3]) if len(sys.argv) > 3 else DEFAULTS[probe]
    PROBES[probe](open_dataset(path, size=None), options)
