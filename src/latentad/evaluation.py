"""Score a test set once and compute every metric: images are decoded once, in batches, and the
masks are resized to the detector's input size (nearest neighbour) to meet its maps there."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from latentad.data.base import ImageSet
from latentad.detectors.base import Detector, Prediction
from latentad.errors import DataError


@dataclass
class Evaluation:
    metrics: dict
    prediction: Prediction
    labels: np.ndarray
    paths: list[str]
    defect_types: list[str]
    per_defect: dict = field(default_factory=dict)


def score_set(detector: Detector, images: ImageSet, progress: str | None = "score"):
    """Predict over `images`; returns (Prediction, labels, masks or None, paths, defect types)."""
    cfg = detector.config
    parts, labels, masks, paths, defects = [], [], [], [], []
    sized = images.with_size(cfg.image_size, cfg.channels)
    for batch in sized.batches(cfg.batch_size, progress):
        parts.append(detector.predict(batch.images))
        labels.append(batch.labels.numpy())
        if batch.masks is not None:
            masks.append(batch.masks.numpy().astype(bool))
        paths += batch.paths
        defects += batch.defect_types
    if not parts:
        raise DataError(f"{images.name}: no images to score")
    pred = Prediction.concat(parts)
    mask_arr = np.concatenate(masks) if masks and len(masks) == len(parts) else None
    return pred, np.concatenate(labels), mask_arr, paths, defects


def evaluate(detector: Detector, test: ImageSet) -> Evaluation:
    """All metrics of `detector` on `test` (labels 0 normal / 1 anomalous; masks when present)."""
    from latentad.metrics import compute_metrics, image_auroc

    t0 = time.perf_counter()
    with torch.inference_mode():
        pred, labels, masks, paths, defects = score_set(detector, test, f"{detector.name} evaluate")
    if labels.min() == labels.max():
        raise DataError(f"{test.name}: the test set needs both normal and anomalous images")
    metrics = compute_metrics(labels, pred.image_scores, masks, pred.anomaly_maps)
    per_defect = {}
    for d in sorted(set(defects) - {"good"}):
        keep = np.array([(x == d) or (lab == 0) for x, lab in zip(defects, labels, strict=True)])
        per_defect[d] = {"image_auroc": image_auroc(labels[keep], pred.image_scores[keep]),
                         "n_images": int((np.array(defects) == d).sum())}
    metrics.update(n_images=len(labels), seconds=time.perf_counter() - t0)
    return Evaluation(metrics, pred, labels, paths, defects, per_defect)
