"""Watching the line's scores drift before the false alarms pile up.

The service keeps the last `window` image scores. Its drift statistic is a sign test against the
calibration: under no drift, half of the scores of normal parts lie above the calibration images'
median score, so the count k above it among n recent scores is Binomial(n, 1/2) and
z = (k - n/2) / sqrt(n/4) is about standard normal. Lighting, a new batch of material or a camera
shift moves every score and z with them; a few true defects move it little. The alarm is raised when
|z| exceeds `level` (default 4: a false alarm about once in 16,000 independent windows) with at least
`min_images` scores in the window.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np

WINDOW = 200
LEVEL = 4.0
MIN_IMAGES = 30


@dataclass
class Drift:
    window: int = WINDOW
    level: float = LEVEL
    min_images: int = MIN_IMAGES
    scores: deque = field(default_factory=deque)
    flags: deque = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, scores: list[float], flags: list[bool]) -> None:
        with self.lock:
            for s, f in zip(scores, flags, strict=True):
                self.scores.append(float(s))
                self.flags.append(bool(f))
                if len(self.scores) > self.window:
                    self.scores.popleft()
                    self.flags.popleft()

    def clear(self) -> None:
        """A new calibration starts a new watch."""
        with self.lock:
            self.scores.clear()
            self.flags.clear()

    def state(self, median: float | None) -> dict:
        """The window's anomaly rate, score quantiles, the drift statistic z and whether it alarms."""
        with self.lock:
            s = np.array(self.scores)
            n = len(s)
            rate = float(np.mean(self.flags)) if n else None
        out = {"window": n, "anomaly_rate": rate, "level": self.level,
               "quantiles": {q: float(np.quantile(s, float(q))) for q in ("0.5", "0.9", "0.99")} if n else {},
               "z": None, "alarm": False}
        if n and median is not None:
            k = float(np.sum(s > median))
            z = (k - n / 2) / np.sqrt(n / 4)
            out.update(z=float(z), alarm=bool(n >= self.min_images and abs(z) > self.level))
        return out
