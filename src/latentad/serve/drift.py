"""Watching the line's scores drift before the false alarms pile up.

Scores are cut into consecutive blocks of `window` images, and each completed block is tested once
against the calibration images' scores (kept in calibration.json) by the Mann-Whitney rank test: z,
the standardised U statistic, is about standard normal while the line looks like its calibration,
whatever the scores' scale, and its variance allows for how few calibration images there are.
Lighting, a new batch of material or a camera shift moves every score and z with them; a few true
defects move it little. The alarm is raised when a block's |z| exceeds `level` and stays up until
the next block is complete.

The false-alarm rate, stated honestly: a window sliding by one image is tested after every image on
data it shares with the previous 199 tests, so a once-per-window rate said nothing about how often
it alarms. Here each image is in one test only: at level 4 a block alarms with probability about
6.3e-5 on a line like its calibration, so the expected number of false alarms is 6.3e-5 per block
(about one per three million images at 200 per block). That sum holds whatever the dependence
between blocks, which share one fixed reference: expectations add up. For one given calibration
the rate can differ from it (a reference drawn low alarms more often); the rate averages over the
reference's draw. Calibrations without stored scores fall back to a sign test against their
median. The current, incomplete block's z is shown but never alarms.

On a multi-class run each product has its own watch against its own calibration, so a change of
product mix alone does not move any z. A watch is kept across restarts (`to_dict`, saved by the
service), and across writes that keep the product's reference scores (feedback recalibrations and
their undo); a calibration from new good images changes the reference and starts a new watch.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field

import numpy as np

WINDOW = 200
LEVEL = 4.0


def fingerprint(reference: list[float] | None, median: float | None) -> str:
    """What a watch is measured against, in a few characters (a watch restored from disk must match)."""
    return hashlib.sha256(json.dumps([reference, median]).encode()).hexdigest()[:16]


@dataclass
class Drift:
    window: int = WINDOW
    level: float = LEVEL
    reference: list[float] | None = None  # the calibration images' scores
    median: float | None = None  # their median (calibrations without stored scores)
    scores: list = field(default_factory=list)  # the current block
    flags: list = field(default_factory=list)
    last: dict | None = None  # the last completed block's test
    blocks: int = 0
    alarms: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, scores: list[float], flags: list[bool]) -> bool:
        """Append scores (and their verdicts); True when a block was completed and tested."""
        closed = False
        with self.lock:
            for s, f in zip(scores, flags, strict=True):
                self.scores.append(float(s))
                self.flags.append(bool(f))
                if len(self.scores) >= self.window:
                    self.last = self._test(self.scores, self.flags)
                    self.blocks += 1
                    self.alarms += int(self.last["alarm"])
                    self.scores, self.flags, closed = [], [], True
        return closed

    def _test(self, scores: list[float], flags: list[bool]) -> dict:
        s = np.asarray(scores, dtype=np.float64)
        z = self.z(s)
        return {"images": len(s), "z": z, "alarm": bool(z is not None and abs(z) > self.level),
                "anomaly_rate": float(np.mean(flags)) if len(flags) else None}

    def z(self, s: np.ndarray) -> float | None:
        if not len(s):
            return None
        if self.reference:
            return rank_z(s, np.asarray(self.reference, dtype=np.float64))
        if self.median is not None:
            k = float(np.sum(s > self.median))
            return float((k - len(s) / 2) / np.sqrt(len(s) / 4))
        return None

    def clear(self) -> None:
        with self.lock:
            self.scores, self.flags, self.last, self.blocks, self.alarms = [], [], None, 0, 0

    def state(self) -> dict:
        """The current block's anomaly rate, quantiles and z (shown, never alarming), and the alarm
        of the last completed block."""
        with self.lock:
            s, flags, last = np.array(self.scores), list(self.flags), self.last
            blocks, alarms = self.blocks, self.alarms
        n = len(s)
        return {"window": n, "block": self.window, "level": self.level,
                "anomaly_rate": float(np.mean(flags)) if n else None,
                "quantiles": {q: float(np.quantile(s, float(q))) for q in ("0.5", "0.9", "0.99")} if n else {},
                "z": self.z(s),
                "alarm": bool(last and last["alarm"]), "last_block": last, "blocks": blocks, "alarms": alarms}

    def to_dict(self) -> dict:
        with self.lock:
            return {"reference": fingerprint(self.reference, self.median), "window": self.window,
                    "scores": list(self.scores), "flags": list(self.flags), "last": self.last,
                    "blocks": self.blocks, "alarms": self.alarms}

    def restore(self, saved: dict) -> bool:
        """Take up a saved watch when it was kept against the same reference and block size."""
        if saved.get("reference") != fingerprint(self.reference, self.median) or saved.get("window") != self.window:
            return False
        with self.lock:
            self.scores, self.flags = list(saved["scores"]), list(saved["flags"])
            self.last, self.blocks, self.alarms = saved["last"], int(saved["blocks"]), int(saved["alarms"])
        return True


def rank_z(window: np.ndarray, reference: np.ndarray) -> float:
    """The Mann-Whitney U of `window` against `reference`, standardised (positive: the window scores
    higher); ties count one half."""
    from scipy.stats import rankdata

    n1, n2 = len(window), len(reference)
    ranks = rankdata(np.r_[window, reference])
    u = ranks[:n1].sum() - n1 * (n1 + 1) / 2
    return float((u - n1 * n2 / 2) / np.sqrt(n1 * n2 * (n1 + n2 + 1) / 12))
