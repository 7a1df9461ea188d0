"""Scoring new images with a fitted run, and recalibrating its threshold from normal images."""

from __future__ import annotations

import csv
import io as _io
from pathlib import Path

import numpy as np
import torch

from latentad import io
from latentad.calibration import Calibration
from latentad.data.base import IMAGE_SUFFIXES, ImageSet, file_record, list_images
from latentad.errors import ConfigError, DataError
from latentad.evaluation import score_set
from latentad.maps.regions import REGION_KEYS, defect_mask, full_size, mask_png, regions
from latentad.runs import load_run, write_scores_csv


def images_from_paths(paths: list[Path], channels: int, recursive: bool = True) -> ImageSet:
    """Files and folders of images (folders with their sub-folders when `recursive`) -> one ImageSet.

    Files are decoded in their own mode and brought to the detector's channels by the same conversion
    as every other path (`data.color`), so `predict` scores an image as `evaluate` does."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += list_images(p, recursive)
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(f"{p}: not an image file (suffix {p.suffix or 'none'})")
            files.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    if not files:
        raise DataError(f"{', '.join(map(str, paths))}: no images found"
                        + ("" if recursive else " (sub-folders not searched: --recursive)"))
    return ImageSet([file_record(f, 0, "unknown", None, None, False) for f in files], None, channels, False,
                    "images")


OVERLAYS = ("all", "anomalous", "none")
ENGINES = ("auto", "torch", "onnxruntime", "openvino")


def open_model(run: Path, engine: str = "auto", device: str | None = None, precision: str | None = None):
    """(detector, calibration) of a run folder (torch) or of an export folder (onnxruntime / openvino);
    `auto` takes torch for a run and onnxruntime for an export."""
    from latentad.export.engine import ExportedDetector, is_export

    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine}: one of {', '.join(ENGINES)}")
    if is_export(run):
        if engine == "torch":
            raise ConfigError(f"--engine torch: {run} is an export folder (use --engine onnxruntime or openvino, "
                              "or --run the run folder it was exported from)")
        if device not in (None, "auto", "cpu") or precision not in (None, "32"):
            raise ConfigError(f"{run}: an export runs on the CPU in float32 (--device / --precision apply to torch)")
        return ExportedDetector(run, "onnxruntime" if engine == "auto" else engine), \
            Calibration.load(run / "calibration.json")
    if engine not in ("auto", "torch"):
        raise ConfigError(f"--engine {engine}: {run} is a run folder; export it first "
                          f"(latentad export --run {run} --to {'onnx' if engine == 'onnxruntime' else engine} "
                          "--out DIR) and pass --run DIR")
    _, detector, cal = load_run(run, device, precision)
    return detector, cal


def predict_paths(run: Path, out: Path, paths: list[Path], recursive: bool = True, device: str | None = None,
                  precision: str | None = None, overlays: str = "all", engine: str = "auto",
                  category: str | None = None, masks: bool = True, pixel_size: float | None = None) -> list[dict]:
    """Score files; `overlays` says which images get a heat-map PNG (none: scores only, no encoding).
    Each file is decoded once: the overlay is drawn from the copy the scoring batch carried. On a
    multi-class run each image is judged by its product's threshold: `category`, or the one it is
    routed to (the `category` and `routed` columns say which). With `masks` (and a localising model
    whose calibration has a pixel threshold) each image's defect mask goes to OUT/masks/ (named like
    its overlay, at the image's own size) and its regions to OUT/regions.csv."""
    if overlays not in OVERLAYS:
        raise ConfigError(f"--overlays {overlays}: one of {', '.join(OVERLAYS)}")
    detector, cal = open_model(run, engine, device, precision)
    products = Products.of(run, category)
    images = images_from_paths(paths, detector.config.channels, recursive)
    images.keep_originals = overlays != "none"
    rows: list[dict] = []
    found: list[dict] = []
    if pixel_size is not None and pixel_size <= 0:
        raise ConfigError(f"--pixel-size {pixel_size}: must be a positive length in mm")

    def draw(batch, pred) -> None:
        cals = products.calibrations(batch.images, cal)
        for j, (name, score) in enumerate(zip(batch.paths, pred.image_scores, strict=True)):
            i = len(rows)
            flag = bool(score > cals[j][1].image_threshold)
            rows.append({"path": name, "score": float(score), "is_anomalous": int(flag),
                         **products.columns(cals[j][0])})
            if masks and pred.anomaly_maps is not None and cals[j][1].pixel_threshold is not None:
                found.extend(write_mask(out / "masks" / f"{i:05d}_{Path(name).stem}.png", name, pred.anomaly_maps[j],
                                        batch.orig_sizes[j], cals[j][1].pixel_threshold, pixel_size))
            if overlays == "all" or (overlays == "anomalous" and flag):
                from latentad.report.figures import save_overlay  # matplotlib: only when drawing

                amap = pred.anomaly_maps[j] if pred.anomaly_maps is not None else None
                save_overlay(out / "overlays" / f"{i:05d}_{Path(name).stem}.png", batch.originals[j], amap,
                             cals[j][1])

    with torch.inference_mode():
        score_set(detector, images, progress=f"{detector.name} predict", on_batch=draw)
    write_scores_csv(out / "scores.csv", rows)
    if masks and pred_localizes(detector):
        keys = ["path", *REGION_KEYS] + (["area_mm2"] if pixel_size is not None else [])
        write_table(out / "regions.csv", found, keys)
    return rows


