"""What the inspection service does, apart from HTTP: score decoded uploads exactly as `latentad
predict` scores files (the same `score_set`), and swap the calibration atomically from good parts."""

from __future__ import annotations

import base64
import io as _io
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentad import io
from latentad.calibration import Calibration
from latentad.data.base import ImageSet, array_record, decode_image
from latentad.errors import ConfigError, DataError
from latentad.evaluation import score_set
from latentad.serve.batcher import Batcher, Job

DEFAULT_MAX_PIXELS = 40_000_000  # a 6000x6600 camera frame; a decompression bomb is far beyond


@dataclass
class Upload:
    """One decoded upload; `overlay` asks for its heat-map PNG in the answer."""

    name: str
    image: np.ndarray
    overlay: bool = False


class Service:
    """The model of a run or an export folder, its calibration, and the counts `/health` reports."""

    def __init__(self, model_dir: Path, engine: str = "auto", max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_wait_s: float = 0.01) -> None:
        from latentad.predict import open_model

        self.model_dir = Path(model_dir)
        self.detector, self.calibration = open_model(self.model_dir, engine)
        self.engine = getattr(self.detector, "engine_name", "torch")
        self.max_pixels = max_pixels
        self.lock = threading.Lock()
        self.started = time.time()
        self.images_scored = 0
        self.anomalies = 0
        self.batcher = Batcher(self._score, self.detector.config.batch_size, max_wait_s)

    # -- decoding --------------------------------------------------------------------------------
    def decode(self, name: str, data: bytes) -> np.ndarray:
        """An upload's pixels, decoded as `predict` decodes a file of that content (one-line errors)."""
        if not data:
            raise DataError(f"{name}: empty upload (0 bytes)")
        return decode_image(_io.BytesIO(data), name, None, self.detector.input_shape, self.max_pixels)

    # -- scoring (model thread) ---------------------------------------------------------------------
    def _score(self, uploads: list[Upload]) -> list[dict]:
        from latentad.report.figures import overlay

        images = ImageSet([array_record(u.name, u.image, 0, "unknown") for u in uploads], None,
                          self.detector.config.channels, False, "uploads")
        images.keep_originals = any(u.overlay for u in uploads)
        pred, *_ = score_set(self.detector, images, progress=None)
        cal = self.calibration
        out = []
        for i, u in enumerate(uploads):
            score = float(pred.image_scores[i])
            # 0 / 1, as in the is_anomalous column of predict's scores.csv
            row = {"filename": u.name, "score": score, "is_anomalous": int(score > cal.image_threshold),
                   "threshold": float(cal.image_threshold)}
            if u.overlay:
                amap = pred.anomaly_maps[i] if pred.anomaly_maps is not None else None
                buf = _io.BytesIO()
                overlay(u.image, amap, cal.map_low, cal.map_high).save(buf, format="PNG")
                row["overlay_png"] = base64.b64encode(buf.getvalue()).decode("ascii")
            out.append(row)
        with self.lock:
            self.images_scored += len(out)
            self.anomalies += sum(r["is_anomalous"] for r in out)
        return out

    def predict(self, uploads: list[Upload]):
        """A future of one result per upload, in upload order (batched with concurrent requests)."""
        return self.batcher.submit(Job(items=uploads))

    # -- calibration ------------------------------------------------------------------------------
    @property
    def calibration_path(self) -> Path:
        return self.model_dir / "calibration.json"

    @property
    def previous_path(self) -> Path:
        return self.model_dir / "calibration.prev.json"

    def calibrate(self, uploads: list[Upload], target_fpr: float):
        """A future of the new calibration from normal uploads (scored on the model thread, in turn)."""
        if not 0.0 < target_fpr < 1.0:
            raise ConfigError(f"target_fpr {target_fpr}: must be in (0, 1)")
        if not uploads:
            raise DataError("calibrate: no images (send normal images as 'files')")

        def run() -> dict:
            images = ImageSet([array_record(u.name, u.image, 0, "good") for u in uploads], None,
                              self.detector.config.channels, False, "calibration")
            pred, *_ = score_set(self.detector, images, progress=None)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                cal = Calibration.from_normal(pred.image_scores, pred.anomaly_maps, target_fpr,
                                              f"{len(uploads)} normal images sent to POST /calibrate")
            with self.lock:
                io.write_bytes(self.previous_path, self.calibration_path.read_bytes())
                cal.save(self.calibration_path)
                self.calibration = cal
            answer = {"threshold": cal.image_threshold, "target_fpr": target_fpr, "n_images": cal.n_images,
                      "min_fpr": cal.min_fpr}
            if caught:
                answer["warning"] = str(caught[-1].message)
            return answer

        return self.batcher.submit(Job(call=run))

    def undo(self) -> dict:
        """Restore the calibration the last `/calibrate` replaced (once)."""
        with self.lock:
            if not self.previous_path.is_file():
                raise ConfigError("calibrate/undo: no previous calibration to restore")
            cal = Calibration.load(self.previous_path)
            io.write_bytes(self.calibration_path, self.previous_path.read_bytes())
            self.previous_path.unlink()
            self.calibration = cal
        return {"threshold": cal.image_threshold, "target_fpr": cal.target_fpr, "n_images": cal.n_images}

    # -- state ----------------------------------------------------------------------------------
    def health(self) -> dict:
        with self.lock:
            return {"status": "ok", "model": str(self.model_dir), "method": self.detector.name,
                    "engine": self.engine, "threshold": self.calibration.image_threshold,
                    "target_fpr": self.calibration.target_fpr, "images_scored": self.images_scored,
                    "anomalies": self.anomalies, "uptime_s": round(time.time() - self.started, 3),
                    "input_size": list(self.detector.input_shape), "localizes": self.detector.localizes}

    def close(self) -> None:
        self.batcher.close()
