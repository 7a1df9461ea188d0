"""One page that compares runs evaluated on the same test images: their metrics side by side, their
ROC curves on one plot, and the images each run misses at its own calibrated threshold (defects it
lets through, normal parts it flags), marked where the other runs got them right. It is what the
three latent spaces look like against each other on one data set. Each miss is shown with the run's
heat map on its own calibrated scale, so one sees where the run looked; a fused run (`--method
auto`) says which members it fused and why."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image

from latentad import io
from latentad.report.figures import _save_png, overlay, plt, save_figure
from latentad.report.html import cell

THUMB = 128


@dataclass
class Compared:
    """One evaluated run: its name, family, metrics, the test images' scores (in one shared order)
    and its calibrated threshold."""

    name: str
    family: str
    run: Path
    metrics: dict
    scores: np.ndarray
    threshold: float
    fit_seconds: float | None = None
    maps: np.ndarray | None = None  # (N,h,w) test maps in the same order, for the misses' heat maps
    calibration: object | None = None  # the run's Calibration: the heat maps' scale
    note: str | None = None  # what the run is made of (a fusion's members and why)


def roc_figure(path: Path, labels: np.ndarray, runs: list[Compared]) -> Path:
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    for r in runs:
        fpr, tpr, _ = roc_curve(labels, r.scores)
        ax.plot(fpr, tpr, label=f"{r.name} ({r.family}, AUROC {cell(r.metrics.get('image_auroc'))})")
    ax.plot([0, 1], [0, 1], color="0.7", linestyle=":")
    ax.set(xlabel="false-positive rate (images)", ylabel="true-positive rate", title="image ROC", xlim=(0, 1),
           ylim=(0, 1.02))
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


def misses(labels: np.ndarray, runs: list[Compared]) -> dict[str, list[int]]:
    """Per run, the test images it decides wrongly at its calibrated threshold, worst first."""
    out = {}
    for r in runs:
        flagged = r.scores > r.threshold
        wrong = np.flatnonzero(flagged != (labels == 1))
        margin = np.abs(r.scores[wrong] - r.threshold)
        out[r.name] = wrong[np.argsort(-margin)].tolist()
    return out


def thumbnail(out: Path, image: np.ndarray, amap: np.ndarray | None = None, cal=None) -> str:
    """A THUMB-px picture of `image`, with `amap`'s heat map over it when given."""
    pil = overlay(image, amap, cal, max_side=THUMB) if amap is not None else Image.fromarray(
        image[:, :, 0] if image.shape[2] == 1 else image)
    pil.thumbnail((THUMB, THUMB))
    _save_png(pil, out)
    return out.name


def write_comparison(out: Path, title: str, labels: np.ndarray, paths: list[str], load, runs: list[Compared],
                     per_run: int = 8) -> Path:
    """Write `out/comparison.html` (+ its figures and thumbnails in `out/compare/`); `load(i)` gives test
    image i's pixels (HxWxC uint8), decoded only for the thumbnails shown."""
    folder = out / "compare"
    roc = roc_figure(folder / "roc.png", labels, runs)
    wrong = misses(labels, runs)
    sections = []
    for r in runs:
        items = []
        for i in wrong[r.name][:per_run]:
            others = [o.name for o in runs if o is not r and i not in set(wrong[o.name])]
            image = load(i)
            heat = None if r.maps is None else thumbnail(folder / f"{r.name}_{i:05d}_heat.png", image, r.maps[i],
                                                            r.calibration)
            items.append({"png": f"compare/{thumbnail(folder / f'{r.name}_{i:05d}.png', image)}",
                          "heat": None if heat is None else f"compare/{heat}",
                          "name": Path(paths[i]).name, "truth": "defect" if labels[i] else "normal",
                          "score": float(r.scores[i]), "caught_by": others})
        n_fn = int(sum(labels[i] == 1 for i in wrong[r.name]))
        sections.append({"run": r, "wrong": items, "n_missed": n_fn, "n_false": len(wrong[r.name]) - n_fn})
    env = Environment(loader=PackageLoader("latentad", "report/templates"), autoescape=select_autoescape())
    html = env.get_template("compare.html").render(title=title, runs=runs, cell=cell, roc=f"compare/{roc.name}",
                                                   sections=sections, n_test=len(labels),
                                                   n_anomalous=int(labels.sum()))
    page = out / "comparison.html"
    io.write_text(page, html)
    return page
