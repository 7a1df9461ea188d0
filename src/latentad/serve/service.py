"""What the inspection service does, apart from HTTP: score decoded uploads exactly as `latentad
predict` scores files (the same placement and `evaluation.predict_batch`), within a memory budget,
and swap the calibration atomically and durably from enough good parts."""

from __future__ import annotations

import base64
import io as _io
import math
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from latentad import io
from latentad.calibration import Calibration
from latentad.data.base import Batch, decode_image, peek_pixels, to_input
from latentad.detectors.base import Prediction
from latentad.errors import ConfigError, DataError
from latentad.evaluation import input_placement, predict_batch
from latentad.maps.regions import defect_mask, full_size, mask_png, regions
from latentad.serve.batcher import Batcher, Job
from latentad.serve.budget import Budget, Hold, PixelCount
from latentad.serve.drift import Drift
from latentad.serve.feedback import FeedbackStore

DEFAULT_MAX_PIXELS = 40_000_000  # a 6000x6600 camera frame; a decompression bomb is far beyond
DEFAULT_REQUEST_MPIX = 400  # pixels one request may have decoded, in megapixels (ten such frames)
DEFAULT_BUDGET_MB = 1024  # decoded images held across requests
DECODE_SLOTS = 2  # full-size decodes at once: each is transient, but large
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


def shrink(image: np.ndarray, side: int) -> np.ndarray:
    """A copy of `image` (HxWxC uint8) with its longest side at most `side`."""
    from PIL import Image

    h, w = image.shape[:2]
    if max(h, w) <= side:
        return image.copy()
    scale = side / max(h, w)
    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    out = np.asarray(pil.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR))
    return out if out.ndim == 3 else out[:, :, None]


def images_needed(target_fpr: float) -> int:
    """Normal images a threshold needs to promise `target_fpr`: the fewest n with 1/n <= target."""
    return math.ceil(1.0 / target_fpr - 1e-9)


