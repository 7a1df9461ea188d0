"""Plot the `curve.json` files written by `vqvae_learning_curve.py`: pixel AUROC against training CPU
minutes (one core), one line per map and run, with the paper's Table 1 bottle figures as references.

    python benchmarks/plot_learning_curve.py runs/curve_cpu_long/curve.json runs/curve_default/curve.json \
        --out benchmarks/results/learning_curve_bottle.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Gangloff et al. 2022, Table 1, bottle row (pixel AUROC).
PAPER = {"vqvae_ssim": 0.94, "vqvae_ssim_am": 0.95, "ae_ssim": 0.93}
STYLE = {"vqvae_ssim": "tab:blue", "vqvae_ssim_am": "tab:red", "ae_ssim": "tab:green", "vae_l2": "tab:gray"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("curves", nargs="+")
    ap.add_argument("--metric", default="pixel_auroc")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for path in args.curves:
        doc = json.loads(Path(path).read_text())
        rows = doc["rows"]
        label_run = doc.get("preset") if doc.get("preset") not in (None, "none") else "default"
        methods = [k for k in rows[0] if isinstance(rows[0][k], dict)]
        for method in methods:
            xs = [r["train_cpu_min_this_process"] for r in rows]
            ys = [r[method][args.metric] for r in rows]
            style = "--" if label_run == "default" else "-"
            ax.plot(xs, ys, marker="o", ms=3, color=STYLE.get(method), linestyle=style, label=f"{method} ({label_run})")
    for method, value in PAPER.items():
        ax.axhline(value, color=STYLE[method], linewidth=0.8, alpha=0.6, linestyle="-.",
                   label=f"paper Table 1, {method}: {value}")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("training CPU minutes (one core, log scale)")
    ax.set_ylabel(args.metric.replace("_", " "))
    ax.set_title("MVTec AD bottle: learning curve")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(args.out)


if __name__ == "__main__":
    main()