def pred_localizes(detector) -> bool:
    return bool(getattr(detector, "localizes", True))


def write_mask(path: Path, name: str, amap: np.ndarray, shape: tuple[int, int], threshold: float,
               pixel_size: float | None) -> list[dict]:
    """The image's defect mask (PNG, 0 / 255, at its own size) and its regions (rows naming the image)."""
    full = full_size(amap, shape)
    mask = defect_mask(full, threshold)
    io.write_bytes(path, mask_png(mask))
    return [{"path": name, **r} for r in regions(mask, full, pixel_size)]


def write_table(path: Path, rows: list[dict], keys: list[str]) -> None:
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    io.write_text(path, buf.getvalue())


def recalibrate(run: Path, paths: list[Path], target_fpr: float, recursive: bool = True,
                device: str | None = None, engine: str = "auto") -> Calibration:
    """A new threshold and heat-map scale from normal images, written over the run's (or the export's)
    calibration.json; the model is not touched."""
    detector, _ = open_model(run, engine, device)
    images = images_from_paths(paths, detector.config.channels, recursive)
    with torch.inference_mode():
        pred, *_ = score_set(detector, images, progress=f"{detector.name} calibrate")
    cal = Calibration.from_normal(pred.image_scores, pred.anomaly_maps, target_fpr,
                                  f"{len(images)} normal images given to `latentad calibrate`")
    cal.save(run / "calibration.json")
    return cal


class Products:
    """The thresholds of a multi-class run: one named product's, or each image's routed one."""

    def __init__(self, names: list[str], cals: dict[str, Calibration], chosen: str | None, router: dict | None):
        self.names, self.cals, self.chosen, self.router = names, cals, chosen, router

    @staticmethod
    def of(run: Path, category: str | None) -> Products:
        config = io.read_json(run / "config.json") if (run / "config.json").is_file() else {}
        cats = [c["name"] for c in config.get("categories", [])]
        if not cats:
            if category is not None:
                raise ConfigError(f"--category {category}: {run} is not a multi-class run (it has one threshold)")
            return Products([], {}, None, None)
        if category is not None and category not in cats:
            raise ConfigError(f"--category {category}: not a product of this run (its products: {', '.join(cats)})")
        cals = {n: Calibration.load(run / "calibrations" / f"{n}.json") for n in cats}
        router = None if category is not None else io.read_tensors(run / "routing.safetensors")
        return Products(cats, cals, category, router)

    def calibrations(self, images: torch.Tensor, default: Calibration) -> list[tuple[str | None, Calibration]]:
        if not self.names:
            return [(None, default)] * len(images)
        if self.chosen is not None:
            return [(self.chosen, self.cals[self.chosen])] * len(images)
        from latentad.multiclass import route

        return [(self.names[k], self.cals[self.names[k]]) for k in route(self.router, images)]

    def columns(self, name: str | None) -> dict:
        if not self.names:
            return {}
        return {"category": name, "routed": "given" if self.chosen is not None else "inferred"}