class Service:
    """The model of a run or an export folder, its calibration, its budget and the counts `/health`
    reports."""

    def __init__(self, model_dir: Path, engine: str = "auto", max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_wait_s: float = 0.01, request_mpix: float = DEFAULT_REQUEST_MPIX,
                 budget_mb: float = DEFAULT_BUDGET_MB, device: str | None = None) -> None:
        from latentad.predict import open_model

        self.model_dir = Path(model_dir)
        from latentad.predict import Products

        self.detector, self.calibration = open_model(self.model_dir, engine, device)
        self.products = Products.of(self.model_dir, None)
        self.drift = Drift()
        self.feedback = FeedbackStore(self.model_dir)
        self.engine = getattr(self.detector, "engine_name", "torch")
        self.size, self.mode = input_placement(self.detector)
        self.max_pixels = max_pixels
        self.request_pixels = int(request_mpix * 1e6)
        self.budget = Budget(int(budget_mb * (1 << 20)))
        self.decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)
        self.lock = threading.Lock()
        self.started = time.time()
        self.images_scored = 0
        self.anomalies = 0
        self.batcher = Batcher(self._score_uploads, self.detector.config.batch_size, max_wait_s)

    # -- decoding (request threads) ---------------------------------------------------------------
    def pixel_count(self) -> PixelCount:
        return PixelCount(self.request_pixels)

    def prepare(self, name: str, data: bytes, overlay: bool, pixels: PixelCount, hold: Hold) -> Upload:
        """An upload decoded as `predict` decodes a file of that content and reduced at once to the
        model's input; refused (one line) when not an image, over the pixel limits or the budget."""
        if not data:
            raise DataError(f"{name}: empty upload (0 bytes)")
        pixels.add(name, peek_pixels(_io.BytesIO(data), name, self.max_pixels))
        with self.decode_slots:  # the full-size decode lives only inside this block
            image = decode_image(_io.BytesIO(data), name, None, self.size, self.max_pixels)
            tensor = to_input(image, self.size, self.detector.config.channels, self.mode)
            upload = Upload(name, tensor, tuple(image.shape[:2]), shrink(image, PREVIEW_SIDE) if overlay else None)
            del image
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

    def _score_uploads(self, uploads: list[Upload]) -> list[dict]:
        from latentad.report.figures import overlay

        pred = self._predict(uploads)
        routed = self.products.calibrations(torch.stack([u.tensor for u in uploads]), self.calibration)
        out = []
        for i, u in enumerate(uploads):
            score = float(pred.image_scores[i])
            name, cal = (u.product, self.products.cals[u.product]) if u.product else routed[i]
            # 0 / 1, as in the is_anomalous column of predict's scores.csv
            row = {"filename": u.name, "score": score, "is_anomalous": int(score > cal.image_threshold),
                   "threshold": float(cal.image_threshold)}
            if name is not None:  # a multi-class run: whose threshold judged it
                row.update(category=name, routed="given" if u.product else "inferred")
            if u.masks != "none" and pred.anomaly_maps is not None and cal.pixel_threshold is not None:
                row.update(pixel_decisions(pred.anomaly_maps[i], u.orig_size, cal.pixel_threshold, u.masks == "png"))
            if u.preview is not None:
                amap = pred.anomaly_maps[i] if pred.anomaly_maps is not None else None
                buf = _io.BytesIO()
                overlay(u.preview, amap, cal).save(buf, format="PNG")
                row["overlay_png"] = base64.b64encode(buf.getvalue()).decode("ascii")
            out.append(row)
        with self.lock:
            self.images_scored += len(out)
            self.anomalies += sum(r["is_anomalous"] for r in out)
        self.drift.add([r["score"] for r in out], [bool(r["is_anomalous"]) for r in out])
        return out

    def check_product(self, product: str | None) -> None:
        """A product named with an upload must be one of the run's (one line otherwise)."""
        if product is None:
            return
        if not self.products.names:
            raise ConfigError(f"product {product!r}: this model is not multi-class (it has one threshold)")
        if product not in self.products.names:
            raise ConfigError(f"product {product!r}: unknown (the products: {', '.join(self.products.names)})")

    def predict(self, uploads: list[Upload], on_done: Callable[[], None] | None = None):
        """A future of one entry per upload, in upload order (batched with concurrent requests): its
        result row, or an `ItemFailed` for an upload whose scoring raised."""
        return self.batcher.submit(Job(items=uploads, on_done=on_done))

    # -- calibration ------------------------------------------------------------------------------
    @property
    def calibration_path(self) -> Path:
        return self.model_dir / "calibration.json"

    @property
    def previous_path(self) -> Path:
        return self.model_dir / "calibration.prev.json"

    def check_calibration(self, n_images: int, target_fpr: float) -> None:
        """Refuse, before any upload is decoded, a recalibration that cannot back its target."""
        if not 0.0 < target_fpr < 1.0:
            raise ConfigError(f"target_fpr {target_fpr}: must be in (0, 1)")
        need = images_needed(target_fpr)
        if n_images < need:
            raise DataError(f"calibrate: {n_images} image{'s' * (n_images != 1)} cannot back target_fpr "
                            f"{target_fpr:g}: send at least {need} normal images (or a target_fpr of at least "
                            f"{1 / max(n_images, 1):.3g})")

    def calibrate(self, uploads: list[Upload], target_fpr: float, on_done: Callable[[], None] | None = None):
        """A future of the new calibration from normal uploads (scored on the model thread, in turn)."""
        self.check_calibration(len(uploads), target_fpr)

        def run() -> dict:
            pred = self._predict(uploads)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                cal = Calibration.from_normal(pred.image_scores, pred.anomaly_maps, target_fpr,
                                              f"{len(uploads)} normal images sent to POST /calibrate")
            with self.lock:
                io.write_bytes(self.previous_path, self.calibration_path.read_bytes())
                cal.save(self.calibration_path)
                self.calibration = cal
                self.drift.clear()
            answer = {"threshold": cal.image_threshold, "target_fpr": target_fpr, "n_images": cal.n_images,
                      "min_fpr": cal.min_fpr}
            if caught:
                answer["warning"] = str(caught[-1].message)
            return answer

        return self.batcher.submit(Job(call=run, on_done=on_done))

    def swap_calibration(self, cal: Calibration) -> None:
        """Make `cal` the calibration, on disk (the previous one kept for undo) and in use."""
        with self.lock:
            io.write_bytes(self.previous_path, self.calibration_path.read_bytes())
            cal.save(self.calibration_path)
            self.calibration = cal
            self.drift.clear()

    def recalibrate_with_feedback(self) -> dict:
        """The threshold over the calibration images and the parts marked good (undo restores it)."""
        from latentad.calibration import with_more_normals

        marked = self.feedback.scores()
        if not marked:
            raise ConfigError("calibrate/feedback: no part has been marked good yet")
        cal = with_more_normals(self.calibration, marked, f"{self.calibration.source} + {len(marked)} parts an "
                                                          "operator marked good")
        self.swap_calibration(cal)
        return {"threshold": cal.image_threshold, "target_fpr": cal.target_fpr, "n_images": cal.n_images,
                "marked": len(marked)}

    def undo(self) -> dict:
        """Restore the calibration the last `/calibrate` replaced (once)."""
        with self.lock:
            if not self.previous_path.is_file():
                raise ConfigError("calibrate/undo: no previous calibration to restore")
            cal = Calibration.load(self.previous_path)
            io.write_bytes(self.calibration_path, self.previous_path.read_bytes())
            self.previous_path.unlink()
            io.sync_folder(self.model_dir)
            self.calibration = cal
            self.drift.clear()
        return {"threshold": cal.image_threshold, "target_fpr": cal.target_fpr, "n_images": cal.n_images}

    # -- state ----------------------------------------------------------------------------------
    def health(self) -> dict:
        """What a probe may see without a token: no path on the server."""
        from latentad.report.figures import heat_scale

        self.batcher.ensure_alive()
        alive = self.batcher.alive
        with self.lock:
            return {"status": "ok" if alive and not self.batcher.restarts else ("degraded" if alive else "down"),
                    "model_thread": {"alive": alive, "restarts": self.batcher.restarts},
                    "method": self.detector.name, "engine": self.engine,
                    "threshold": self.calibration.image_threshold, "target_fpr": self.calibration.target_fpr,
                    "images_scored": self.images_scored, "anomalies": self.anomalies,
                    "uptime_s": round(time.time() - self.started, 3), "input_size": list(self.detector.input_shape),
                    "localizes": self.detector.localizes,
                    "drift": self.drift.state(self.calibration.score_median, self.calibration.normal_scores),
                    "feedback": len(self.feedback.entries()), "heat": dict(zip(("clear_below", "top",
                                                                                "pixel_threshold"),
                                                                               heat_scale(self.calibration),
                                                                               strict=True)),
                    "memory": {"held_mb": round(self.budget.held / (1 << 20), 1),
                               "budget_mb": round(self.budget.limit / (1 << 20), 1)}}

    def close(self) -> None:
        self.batcher.close()

