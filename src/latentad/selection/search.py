"""Successive halving over the portfolio inside a time budget.

Rung r fits every surviving candidate on a nested subset of the fitting images (a quarter, a half,
all of them) and scores the validation folds; after each rung the better half goes on. Cheap
candidates run first. Before a candidate starts, its time is estimated (its own earlier rung scaled
to the new size, or its cost prior times what the candidates run so far took per image) and the
candidate is skipped when that, plus the final fit of the best one so far, would overrun the budget,
or when one rung of it alone would take more than MAX_SHARE of the budget (it would crowd out the
rest of the search). A candidate runs under a deadline of DEADLINE_FACTOR times its estimate (at
least DEADLINE_FLOOR seconds, never past what the budget leaves): one that runs past it is stopped
(`progress.deadline`), so a slow machine or a bad estimate costs one candidate, not the search. A
candidate that raises (out of memory, a linear-algebra failure, missing weights) is pruned with its
error and the search goes on. Everything pruned is recorded with when and why; `budget_limited`
says whether the budget (or the machine's load) left any candidate out.

`LATENTAD_FAIL_CANDIDATE=NAME` makes candidate NAME's fit raise: a failpoint for tests and checks.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from latentad.errors import ConfigError, OverTime
from latentad.progress import deadline
from latentad.selection.folds import Validation, fold_figures
from latentad.selection.portfolio import Candidate

MIN_RUNG = 16  # the smallest fitting subset a rung uses
RUNGS = 3
MAX_SHARE = 0.35  # no single candidate's rung may take more than this share of the whole budget
PRIOR_SECONDS_PER_IMAGE = 0.05  # gaussian on 2 CPU cores, per image fitted or scored, before anything ran
DEADLINE_FACTOR = 4.0  # a candidate may take this many times its estimate before it is stopped
DEADLINE_FLOOR = 60.0  # seconds: estimates of a first, short run are rough
FAILPOINT = "LATENTAD_FAIL_CANDIDATE"
BUDGET_REASONS = ("budget", "over time")  # the prunings that mean the budget left a candidate out
log = logging.getLogger("latentad")


@dataclass
class Clock:
    budget: float
    start: float = field(default_factory=time.perf_counter)

    def spent(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget - self.spent()


def rung_sizes(n_fit: int, rungs: int = RUNGS, smallest: int = MIN_RUNG) -> list[int]:
    sizes = [n_fit]
    while len(sizes) < rungs and sizes[0] // 2 >= smallest:
        sizes.insert(0, sizes[0] // 2)
    return sizes


@dataclass
class Search:
    """The state of one search: `rows[name]` holds a candidate's record (its rungs, status)."""

    candidates: list[Candidate]
    val: Validation
    kinds: tuple[str, ...]
    clock: Clock
    n_final: int  # images the chosen candidate is fitted on at the end (0: no final fit)
    seed: int = 0
    device: str | None = None
    keep_models: bool = False  # keep each candidate's last fitted detector (a fusion of all is built from them)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    raw: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = field(default_factory=dict)  # last rung's scores
    models: dict[str, Any] = field(default_factory=dict)  # with keep_models: name -> (detector, map mean, map std)

    def __post_init__(self) -> None:
        for c in self.candidates:
            self.rows[c.name] = {**c.describe(), "rungs": [], "status": "waiting", "pruned": None}

    # -- estimates ---------------------------------------------------------------------------
    def n_scored(self) -> int:
        return len(self.val.normal) * (1 + len(self.val.defective))

    def unit(self) -> float:
        """Seconds per (cost x image) measured so far (the prior before anything ran)."""
        units = [r["seconds"] / (c.cost * (r["images"] + self.n_scored()))
                 for c in self.candidates for r in self.rows[c.name]["rungs"]]
        return float(np.median(units)) if units else PRIOR_SECONDS_PER_IMAGE

    def estimate(self, c: Candidate, images: int, scored: int | None = None) -> float:
        """Seconds to fit `c` on `images` and score `scored` images (default: the validation sets)."""
        scored = self.n_scored() if scored is None else scored
        done = self.rows[c.name]["rungs"]
        if done:
            last = done[-1]
            return last["fit_seconds"] * images / last["images"] + last["score_seconds"] * scored / self.n_scored()
        return self.unit() * c.cost * (images + scored)

    def reserve(self, c: Candidate) -> float:
        """Time kept back for the final fit of `c` on every fitting image (and its calibration)."""
        if self.n_final == 0:
            return 0.0
        return self.estimate(c, self.n_final, scored=max(1, self.n_final // 9))

    # -- running -----------------------------------------------------------------------------
    def run_one(self, c: Candidate, rung: int, fit_set) -> None:
        from latentad.registry import create

        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:  # recorded with the candidate, not shown
            warnings.simplefilter("always")
            det = create(c.method, c.preset, device=self.device, seed=self.seed, **c.options)
            if os.environ.get(FAILPOINT) == c.name:
                raise RuntimeError(f"failpoint {FAILPOINT}={c.name}")
            det.fit(fit_set)
            t1 = time.perf_counter()
            with torch.inference_mode():
                held = det.predict(self.val.normal)
                defective = {k: det.predict(s).image_scores for k, s in self.val.defective.items()}
        normal = held.image_scores
        t2 = time.perf_counter()
        said = sorted({str(w.message).split(";")[0] for w in caught})
        if said:
            self.rows[c.name]["warnings"] = said
        figures = fold_figures(normal, defective, self.val.groups, self.kinds)
        self.raw[c.name] = (normal, defective)
        if self.keep_models:  # the maps' scale on held-out normals, for a fusion's standardisation
            maps = held.anomaly_maps
            self.models[c.name] = (det, 0.0 if maps is None else float(maps.mean()),
                                   1.0 if maps is None else float(maps.std()) + 1e-12)
        self.rows[c.name]["rungs"].append({"rung": rung, "images": len(fit_set), **figures,
                                           "fit_seconds": round(t1 - t0, 2), "score_seconds": round(t2 - t1, 2),
                                           "seconds": round(t2 - t0, 2)})
        self.rows[c.name]["status"] = "evaluated"

    def prune(self, c: Candidate, rung: int, why: str) -> None:
        self.rows[c.name].update(status="pruned", pruned={"rung": rung, "at_seconds": round(self.clock.spent(), 1),
                                                           "why": why})
        self.models.pop(c.name, None)  # a pruned candidate is not fused
        self.raw.pop(c.name, None)

    def budget_limited(self) -> bool:
        """Whether the budget or the machine's load left a candidate out (not halving, not an error)."""
        return any(r["pruned"] is not None and r["pruned"]["why"].startswith(BUDGET_REASONS)
                   for r in self.rows.values())

    def deadline(self, c: Candidate, size: int, allowed: float) -> float:
        """Seconds `c` may run: DEADLINE_FACTOR times its estimate (at least DEADLINE_FLOOR), within `allowed`."""
        return min(allowed, max(DEADLINE_FLOOR, DEADLINE_FACTOR * self.estimate(c, size)))

    def best_so_far(self) -> Candidate | None:
        done = [c for c in self.candidates if self.rows[c.name]["rungs"]]
        if not done:
            return None
        top = max(len(self.rows[c.name]["rungs"]) for c in done)
        return max((c for c in done if len(self.rows[c.name]["rungs"]) == top),
                   key=lambda c: self.rows[c.name]["rungs"][-1]["value"])

    def ranked(self, rung: int) -> list[Candidate]:
        at = [c for c in self.candidates if len(self.rows[c.name]["rungs"]) > rung]
        return sorted(at, key=lambda c: (-self.rows[c.name]["rungs"][rung]["value"], c.cost))


def run_search(search: Search, on_step=None, rungs: int = RUNGS) -> Candidate:
    """Successive halving over `rungs` rungs (one: every candidate on all the fitting images, cheapest
    first, as far as the budget goes); returns the best candidate at the highest rung reached."""
    sizes = rung_sizes(len(search.val.fit), rungs)
    order = np.random.default_rng(search.seed + 99_999).permutation(len(search.val.fit))
    alive = list(search.candidates)
    for rung, size in enumerate(sizes):
        subset = search.val.fit.subset(sorted(order[:size].tolist()))
        for c in alive:
            if on_step is not None:
                on_step(c, rung, size)
            best = search.best_so_far() or c
            need = search.estimate(c, size) + search.reserve(best if best is not c else c)
            if search.clock.left() < need:
                if rung == 0 and best is c:  # not even the cheapest candidate fits
                    raise ConfigError(f"--budget {search.clock.budget:.0f}s: too small for the cheapest candidate "
                                      f"({c.name}: about {need:.0f}s to validate and fit)")
                search.prune(c, rung, f"budget: about {need:.0f}s needed, {search.clock.left():.0f}s left")
                continue
            if search.estimate(c, size) > MAX_SHARE * search.clock.budget:
                search.prune(c, rung, f"budget: about {search.estimate(c, size):.0f}s for this rung, more than "
                                      f"{MAX_SHARE:.0%} of the budget")
                continue
            allowed = search.deadline(c, size, search.clock.left() - search.reserve(best if best is not c else c))
            try:
                with deadline(allowed):
                    search.run_one(c, rung, subset)
            except OverTime:
                search.prune(c, rung, f"over time: stopped after {allowed:.0f}s (about {need:.0f}s expected "
                                      "with its final fit)")
                continue
            except Exception as exc:  # noqa: BLE001 - one candidate's failure must not end the search
                search.prune(c, rung, f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                log.warning(f"auto: {c.name} failed ({type(exc).__name__}: {exc}); going on without it")
                continue
            row = search.rows[c.name]["rungs"][-1]
            log.info(f"auto: {c.name} on {size} images: {row['value']:.4f} ± {row['se']:.4f} ({row['seconds']:.0f}s)")
        ranked = search.ranked(rung)
        if not ranked:
            break
        if rung == len(sizes) - 1:
            break
        keep = max(2, math.ceil(len(ranked) / 2))
        cut = search.rows[ranked[keep - 1].name]["rungs"][rung]["value"] if len(ranked) > keep else None
        for c in ranked[keep:]:
            row = search.rows[c.name]["rungs"][rung]
            search.prune(c, rung, f"halving: {row['value']:.4f} ± {row['se']:.4f} below the top {keep} "
                                  f"(cut {cut:.4f})")
        alive = ranked[:keep]
        if len({c.family for c in alive}) == 1:  # keep a fusion across families possible (`selection.fusion`)
            other = next((c for c in ranked[keep:] if c.family != alive[0].family), None)
            if other is not None:
                alive.append(other)
                search.rows[other.name].update(status="evaluated", pruned=None)
        alive = sorted(alive, key=lambda c: c.cost)
    chosen = search.best_so_far()
    if chosen is None:
        failed = [f"{n}: {r['pruned']['why']}" for n, r in search.rows.items()
                  if r["pruned"] is not None and r["pruned"]["why"].startswith("failed")]
        if failed:
            raise ConfigError(f"auto: every candidate run failed ({'; '.join(failed)})")
        raise ConfigError(f"--budget {search.clock.budget:.0f}s: too small for the cheapest candidate")
    return chosen
