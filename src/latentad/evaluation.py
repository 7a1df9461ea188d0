"""Score a test set once and compute every metric: images are decoded once, in batches, and the
masks are resized to the detector's input size (nearest neighbour) to meet its maps there, or maps
and masks both brought to one common `eval_size`."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from latentad.data.base import Batch, ImageSet
from latentad.data.geometry import Placement, as_shape, map_to_grid
from latentad.detectors.base import Detector, Prediction
from latentad.errors import ConfigError, DataError
from latentad.maps.statistics import read_statistic


@dataclass
class Evaluation:
    metrics: dict
    prediction: Prediction
    labels: np.ndarray
    paths: list[str]
    defect_types: list[str]
    per_defect: dict = field(default_factory=dict)
    masks: np.ndarray | None = None
    aupimo_per_image: np.ndarray | None = None  # (N,), nan for normal images; None without AUPIMO


def score_set(detector: Detector, images: ImageSet, progress: str | None = "score",
              eval_size: int | tuple[int, int] | None = None,
              on_batch: Callable[[Batch, Prediction], None] | None = None):
    """Predict over `images`; returns (Prediction, labels, masks or None, paths, defect types).

    Maps come back on the evaluation grid: each original image squashed to `eval_size` (default: the
    detector's input shape), so pixel metrics compare like with like whatever the input placement
    (`resize`) and whatever the detector's input size. Masks are read at that grid (nearest neighbour
    from the original mask), maps are sent there through their placement (`data.geometry`); with
    `resize=fit` the image score of a method whose score is its map's max or mean is taken over the
    image only, not over the padding. `on_batch(batch, prediction)` sees each batch as it is scored
    (predict draws its overlays there, from the decoded files the batch carries)."""
    grid = as_shape(eval_size) or detector.input_shape
    size, mode = input_placement(detector)
    parts, labels, masks, paths, defects = [], [], [], [], []
    sized = images.with_size(size, detector.config.channels, grid, resize=mode)
    for batch in sized.batches(1 if size is None else detector.config.batch_size, progress):
        pred = predict_batch(detector, batch, grid, mode)
        parts.append(pred)
        if on_batch is not None:
            on_batch(batch, pred)
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


def input_placement(detector: Detector) -> tuple[tuple[int, int] | None, str]:
    """(size images are brought to, placement mode): a tiled detector takes whole images at their
    own size (None), one at a time; the others their input shape, placed by their `resize`."""
    if getattr(detector, "full_resolution", False):
        return None, "squash"
    return detector.input_shape, detector.config.resize


def predict_batch(detector: Detector, batch: Batch, grid: tuple[int, int], mode: str) -> Prediction:
    """Scores and maps of one batch, maps brought to the evaluation grid (the original squashed)."""
    pred = detector.predict(batch.images)
    if pred.anomaly_maps is not None and (mode != "squash" or grid != pred.anomaly_maps.shape[-2:]):
        pred = to_grid(detector, pred, batch.orig_sizes, grid, mode)
    return pred


def to_grid(detector: Detector, pred: Prediction, orig_sizes: list, grid: tuple[int, int], mode: str) -> Prediction:
    """Maps at the input shape -> the evaluation grid, through each image's placement."""
    shape = tuple(pred.anomaly_maps.shape[-2:])
    maps, scores = [], pred.image_scores.copy()
    for i, (amap, orig) in enumerate(zip(pred.anomaly_maps, orig_sizes, strict=True)):
        placement = Placement.of(tuple(orig or shape), shape, mode)
        t = torch.from_numpy(np.ascontiguousarray(amap))
        if mode == "fit" and detector.map_statistic is not None:
            rows, cols = placement.valid()
            scores[i] = read_statistic(t[rows, cols], detector.map_statistic)
        maps.append(map_to_grid(t, placement, grid).numpy())
    return Prediction(scores, np.stack(maps))


def evaluate(detector: Detector, test: ImageSet, eval_size: int | tuple[int, int] | None = None) -> Evaluation:
    """All metrics of `detector` on `test` (labels 0 normal / 1 anomalous; masks when present), pixel
    metrics at the detector's input size or at `eval_size`; `metrics["conditions"]` says which."""
    from latentad.metrics import compute_metrics

    if eval_size is not None and min(as_shape(eval_size)) < 8:
        raise ConfigError(f"--eval-size {eval_size}: must be at least 8 pixels")
    t0 = time.perf_counter()
    with torch.inference_mode():
        pred, labels, masks, paths, defects = score_set(detector, test, f"{detector.name} evaluate", eval_size)
    if labels.min() == labels.max():
        if not (labels.min() == 1 and masks is not None and 0 < masks.sum() < masks.size
                and pred.anomaly_maps is not None):
            raise DataError(f"{test.name}: the test set needs both normal and anomalous images (or anomalous "
                            "images alone, with pixel masks, for a method that gives maps)")
        warnings.warn(f"{test.name}: no normal test image: the image-level metrics are not computed, the pixel "
                      "metrics are (normal pixels of the anomalous images)", stacklevel=2)
    metrics = compute_metrics(labels, pred.image_scores, masks, pred.anomaly_maps, defects)
    per_defect = metrics.pop("per_defect")
    per_image = metrics.pop("aupimo_per_image", None)
    metrics["conditions"]["eval_size"] = eval_size
    metrics["conditions"]["detector_input_size"] = list(detector.input_shape)
    metrics["conditions"]["resize"] = detector.config.resize
    metrics.update(n_images=len(labels), seconds=time.perf_counter() - t0)
    return Evaluation(metrics, pred, labels, paths, defects, per_defect, masks, per_image)
