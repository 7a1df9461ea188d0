"""Watching the line's scores drift before the false alarms pile up.

The service keeps the last `window` image scores. Its drift statistic compares them with the
calibration images' scores (kept in calibration.json) by the Mann-Whitney rank test: z, the
standardised U statistic, is about standard normal while the line looks like its calibration, whatever
the scores' scale, and it accounts for how few calibration images there are (a sign test against their
median alone does not, and alarmed far too often on normal streams: docs/RESULTS.md). Lighting, a new batch of
material or a camera shift moves every score and z with them; a few true defects move it little.
Calibrations without stored scores fall back to that sign test against their median. The alarm is raised when
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

    def state(self, median: float | None, reference: list[float] | None = None) -> dict:
        """The window's anomaly rate, score quantiles, the drift statistic z (against the calibration
        scores `reference`, else their `median`) and whether it alarms."""
        with self.lock:
            s = np.array(self.scores)
            n = len(s)
            rate = float(np.mean(self.flags)) if n else None
        out = {"window": n, "anomaly_rate": rate, "level": self.level,
               "quantiles": {q: float(np.quantile(s, float(q))) for q in ("0.5", "0.9", "0.99")} if n else {},
               "z": None, "alarm": False}
        if n and reference:
            z = rank_z(s, np.asarray(reference, dtype=np.float64))
            out.update(z=z, alarm=bool(n >= self.min_images and abs(z) > self.level))
        elif n and median is not None:
            k = float(np.sum(s > median))
            z = (k - n / 2) / np.sqrt(n / 4)
            out.update(z=float(z), alarm=bool(n >= self.min_images and abs(z) > self.level))
        return out


def rank_z(window: np.ndarray, reference: np.ndarray) -> float:
    """The Mann-Whitney U of `window` against `reference`, standardised (positive: the window scores
    higher); ties count one half."""
    from scipy.stats import rankdata

    n1, n2 = len(window), len(reference)
    ranks = rankdata(np.r_[window, reference])
    u = ranks[:n1].sum() - n1 * (n1 + 1) / 2
    return float((u - n1 * n2 / 2) / np.sqrt(n1 * n2 * (n1 + n2 + 1) / 12))
