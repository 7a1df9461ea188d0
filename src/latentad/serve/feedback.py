"""The operator's feedback: parts the service flagged that the operator marks as good (false alarms),
kept with their images in MODEL_DIR/feedback/ (each file and the index written atomically, never on
the event loop) and used to recalibrate (`serve.calibrations`).

What keeps feedback from switching detection off: only parts the model flagged are kept (a part it
passed needs no correction, and "good" noise would only raise the threshold); each image is kept
once per product, however often it is sent (by content); each part is stored with the product it
was judged as; and the store is bounded in parts and bytes (507 past either: recalibrate, then clear
it with `clear`).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from pathlib import Path

from latentad import io
from latentad.errors import LatentADError

INDEX = "feedback.json"
MAX_PARTS = 1000
MAX_BYTES = 256 << 20


class FeedbackFull(LatentADError):
    """The feedback store is at its bound (HTTP 507)."""


class FeedbackStore:
    def __init__(self, model_dir: Path, max_parts: int = MAX_PARTS, max_bytes: int = MAX_BYTES) -> None:
        self.folder = Path(model_dir) / "feedback"
        self.max_parts, self.max_bytes = max_parts, max_bytes
        self.lock = threading.Lock()
        f = self.folder / INDEX
        self.parts: list[dict] = io.read_json(f)["parts"] if f.is_file() else []

    def entries(self, product: str | None = None) -> list[dict]:
        """The parts kept (those of `product` on a multi-class run)."""
        with self.lock:
            return [p for p in self.parts if product is None or p.get("product") == product]

    def bytes(self) -> int:
        return sum(p.get("bytes", 0) for p in self.entries())

    def keep(self, name: str, data: bytes, score: float, product: str | None, threshold: float) -> bool:
        """Store one flagged part marked good (blocking: call it off the event loop); False when the
        same image is already kept for this product."""
        digest = hashlib.sha256(data).hexdigest()
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name)[-80:] or "image"
        with self.lock:
            if any(p.get("sha256") == digest and p.get("product") == product for p in self.parts):
                return False
            held = sum(p.get("bytes", 0) for p in self.parts)
            if len(self.parts) + 1 > self.max_parts or held + len(data) > self.max_bytes:
                raise FeedbackFull(f"feedback: the store holds {len(self.parts)} parts ({held / (1 << 20):.1f} MB), "
                                   f"its bound is {self.max_parts} parts and {self.max_bytes >> 20} MB; recalibrate "
                                   "with it, then clear it (POST /feedback/clear)")
            stored = f"{digest[:16]}_{safe}"
            io.write_bytes(self.folder / stored, data)
            entry = {"file": stored, "name": name, "score": float(score), "product": product,
                     "threshold": float(threshold), "sha256": digest, "bytes": len(data), "marked": time.time()}
            io.write_json(self.folder / INDEX, {"parts": [*self.parts, entry]})
            self.parts.append(entry)
        return True

    def scores(self, product: str | None = None) -> list[float]:
        return [p["score"] for p in self.entries(product)]

    def clear(self, product: str | None = None) -> int:
        """Forget the parts (of `product`, or all); their files are removed. The number removed."""
        with self.lock:
            gone = [p for p in self.parts if product is None or p.get("product") == product]
            self.parts = [p for p in self.parts if p not in gone]
            io.write_json(self.folder / INDEX, {"parts": self.parts})
        for p in gone:
            (self.folder / p["file"]).unlink(missing_ok=True)
        return len(gone)
