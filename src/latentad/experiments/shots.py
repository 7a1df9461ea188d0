"""The few-shot curve of a benchmark with `shots = [...]`: image and pixel AUROC against K, the number
of normal images each cell was fitted on (mean over seeds, each seed its own draw; bars: the range)."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def shots_curve(path: Path, rows: list[dict[str, Any]]) -> Path:
    """One panel per metric, one line per (data, method label without -kK)."""
    from latentad.report.figures import plt, save_figure

    series: dict[tuple[str, str], dict[int, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(
        lambda: defaultdict(list)))
    for r in rows:
        if r.get("status") != "done" or r.get("shots") is None:
            continue
        base = re.sub(r"-k\d+$", "", r["label"])
        for metric in ("image_auroc", "pixel_auroc"):
            if r.get(metric) is not None:
                series[(r["data"], base)][int(r["shots"])][metric].append(float(r[metric]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("image_auroc", "pixel_auroc"), strict=True):
        for (data, base), by_k in sorted(series.items()):
            ks = sorted(k for k in by_k if by_k[k][metric])
            if not ks:
                continue
            mean = [np.mean(by_k[k][metric]) for k in ks]
            low = [mean[i] - min(by_k[k][metric]) for i, k in enumerate(ks)]
            high = [max(by_k[k][metric]) - mean[i] for i, k in enumerate(ks)]
            ax.errorbar(ks, mean, yerr=[low, high], marker="o", capsize=3, label=f"{base} ({data})")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("normal images K")
        ax.set_ylabel(metric.replace("_", " "))
        ax.legend(fontsize=7)
    return save_figure(fig, path)
