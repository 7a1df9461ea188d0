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
    from latentad.detectors.base import create

    sizes = {create(c.method, c.preset, **c.options).config.image_size for c in (best, other)}
    if len(sizes) > 1:
        return {"kept": False, "members": [best.name, other.name], "why": "the members' input sizes differ"}
    (na, da), (nb, db) = search.raw[best.name], search.raw[other.name]
    single = search.rows[best.name]["rungs"][-1]
    tried = []
    for w in WEIGHTS:
        fused = {k: w * _z(da[k], na) + (1 - w) * _z(db[k], nb) for k in da}
        fig = fold_figures(w * _z(na, na) + (1 - w) * _z(nb, nb), fused, search.val.groups, search.kinds)
        tried.append({"weight": w, **fig})
    top = max(tried, key=lambda t: t["value"])
    gain = top["value"] - single["value"]
    kept = gain > single["se"]
    why = (f"fusion {top['value']:.4f} ± {top['se']:.4f} against {best.name} {single['value']:.4f} ± "
           f"{single['se']:.4f}: {'a gain above' if kept else 'no gain above'} the fold noise")
    return {"kept": kept, "members": [best.name, other.name], "weights": [top["weight"], 1 - top["weight"]],
            "value": top["value"], "se": top["se"], "tried": tried, "why": why,
            "image_size": sizes.pop()}
