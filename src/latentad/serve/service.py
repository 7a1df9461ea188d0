"""What the inspection service does, apart from HTTP: score decoded uploads exactly as `latentad
predict` scores files (the same placement and `evaluation.predict_batch`), within a memory budget,
judge each by the calibration of its product, and swap calibrations atomically and durably."""

from __future__ import annotations

import base64
import io as _io
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from latentad.calibration import Calibration
from latentad.data.base import Batch
from latentad.detectors.base import Prediction
from latentad.errors import DataError
from latentad.evaluation import input_placement, predict_batch
from latentad.maps.regions import defect_mask, full_size, mask_png, regions
from latentad.serve.batcher import Batcher, Job
from latentad.serve.budget import Budget, Hold, PixelCount
from latentad.serve.calibrations import Calibrations
from latentad.serve.decoder import DecodeJob, DecodePool, Ticket
from latentad.serve.feedback import FeedbackStore
from latentad.serve.formats import check_size, sniff
from latentad.serve.watch import Watches

DEFAULT_MAX_PIXELS = 40_000_000  # a 6000x6600 camera frame; a decompression bomb is far beyond
DEFAULT_REQUEST_MPIX = 400  # pixels one request may have decoded, in megapixels (ten such frames)
DEFAULT_BUDGET_MB = 512  # bodies, decoded inputs and answers held across requests
DECODE_SLOTS = 2  # decode worker processes: full-size decodes at once
DEFAULT_DECODE_CPU_S = 5.0  # CPU seconds one decode may take before its worker is killed
DECODE_MEMORY_MB = 1024  # what one decode worker may allocate beyond its start
PREVIEW_SIDE = 1024  # longest side of the copy kept for an overlay


@dataclass
class Upload:
    """One upload reduced right after decoding: the model's input as `predict` would build it from a
    file of the same content, the original's size (to map maps back), and, when an overlay is asked
    for, a copy of the picture at most PREVIEW_SIDE on its longest side."""

    name: str
    tensor: torch.Tensor
    orig_size: tuple[int, int]
    preview: np.ndarray | None = None
    product: str | None = None  # a multi-class run: the product named with the upload
    masks: str = "regions"  # pixel decisions in the answer: "none", "regions", or "png" (regions + the mask)

    @property
    def nbytes(self) -> int:
        return self.tensor.numel() * self.tensor.element_size() + (0 if self.preview is None else self.preview.nbytes)


def pixel_decisions(amap: np.ndarray, size: tuple[int, int], threshold: float, with_png: bool) -> dict:
    """The answer's pixel decisions: regions at the calibrated pixel threshold, and with `with_png` the
    defect mask itself (PNG, 0 / 255, at the image's own size, base64) as `predict` writes it."""
    full = full_size(amap, size)
    mask = defect_mask(full, threshold)
    out = {"regions": regions(mask, full), "pixel_threshold": float(threshold)}
    if with_png:
        out["mask_png"] = base64.b64encode(mask_png(mask)).decode("ascii")
    return out


def images_needed(target_fpr: float) -> int:
    """Normal images a threshold needs to promise `target_fpr`: the fewest n with 1/n <= target."""
    return math.ceil(1.0 / target_fpr - 1e-9)


