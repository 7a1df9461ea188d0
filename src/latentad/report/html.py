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


def write_report(run_dir: Path, config: dict, metrics: dict, per_defect: dict, calibration: Calibration,
                 paths: list[str], defects: list[str], scores: np.ndarray, overlays: dict[int, Path],
                 histogram: Path, k: int = 6) -> Path:
    """Render `run_dir/report.html` (relative links, so the folder can be moved or zipped)."""
    order = np.argsort(-scores)
    flags = scores > calibration.image_threshold

    def item(i: int) -> dict:
        return _item(run_dir, paths[i], float(scores[i]), defects[i], bool(flags[i]), overlays.get(int(i)))

    env = Environment(loader=PackageLoader("latentad", "report/templates"), autoescape=select_autoescape())
    html = env.get_template("report.html").render(
        method=config.get("method"), preset=config.get("preset"),
        data_name=Path(str(config.get("data", {}).get("root", "data"))).name,
        run_dir=str(run_dir), created=config.get("created", ""), calibration=calibration,
        metric_keys=[m for m in METRIC_KEYS if m in metrics], metrics=metrics, per_defect=per_defect,
        histogram=str(histogram.relative_to(run_dir)),
        most=[item(i) for i in order[:k]], least=[item(i) for i in order[::-1][:k]],
        table=[item(i) for i in order], config_json=json.dumps(config, indent=2),
    )
    out = run_dir / "report.html"
    io.write_text(out, html)
    return out
