"""Whether a fusion of the two best candidates of different families earns its place: their
validation scores standardised on the held-out normal images, fused with a weight fitted on the
validation folds, kept only when the fusion beats the best single candidate by more than that
candidate's standard error over folds (the fold noise). What is kept becomes an `ensemble` detector.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from latentad.selection.folds import fold_figures
from latentad.selection.portfolio import Candidate
from latentad.selection.search import Search

WEIGHTS = (0.25, 0.5, 0.75)  # the best candidate's share; few, so that fitting them on validation overfits little


def _z(scores: np.ndarray, normal: np.ndarray) -> np.ndarray:
    return (scores - normal.mean()) / (normal.std() + 1e-12)


def _input_size(c: Candidate) -> Any:
    """A candidate's input size from its config alone (no model is built)."""
    from latentad.detectors.base import get_method, replace_config

    cls = get_method(c.method)
    values = {**(cls.presets.get(c.preset, {}) if c.preset else {}), **c.options}
    return replace_config(cls.Config(), values, cls.name).image_size


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
    sizes = {_input_size(c) for c in (best, other)}
    if len(sizes) > 1:
        return {"kept": False, "members": [best.name, other.name], "why": "the members' input sizes differ"}
    single = search.rows[best.name]["rungs"][-1]
    out = fuse(search.raw[best.name], search.raw[other.name], search.val.groups, search.kinds, single)
    out["why"] = f"{best.name} + {other.name}: " + out["why"]
    return {"members": [best.name, other.name], **out, "image_size": sizes.pop()}


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