class Service:
    """The model of a run or an export folder, its calibrations, decode workers, budget and the counts
    `/health` reports."""

    def __init__(self, model_dir: Path, engine: str = "auto", max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_wait_s: float = 0.01, request_mpix: float = DEFAULT_REQUEST_MPIX,
                 budget_mb: float = DEFAULT_BUDGET_MB, device: str | None = None,
                 decode_cpu_s: float = DEFAULT_DECODE_CPU_S) -> None:
        from latentad.predict import Products, open_model

        self.model_dir = Path(model_dir)
        self.detector, calibration = open_model(self.model_dir, engine, device)
        products = Products.of(self.model_dir, None)
        self.router = products.router
        self.calibrations = Calibrations(self.model_dir, calibration, products.names)
        self.run_calibration = calibration  # a multi-class run's pooled one: /health shows it
        self.watches = Watches(self.model_dir, self.calibrations)
        self.feedback = FeedbackStore(self.model_dir)
        self.engine = getattr(self.detector, "engine_name", "torch")
        self.size, self.mode = input_placement(self.detector)
        self.max_pixels = max_pixels
        self.request_pixels = int(request_mpix * 1e6)
        self.budget = Budget(int(budget_mb * (1 << 20)))
        self.decoders = DecodePool(DECODE_SLOTS, decode_cpu_s, DECODE_MEMORY_MB)
        self.lock = threading.Lock()
        self.started = time.time()
        self.images_scored = 0
        self.anomalies = 0
        self.unknown = 0
        self.warm_up()
        self.batcher = Batcher(self._score_uploads, self.detector.config.batch_size, max_wait_s)

    def warm_up(self) -> None:
        """Decode a blank image in every decode worker and score it once, so that the first request
        does not pay the one-time costs (imports, the model's first forward)."""
        from PIL import Image

        buf = _io.BytesIO()
        h, w = self.size or (64, 64)
        Image.new("RGB", (w, h), (128, 128, 128)).save(buf, format="PNG")
        uploads = [self.prepare("warm-up.png", buf.getvalue(), False, self.pixel_count(), Budget(1 << 40).hold())
                   for _ in range(DECODE_SLOTS)]
        self._predict(uploads[:1])

    @property
    def products(self) -> list[str]:
        return self.calibrations.products

    @property
    def calibration(self) -> Calibration:
        """The calibration a single-class model judges by (a multi-class run's pooled one)."""
        return self.run_calibration if self.products else self.calibrations.get(None)

    # -- decoding (request threads; the pixels themselves in a decode worker) ----------------------
    def pixel_count(self) -> PixelCount:
        return PixelCount(self.request_pixels)

    def prepare(self, name: str, data: bytes, overlay: bool, pixels: PixelCount, hold: Hold,
                ticket: Ticket | None = None) -> Upload:
        """An upload decoded as `predict` decodes a file of that content and reduced to the model's
        input in a decode worker; refused (one line) when not an accepted image, over a structural
        cap, the pixel limits, its CPU time or the budget. Blocking: call it in a thread."""
        if not data:
            raise DataError(f"{name}: empty upload (0 bytes)")
        pixels.add(name, check_size(name, sniff(name, data), self.max_pixels))
        job = DecodeJob(name, data, self.size, self.detector.config.channels, self.mode, self.max_pixels,
                        PREVIEW_SIDE if overlay else None)
        out = self.decoders.run(job, ticket)
        upload = Upload(name, torch.from_numpy(out.tensor), out.orig_size, out.preview)
        hold.add(upload.nbytes)
        return upload

    # -- scoring (model thread) -------------------------------------------------------------------
    def _predict(self, uploads: list[Upload]) -> Prediction:
        grid = self.detector.input_shape
        groups = [[u] for u in uploads] if self.size is None else [uploads]  # tiled: one whole image at a time
        parts = []
        with torch.inference_mode():
            for group in groups:
                batch = Batch(torch.stack([u.tensor for u in group]), None, torch.zeros(len(group), dtype=torch.long),
                              [u.name for u in group], ["unknown"] * len(group), [u.orig_size for u in group])
                parts.append(predict_batch(self.detector, batch, grid, self.mode))
        return Prediction.concat(parts)

    def judges(self, uploads: list[Upload]) -> list[tuple[str | None, str | None, float | None]]:
        """Each upload's (product, how it was chosen, routing distance): the product named with it,
        else its routed one, else (None, "unknown", distance) when it lies beyond every product's
        routing radius. A single-class model: (None, None, None)."""
        if not self.products:
            return [(None, None, None)] * len(uploads)
        from latentad.multiclass import route_known

        out: list = [(u.product, "given", None) if u.product else None for u in uploads]
        todo = [i for i, o in enumerate(out) if o is None]
        if todo:
            routed = route_known(self.router, torch.stack([uploads[i].tensor for i in todo]))
            for i, (k, dist, known) in zip(todo, routed, strict=True):
                out[i] = (self.products[k], "inferred", dist) if known else (None, "unknown", dist)
        return out

    def _score_uploads(self, uploads: list[Upload]) -> list[dict]:
        pred = self._predict(uploads)
        out = [self._row(u, float(pred.image_scores[i]), pred.anomaly_maps[i] if pred.anomaly_maps is not None
                         else None, judge) for i, (u, judge) in enumerate(zip(uploads, self.judges(uploads),
                                                                                   strict=True))]
        with self.lock:
            self.images_scored += len(out)
            self.anomalies += sum(r["is_anomalous"] for r in out)
            self.unknown += sum(r.get("routed") == "unknown" for r in out)
        self.watches.add(out)
        return out

    def _row(self, u: Upload, score: float, amap, judge) -> dict:
        from latentad.report.figures import overlay

        product, how, dist = judge
        if how == "unknown":  # no product's threshold applies: flagged for a person to look at
            row = {"filename": u.name, "score": score, "is_anomalous": 1, "threshold": None, "category": None,
                   "routed": "unknown", "route_distance": dist}
            cal = self.run_calibration
        else:
            cal = self.calibrations.get(product)
            # 0 / 1, as in the is_anomalous column of predict's scores.csv
            row = {"filename": u.name, "score": score, "is_anomalous": int(score > cal.image_threshold),
                   "threshold": float(cal.image_threshold)}
            if how is not None:  # a multi-class run: whose threshold judged it
                row.update(category=product, routed=how)
            if u.masks != "none" and amap is not None and cal.pixel_threshold is not None:
                row.update(pixel_decisions(amap, u.orig_size, cal.pixel_threshold, u.masks == "png"))
        if u.preview is not None:
            buf = _io.BytesIO()
            overlay(u.preview, amap, cal).save(buf, format="PNG")
            row["overlay_png"] = base64.b64encode(buf.getvalue()).decode("ascii")
        return row

    def predict(self, uploads: list[Upload], on_done: Callable[[], None] | None = None):
        """A future of one entry per upload, in upload order (batched with concurrent requests): its
        result row, or an `ItemFailed` for an upload whose scoring raised."""
        return self.batcher.submit(Job(items=uploads, on_done=on_done))

    # -- calibration ------------------------------------------------------------------------------
    def check_calibration(self, n_images: int, target_fpr: float) -> None:
        """Refuse, before any upload is decoded, a recalibration that cannot back its target."""
        from latentad.errors import ConfigError

        if not 0.0 < target_fpr < 1.0:
            raise ConfigError(f"target_fpr {target_fpr}: must be in (0, 1)")
        need = images_needed(target_fpr)
        if n_images < need:
            raise DataError(f"calibrate: {n_images} image{'s' * (n_images != 1)} cannot back target_fpr "
                            f"{target_fpr:g}: send at least {need} normal images (or a target_fpr of at least "
                            f"{1 / max(n_images, 1):.3g})")

    def calibrate(self, uploads: list[Upload], target_fpr: float, key: str | None,
                  on_done: Callable[[], None] | None = None):
        """A future of `key`'s new calibration from normal uploads (scored on the model thread, in turn)."""
        import warnings

        self.check_calibration(len(uploads), target_fpr)

        def run() -> dict:
            pred = self._predict(uploads)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                cal = Calibration.from_normal(pred.image_scores, pred.anomaly_maps, target_fpr,
                                              f"{len(uploads)} normal images sent to POST /calibrate")
            self.calibrations.swap(key, cal)
            self.watches.renew(key)
            answer = {**self.described(key, cal), "min_fpr": cal.min_fpr}
            if caught:
                answer["warning"] = str(caught[-1].message)
            return answer

        return self.batcher.submit(Job(call=run, on_done=on_done))

    @staticmethod
    def described(key: str | None, cal: Calibration) -> dict:
        out = {"threshold": cal.image_threshold, "target_fpr": cal.target_fpr, "n_images": cal.n_images}
        return out if key is None else {**out, "product": key}

    def recalibrate_with_feedback(self, key: str | None, force: bool = False) -> dict:
        """`key`'s threshold rebuilt from its base calibration and the flagged parts marked good
        (`serve.calibrations`); undo restores the one it replaced. Blocking: call it in a thread."""
        from latentad.errors import ConfigError
        from latentad.serve.calibrations import with_feedback

        marked = self.feedback.scores(key) if key is not None else self.feedback.scores()
        if not marked:
            raise ConfigError("calibrate/feedback: no part has been marked good yet"
                              + (f" for product {key!r}" if key else ""))
        base = self.calibrations.feedback_base(key)
        cal, capped = with_feedback(base, marked, force)
        self.calibrations.swap(key, cal)
        self.calibrations.derived(key, cal)
        self.watches.renew(key)
        answer = {**self.described(key, cal), "marked": len(marked), "base_threshold": base.image_threshold}
        if capped is not None:
            answer["capped_at"] = capped
            answer["warning"] = ("the parts marked good would lift the threshold above the calibration's top "
                                 f"score; held at {capped:.6g} (send force=true to lift it anyway)")
        return answer

    def undo(self, key: str | None) -> dict:
        """Restore the calibration `key`'s newest write replaced (again and again, to the first).
        Blocking: call it in a thread."""
        cal = self.calibrations.undo(key)
        self.watches.renew(key)
        return self.described(key, cal)

    # -- state ----------------------------------------------------------------------------------
    def health(self) -> dict:
        """What a probe may see without a token: no path on the server."""
        from latentad.report.figures import heat_scale

        self.batcher.ensure_alive()
        alive = self.batcher.alive
        cal = self.calibration
        with self.lock:
            counts = {"images_scored": self.images_scored, "anomalies": self.anomalies}
        out = {"status": "ok" if alive and not self.batcher.restarts else ("degraded" if alive else "down"),
               "model_thread": {"alive": alive, "restarts": self.batcher.restarts},
               "method": self.detector.name, "engine": self.engine,
               "threshold": cal.image_threshold, "target_fpr": cal.target_fpr, **counts,
               "uptime_s": round(time.time() - self.started, 3), "input_size": list(self.detector.input_shape),
               "localizes": self.detector.localizes, "drift": self.watches.summary(),
               "feedback": len(self.feedback.entries()),
               "heat": dict(zip(("clear_below", "top", "pixel_threshold"), heat_scale(cal), strict=True)),
               "memory": {"held_mb": round(self.budget.held / (1 << 20), 1),
                          "budget_mb": round(self.budget.limit / (1 << 20), 1)},
               "decoders": {"slots": self.decoders.slots, "killed": self.decoders.killed,
                            "cancelled": self.decoders.cancelled}}
        if self.products:
            out["routed_unknown"] = self.unknown
            out["products"] = {p: {**self.described(None, self.calibrations.get(p)), "drift": self.watches.state(p),
                                   "feedback": len(self.feedback.entries(p))} for p in self.products}
        return out

    def close(self) -> None:
        """Kill the decode workers, stop the model thread, keep the drift watches (again: nothing)."""
        if self.decoders.closed:
            return
        self.decoders.close()
        self.batcher.close()
        self.watches.save()
