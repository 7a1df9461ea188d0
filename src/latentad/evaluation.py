"""Score a test set once and compute every metric: images are decoded once, in batches, and the
masks are resized to the detector's input size (nearest neighbour) to meet its maps there, or maps
and masks both brought to one common `eval_size`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from latentad.data.base import ImageSet
from latentad.detectors.base import Detector, Prediction
from latentad.errors import ConfigError, DataError


@dataclass
class Evaluation:
    metrics: dict
    prediction: Prediction
    labels: np.ndarray
    paths: list[str]
    defect_types: list[str]
    per_defect: dict = field(default_factory=dict)
    masks: np.ndarray | None = None


def score_set(detector: Detector, images: ImageSet, progress: str | None = "score", eval_size: int | None = None):
    """Predict over `images`; returns (Prediction, labels, masks or None, paths, defect types).

    With `eval_size`, masks are read at that side (nearest neighbour from the original mask) and maps
    resized to it (bilinear), so detectors of different input sizes are measured at one resolution."""
    cfg = detector.config
    parts, labels, masks, paths, defects = [], [], [], [], []
    sized = images.with_size(cfg.image_size, cfg.channels, eval_size)
    for batch in sized.batches(cfg.batch_size, progress):
        pred = detector.predict(batch.images)
        if eval_size is not None and pred.anomaly_maps is not None:
            pred = Prediction(pred.image_scores, resize_maps(pred.anomaly_maps, eval_size))
        parts.append(pred)
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


def resize_maps(maps: np.ndarray, side: int) -> np.ndarray:
    """(N,H,W) maps -> (N,side,side), bilinear (a map is a sampled field, unlike a mask)."""
    if maps.shape[-2:] == (side, side):
        return maps
    t = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[:, None]
    return F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False)[:, 0].numpy()


def evaluate(detector: Detector, test: ImageSet, eval_size: int | None = None) -> Evaluation:
    """All metrics of `detector` on `test` (labels 0 normal / 1 anomalous; masks when present), pixel
    metrics at the detector's input size or at `eval_size`; `metrics["conditions"]` says which."""
    from latentad.metrics import compute_metrics

    if eval_size is not None and eval_size < 8:
        raise ConfigError(f"--eval-size {eval_size}: must be at least 8 pixels")
    t0 = time.perf_counter()
    with torch.inference_mode():
        pred, labels, masks, paths, defects = score_set(detector, test, f"{detector.name} evaluate", eval_size)
    if labels.min() == labels.max():
        raise DataError(f"{test.name}: the test set needs both normal and anomalous images")
    metrics = compute_metrics(labels, pred.image_scores, masks, pred.anomaly_maps, defects)
    per_defect = metrics.pop("per_defect")
    metrics["conditions"]["eval_size"] = eval_size
    metrics["conditions"]["detector_input_size"] = detector.config.image_size
    metrics.update(n_images=len(labels), seconds=time.perf_counter() - t0)
    return Evaluation(metrics, pred, labels, paths, defects, per_defect, masks)
