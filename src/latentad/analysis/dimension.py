"""How many dimensions does normality use? Intrinsic dimension (scikit-dimension: TwoNN, MLE, lPCA)
of the normal and of the anomalous image embeddings, beside the ambient dimension.

A normal set far below its ambient dimension lives on a thin manifold: a full-covariance Gaussian
then spends most of its parameters on noise directions, which is what shrinkage and NPCA act on.
Estimators need neighbours: sets under 12 images get no estimate (said, not guessed); at most 1,000
vectors per set, drawn with a seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from latentad.analysis.collect import Collected
from latentad.extras import require
from latentad.report.figures import plt, save_figure

MIN_POINTS = 12
MAX_POINTS = 1000


def estimate(x: np.ndarray, seed: int = 0) -> dict[str, float | str | None]:
    skdim = require("skdim", "analysis", "the intrinsic-dimension question")
    if len(x) < MIN_POINTS:
        return {"n": int(len(x)), "TwoNN": None, "MLE": None, "lPCA": None, "note": f"fewer than {MIN_POINTS} images"}
    if len(x) > MAX_POINTS:
        x = x[np.random.default_rng(seed).choice(len(x), MAX_POINTS, replace=False)]
    x = np.asarray(x, dtype=np.float64)
    out: dict[str, float | str | None] = {"n": int(len(x))}
    k = min(20, len(x) - 2)
    for name, est in (("TwoNN", skdim.id.TwoNN()), ("MLE", skdim.id.MLE()), ("lPCA", skdim.id.lPCA())):
        try:
            value = est.fit(x, n_neighbors=k).dimension_ if name == "MLE" else est.fit(x).dimension_
            out[name] = float(value) if np.isfinite(value) else None
        except (ValueError, np.linalg.LinAlgError) as exc:  # reported, not hidden
            out[name] = None
            out[f"{name}_error"] = str(exc).splitlines()[0]
    return out


def answer(c: Collected, figdir: Path) -> dict:
    normal = np.concatenate([c.train, c.heldout]) if len(c.heldout) else c.train
    anomalous = c.test[c.labels == 1]
    res = {"ambient_dim": int(c.train.shape[1]), "normal": estimate(normal), "anomalous": estimate(anomalous)}
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    names = ["TwoNN", "MLE", "lPCA"]
    xs = np.arange(len(names))
    for off, part in ((-0.2, "normal"), (0.2, "anomalous")):
        vals = [res[part].get(n) or 0.0 for n in names]
        ax.bar(xs + off, vals, width=0.4, label=part)
    ax.set_xticks(xs, names)
    ax.set(ylabel="intrinsic dimension", title=f"{c.name}: ambient {res['ambient_dim']}")
    ax.legend()
    res["figure"] = f"{c.name}_dimension.png"
    save_figure(fig, figdir / res["figure"])
    two = res["normal"].get("TwoNN")
    res["summary"] = (
        f"normal embeddings: TwoNN {two:.1f}, MLE {res['normal'].get('MLE') or float('nan'):.1f} "
        f"in an ambient {res['ambient_dim']}"
        if two is not None
        else "too few normal images"
    )
    if res["anomalous"].get("TwoNN") is not None:
        res["summary"] += f"; anomalous: TwoNN {res['anomalous']['TwoNN']:.1f}."
    return res
