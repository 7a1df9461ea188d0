"""The run report: metrics, score histogram, overlays of the most and least anomalous images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from latentad import io
from latentad.calibration import Calibration

METRIC_KEYS = ["image_auroc", "pixel_auroc", "aupro", "aupimo", "f1_max", "n_images", "seconds"]


def _item(run_dir: Path, path: str, score: float, truth: str, flag: bool, png: Path | None) -> dict:
    return {"name": Path(path).name if "/" in path else path, "score": score, "truth": truth, "flag": flag,
            "png": str(png.relative_to(run_dir)) if png is not None else ""}


def describe_data(info: dict) -> str:
    """A data set's name as a reader knows it: "ELPV mono cells", "MVTec AD bottle", "MNIST digit 3"."""
    fmt = info.get("format")
    root = Path(str(info.get("root") or info.get("path") or "data")).name
    if fmt == "elpv":
        return f"ELPV {info.get('cell_type', 'all')} cells"
    if fmt == "mvtec":
        return f"MVTec AD {root}" if "mvtec" in str(info.get("root", "")).lower() else f"{root} (MVTec layout)"
    if fmt == "mnist":
        return f"MNIST digit {info.get('normal_class')} vs the rest"
    if fmt == "cifar10":
        return f"CIFAR-10 {info.get('normal_class_name', info.get('normal_class'))} vs the rest"
    if fmt == "ucsd":
        return f"UCSD {info.get('subset', 'Ped1')}"
    if fmt == "folder":
        return f"folder {root} (normal: {info.get('normal')})"
    if fmt == "synthetic":
        return "synthetic images"
    return root


def cell(value: object) -> str:
    """A metrics-table cell: counts as integers, measures to 4 decimals, None as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, bool | int | np.integer):
        return str(value)
    if isinstance(value, float | np.floating):
        return f"{value:.4f}"
    return str(value)


def write_report(run_dir: Path, config: dict, metrics: dict, per_defect: dict, calibration: Calibration,
                 paths: list[str], defects: list[str], scores: np.ndarray, overlays: dict[int, Path],
                 histogram: Path, curves: Path | None = None, k: int = 6, auto: dict | None = None,
                 auto_figure: Path | None = None, legend: Path | None = None) -> Path:
    """Render `run_dir/report.html` (relative links, so the folder can be moved or zipped); `auto`: an
    auto run's search record (auto.json), shown with its figure."""
    order = np.argsort(-scores)
    flags = scores > calibration.image_threshold

    def item(i: int) -> dict:
        return _item(run_dir, paths[i], float(scores[i]), defects[i], bool(flags[i]), overlays.get(int(i)))

    env = Environment(loader=PackageLoader("latentad", "report/templates"), autoescape=select_autoescape())
    html = env.get_template("report.html").render(
        method=config.get("method"), preset=config.get("preset"),
        data_name=describe_data(config.get("data", {})), cell=cell,
        curves=str(curves.relative_to(run_dir)) if curves is not None else "",
        conditions=metrics.get("conditions", {}),
        run_dir=str(run_dir), created=config.get("created", ""), calibration=calibration,
        metric_keys=[m for m in METRIC_KEYS if m in metrics], metrics=metrics, per_defect=per_defect,
        histogram=str(histogram.relative_to(run_dir)),
        most=[item(i) for i in order[:k]], least=[item(i) for i in order[::-1][:k]],
        table=[item(i) for i in order], config_json=json.dumps(config, indent=2), auto=auto,
        auto_figure=str(auto_figure.relative_to(run_dir)) if auto_figure is not None else "",
        legend=str(legend.relative_to(run_dir)) if legend is not None else "",
    )
    out = run_dir / "report.html"
    io.write_text(out, html)
    return out
