"""The service's drift watches: one per product (one for a single-class model), each against its
product's calibration scores (`serve.drift`), kept in MODEL_DIR/drift.json so that a restart takes
them up where they were (when the reference is unchanged)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from latentad import io
from latentad.serve.calibrations import Calibrations
from latentad.serve.drift import Drift, fingerprint

log = logging.getLogger("latentad.serve")


def label(key: str | None) -> str:
    return key or "run"


class Watches:
    def __init__(self, model_dir: Path, calibrations: Calibrations) -> None:
        self.path = Path(model_dir) / "drift.json"
        self.calibrations = calibrations
        self.lock = threading.Lock()
        try:
            saved = io.read_json(self.path) if self.path.is_file() else {}
        except Exception:  # noqa: BLE001 (a damaged watch file starts new watches, it does not stop the service)
            saved = {}
        self.watches = {k: self._new(k, saved.get(label(k))) for k in calibrations.products or [None]}

    def _new(self, key: str | None, saved: dict | None = None) -> Drift:
        cal = self.calibrations.get(key)
        watch = Drift(reference=cal.normal_scores, median=cal.score_median)
        if saved:
            watch.restore(saved)
        return watch

    def add(self, rows: list[dict]) -> None:
        """Each scored row to its product's watch (an upload routed nowhere to none)."""
        closed = False
        for key, watch in self.watches.items():
            mine = [r for r in rows if r.get("category") == key and r.get("routed") != "unknown"]
            if mine:
                closed |= watch.add([r["score"] for r in mine], [bool(r["is_anomalous"]) for r in mine])
        if closed:
            self.save()

    def renew(self, key: str | None) -> None:
        """After a write to `key`'s calibration: a new watch if its reference scores changed."""
        cal = self.calibrations.get(key)
        with self.lock:
            old = self.watches[key]
            if fingerprint(old.reference, old.median) != fingerprint(cal.normal_scores, cal.score_median):
                self.watches[key] = self._new(key)
        self.save()

    def state(self, key: str | None) -> dict:
        return self.watches[key].state()

    def summary(self) -> dict:
        """A single-class model's watch; on a multi-class run the product that alarms or whose z is
        furthest out, named, with `alarm` raised when any product's is."""
        if list(self.watches) == [None]:
            return self.state(None)
        states = {k: w.state() for k, w in self.watches.items()}

        def how_far(k: str) -> float:
            s = states[k]
            return (1e9 if s["alarm"] else 0.0) + abs(s["z"] or 0.0)

        worst = max(states, key=how_far)
        return {**states[worst], "product": worst, "alarm": any(s["alarm"] for s in states.values())}

    def save(self) -> None:
        with self.lock:
            data = {label(k): w.to_dict() for k, w in self.watches.items()}
        try:
            io.write_json(self.path, data)
        except OSError as exc:  # a read-only model folder: the watch goes on, unsaved
            log.warning("drift watch not saved (%s)", exc)
