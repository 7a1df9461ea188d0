"""Which DINOv2 block should the pretrained methods read? Chosen on a validation split, never on a
test set: bottle's normal *training* images are split (seeded) into a fitting part and a validation
part; every validation image is scored as it is and once more with a synthetic defect
(`latentad.data.defects`: CutPaste, scar, noise blend, with exact masks). PatchCore (defaults, 224 px)
is fitted on the fitting part with each candidate level; image and pixel AUROC on the validation set.

    OMP_NUM_THREADS=2 python benchmarks/dino_block_probe.py [--data DIR] [--blocks 4,6,8,10,12] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from latentad.data.base import ImageSet, Record
from latentad.data.defects import add_defect
from latentad.data.mvtec import load_mvtec
from latentad.detectors.base import create
from latentad.metrics import image_auroc, pixel_auroc


def validation_split(root: str, n_val: int, seed: int, size: int = 224):
    """(fit ImageSet, validation images (N,3,S,S), masks (N,S,S), labels) from train/good only."""
    train = load_mvtec(root, size).train
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train))
    fit, val = train.subset(sorted(order[n_val:].tolist())), [train.records[i] for i in sorted(order[:n_val])]
    records, labels = [], []
    for rec in val:
        image = rec.load()[0]
        defect, mask, kind = add_defect(image, rng)
        records.append(Record(rec.path, 0, "good", lambda i=image: (i, np.zeros(i.shape[:2], dtype=bool))))
        records.append(Record(f"{rec.path}#{kind}", 1, kind, lambda d=defect, m=mask: (d, m)))
        labels += [0, 1]
    val_set = ImageSet(records, size, 3, True, "bottle/validation")
    batch = val_set.load_all()
    return fit, batch.images, batch.masks.numpy() > 0.5, np.array(labels)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/work/shared/data/mvtec_ad/bottle")
    ap.add_argument("--blocks", default="4,6,8,10,12")
    ap.add_argument("--n-val", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    fit, x, masks, labels = validation_split(args.data, args.n_val, args.seed)
    rows = []
    candidates = [(f"block{b}",) for b in args.blocks.split(",")] + [("block8", "block12")]
    for levels in candidates:
        t0 = time.perf_counter()
        det = create("patchcore", backbone="dinov2_vits14", levels=levels).fit(fit)
        with torch.inference_mode():
            pred = det.predict(x)
        row = {"levels": list(levels), "image_auroc": image_auroc(labels, pred.image_scores),
               "pixel_auroc": pixel_auroc(masks, pred.anomaly_maps), "seconds": round(time.perf_counter() - t0, 1),
               "n_fit": len(fit), "n_val_images": len(labels), "data": "bottle train/good, validation split"}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(json.dumps(r) for r in rows) + "\n")


if __name__ == "__main__":
    main()
