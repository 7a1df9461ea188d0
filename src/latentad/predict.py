"""Scoring new images with a fitted run, and recalibrating its threshold from normal images."""

from __future__ import annotations

import csv
import io as _io
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
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
    its overlay, at the image's own size) and its regions to OUT/regions.csv. Masks and overlays are
    drawn and written by `Outputs` while the model scores the next images."""
    if overlays not in OVERLAYS:
        raise ConfigError(f"--overlays {overlays}: one of {', '.join(OVERLAYS)}")
    detector, cal = open_model(run, engine, device, precision)
    products = Products.of(run, category)
    images = images_from_paths(paths, detector.config.channels, recursive)
    images.keep_originals = overlays != "none"
    if images.keep_originals:
        import latentad.report.figures  # noqa: F401 (matplotlib, imported here once rather than by a writer thread)
    rows: list[dict] = []
    if pixel_size is not None and pixel_size <= 0:
        raise ConfigError(f"--pixel-size {pixel_size}: must be a positive length in mm")
    writer = Outputs(pixel_size)

    def draw(batch, pred) -> None:
        cals = products.calibrations(batch.images, cal)
        for j, (name, score) in enumerate(zip(batch.paths, pred.image_scores, strict=True)):
            i = len(rows)
            product, judge, routed = cals[j]
            flag = judge is None or bool(score > judge.image_threshold)  # an unknown product: flagged for a person
            rows.append({"path": name, "score": float(score), "is_anomalous": int(flag),
                         **products.columns(product, routed)})
            amap = pred.anomaly_maps[j] if pred.anomaly_maps is not None else None
            stem = f"{i:05d}_{Path(name).stem}.png"
            mask = masks and amap is not None and judge is not None and judge.pixel_threshold is not None
            drawn = overlays == "all" or (overlays == "anomalous" and flag)
            if mask or drawn:
                writer.add(Job(name, amap, batch.orig_sizes[j], judge or cal, out / "masks" / stem if mask else None,
                               out / "overlays" / stem if drawn else None, batch.originals[j] if drawn else None))

    writes = overlays != "none" or (masks and pred_localizes(detector))
    with writer, room_for_writers(writes), torch.inference_mode():
        score_set(detector, images, progress=f"{detector.name} predict", on_batch=draw)
        found = writer.regions()
    write_scores_csv(out / "scores.csv", rows)
    if masks and pred_localizes(detector):
        keys = ["path", *REGION_KEYS] + (["area_mm2"] if pixel_size is not None else [])
        write_table(out / "regions.csv", found, keys)
    return rows


def pred_localizes(detector) -> bool:
    return bool(getattr(detector, "localizes", True))


def write_table(path: Path, rows: list[dict], keys: list[str]) -> None:
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    io.write_text(path, buf.getvalue())


@dataclass
class Job:
    """One image's files: its mask (and regions) and its overlay; a path left None is not written."""

    name: str
    amap: np.ndarray | None
    size: tuple[int, int]
    cal: Calibration
    mask: Path | None
    overlay: Path | None
    image: np.ndarray | None


class Outputs:
    """Masks, regions and overlays drawn, encoded and written by worker threads while the model scores
    the next images: encoding a full-size overlay costs more than scoring its image, and PIL's
    encoders, zlib and most of numpy release the GIL. At most `ahead` images wait (each holds its
    decoded file), so memory stays flat and scoring waits only when the writers fall behind. Regions
    come back in image order; a writer's error is raised in the scoring thread."""

    def __init__(self, pixel_size: float | None, workers: int | None = None, ahead: int = 32):
        self.pixel_size, self.ahead = pixel_size, ahead
        self.workers = workers or write_workers()
        self.pending: deque[Future[list[dict]]] = deque()
        self.found: list[dict] = []

    def __enter__(self) -> Outputs:
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="latentad-write")
        return self

    def __exit__(self, kind, *_) -> None:
        self.pool.shutdown(wait=True, cancel_futures=kind is not None)

    def add(self, job: Job) -> None:
        while len(self.pending) >= self.ahead:
            self.found += self.pending.popleft().result()
        self.pending.append(self.pool.submit(write_job, job, self.pixel_size))

    def regions(self) -> list[dict]:
        """Every region found, in image order, once all files are written."""
        while self.pending:
            self.found += self.pending.popleft().result()
        return self.found


@contextmanager
def room_for_writers(active: bool) -> Iterator[None]:
    """Score with one intra-op thread fewer (at least one) while writer threads encode beside it: on a
    small machine the writers otherwise preempt torch's workers, which wait for each other at every
    parallel region. The caller's thread count is restored after."""
    n = torch.get_num_threads()
    if not active or n <= 1:
        yield
        return
    torch.set_num_threads(n - 1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def write_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def write_job(job: Job, pixel_size: float | None) -> list[dict]:
    """Write one image's mask and overlay from its map brought to the image's size once; its regions."""
    full = full_size(job.amap, job.size) if job.amap is not None else None
    found: list[dict] = []
    if job.mask is not None:
        mask = defect_mask(full, job.cal.pixel_threshold)
        io.write_bytes(job.mask, mask_png(mask))
        found = [{"path": job.name, **r} for r in regions(mask, full, pixel_size)]
    if job.overlay is not None:
        write_overlay(job.overlay, job.image, full, job.amap, job.cal)
    return found


def write_overlay(path: Path, image: np.ndarray, full: np.ndarray | None, amap: np.ndarray | None,
                  cal: Calibration) -> None:
    from latentad.report.figures import overlay_pixels  # matplotlib: only when drawing

    io.write_bytes(path, io.png_bytes(overlay_pixels(image, full, cal, amap)))


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

    def calibrations(self, images: torch.Tensor, default: Calibration
                     ) -> list[tuple[str | None, Calibration | None, str | None]]:
        """Each image's (product, calibration, how it was routed); an image further from every product
        than the routing radius set at fit is (None, None, "unknown"): no stranger's threshold judges it."""
        if not self.names:
            return [(None, default, None)] * len(images)
        if self.chosen is not None:
            return [(self.chosen, self.cals[self.chosen], "given")] * len(images)
        from latentad.multiclass import route_known

        return [(self.names[k], self.cals[self.names[k]], "inferred") if known else (None, None, "unknown")
                for k, _, known in route_known(self.router, images)]

    def columns(self, name: str | None, routed: str | None) -> dict:
        if not self.names:
            return {}
        return {"category": name or "", "routed": routed}
