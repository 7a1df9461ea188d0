"""Fusions of the candidates `fit --method auto` fitted, each becoming an `ensemble` detector.

- `fuse_all` (the default): every candidate fitted in the budget, equal weights, each standardised on
  the held-out normal images it was not fitted on; the models fitted during the search are kept, so
  it costs no further fit.
- `consider` (`fusion="best"`): the two best candidates of different families, their validation
  scores fused with a weight fitted on the validation folds, kept only when the fusion beats the best
  single candidate by more than that candidate's standard error over folds (the fold noise).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from latentad.data.geometry import as_shape
from latentad.selection.ensemble import largest
from latentad.selection.folds import fold_figures
from latentad.selection.portfolio import Candidate
from latentad.selection.search import Search

WEIGHTS = (0.25, 0.5, 0.75)  # the best candidate's share; few, so that fitting them on validation overfits little
FLAT = 1e-6  # a member whose normal validation scores spread less than this (relative to their size) is flat
log = logging.getLogger("latentad")


def flat(normal: np.ndarray) -> bool:
    """Scores with (near) zero spread: standardising them would give the member an enormous weight."""
    return bool(normal.std() <= FLAT * max(1.0, float(np.abs(normal).mean())))


def _z(scores: np.ndarray, normal: np.ndarray) -> np.ndarray:
    return (scores - normal.mean()) / (normal.std() + 1e-12)


def _input_size(c: Candidate) -> Any:
    """A candidate's input size from its config alone (no model is built)."""
    from latentad.detectors.base import replace_config
    from latentad.registry import get_method

    cls = get_method(c.method)
    values = {**(cls.presets.get(c.preset, {}) if c.preset else {}), **c.options}
    return replace_config(cls.Config(), values, cls.name).image_size


def fuse_all(search: Search, best: Candidate, seed: int) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The ensemble of every candidate the search fitted (each at its own input size), the spec the run
    records, and the fusion's record with its validation figure (shown, not used: its
    standardisation was measured on the same normal images)."""
    from latentad.selection.ensemble import Ensemble

    fitted = [c for c in search.candidates if c.name in search.models]
    dropped = [c.name for c in fitted if flat(search.raw[c.name][0])]
    for name in dropped:
        log.warning(f"auto: {name} gives (near) the same score to every held-out normal image; left out of the fusion")
    members = [c for c in fitted if c.name not in dropped] or fitted[:1]
    if len(members) < 2:
        why = f"only {len(members)} candidate fitted in the budget: no fusion"
        return search.models[best.name][0], {**best.describe(), "preset": best.preset}, {"kept": False, "why": why}
    names = [c.name for c in members]
    normal = [search.raw[n][0] for n in names]
    stats = [[float(s.mean()), float(s.std()) + 1e-12, search.models[n][1], search.models[n][2]]
             for n, s in zip(names, normal, strict=True)]
    det = Ensemble.of_fitted(names, [search.models[n][0] for n in names], stats, None, seed,
                             [c.preset for c in members])
    if any(tuple(m.input_shape) != tuple(det.input_shape) for m in det.members):
        det.standardise_on(search.val.normal)  # a member fed a resized batch: its scale as the ensemble feeds it
    fused = {k: np.mean([_z(search.raw[n][1][k], s) for n, s in zip(names, normal, strict=True)], 0)
             for k in search.raw[names[0]][1]}
    fig = fold_figures(np.mean([_z(s, s) for s in normal], 0), fused, search.val.groups, search.kinds)
    why = f"every candidate fitted in the budget ({len(names)}), equal weights"
    if dropped:
        why += f"; left out for scores without spread on normal images: {', '.join(dropped)}"
    weights = [1.0 / len(names)] * len(names)
    size = det.config.image_size
    spec = {"name": "ensemble(" + "+".join(names) + ")", "method": "ensemble", "preset": None,
            "options": {"members": tuple(names), "weights": tuple(weights), "image_size": size,
                        "specs": det.config.specs}, "family": "ensemble"}
    return det, spec, {"kept": True, "members": names, "weights": weights, "value": fig["value"], "se": fig["se"],
                       "image_size": size, "why": why}


def partner(search: Search, best: Candidate) -> Candidate | None:
    """The best candidate of another family evaluated at the same (last) rung as `best`."""
    rung = len(search.rows[best.name]["rungs"]) - 1
    others = [c for c in search.ranked(rung) if c.family != best.family]
    return others[0] if others else None


def consider(search: Search, best: Candidate) -> dict[str, Any]:
    """The fusion's record: members, the weight chosen, its figures, whether it is kept and why."""
    other = partner(search, best)
    if other is None:
        return {"kept": False, "why": "no candidate of another family reached the last rung"}
    single = search.rows[best.name]["rungs"][-1]
    out = fuse(search.raw[best.name], search.raw[other.name], search.val.groups, search.kinds, single)
    out["why"] = f"{best.name} + {other.name}: " + out["why"]
    size = largest([as_shape(_input_size(c)) for c in (best, other)])
    return {"members": [best.name, other.name], **out, "image_size": size}


def fuse(a: tuple[np.ndarray, dict[str, np.ndarray]], b: tuple[np.ndarray, dict[str, np.ndarray]],
         groups: np.ndarray, kinds: tuple[str, ...], single: dict[str, Any]) -> dict[str, Any]:
    """The fusion of two candidates' validation scores ((normal, {kind: defective}) each): the weight
    of `a` fitted on the folds, its figures, and whether it beats `single` (a's figures) by more than
    a's standard error."""
    (na, da), (nb, db) = a, b
    tried = []
    for w in WEIGHTS:
        fused = {k: w * _z(da[k], na) + (1 - w) * _z(db[k], nb) for k in da}
        fig = fold_figures(w * _z(na, na) + (1 - w) * _z(nb, nb), fused, groups, kinds)
        tried.append({"weight": w, **fig})
    top = max(tried, key=lambda t: t["value"])
    kept = top["value"] - single["value"] > single["se"]
    why = (f"fusion {top['value']:.4f} ± {top['se']:.4f} against {single['value']:.4f} ± {single['se']:.4f} alone: "
           f"{'a gain above' if kept else 'no gain above'} the fold noise")
    return {"kept": kept, "weights": [top["weight"], 1 - top["weight"]], "value": top["value"], "se": top["se"],
            "tried": tried, "why": why}
