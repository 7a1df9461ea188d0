"""The operator's feedback: parts the service flagged that the operator marks as good (false alarms),
kept with their images in MODEL_DIR/feedback/ (each file and the index written atomically), and used
to recalibrate: the threshold recomputed over the calibration images' scores and these parts' scores
together (the previous calibration kept for undo)."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from latentad import io

INDEX = "feedback.json"


class FeedbackStore:
    def __init__(self, model_dir: Path) -> None:
        self.folder = Path(model_dir) / "feedback"
        self.lock = threading.Lock()

    def entries(self) -> list[dict]:
        f = self.folder / INDEX
        return io.read_json(f)["parts"] if f.is_file() else []

    def keep(self, name: str, data: bytes, score: float) -> dict:
        """Store one part marked good: its image under a fresh name, then the index (both atomic)."""
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name)[-80:] or "image"
        with self.lock:
            parts = self.entries()
            stored = f"{len(parts):05d}_{safe}"
            io.write_bytes(self.folder / stored, data)
            entry = {"file": stored, "name": name, "score": float(score), "marked": time.time()}
            io.write_json(self.folder / INDEX, {"parts": [*parts, entry]})
        return entry

    def scores(self) -> list[float]:
        return [p["score"] for p in self.entries()]
