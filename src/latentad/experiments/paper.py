"""The paper's tables (Gangloff et al. 2022, Tables 1-3) and the programme's family comparison as
specs, and the paper's layout with the published figures beside ours.

The published figures live in `published.json` (each table with its source). `recipe="paper"` uses
the paper presets (sized for a GPU); `recipe="cpu"` the CPU defaults for the MVTec table (the other
two tables' presets are already small). `COLUMNS` names the column each of our methods fills: where
that is a published column, ours stands beside the published figure; FCDD and VEVAE are not
implemented here, so their published figures are shown as "published only", and a method of ours
that the paper's table does not have (Table 1's VAE L2) gets a column under its own name (`BESIDE`
places it next to the published column it is closest to), never a published method's name.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from latentad.errors import ConfigError
from latentad.experiments.spec import DataEntry, MethodEntry, Spec, categories_under

TABLES = ("table1", "table2", "table3", "families")
MVTEC = (
    "carpet",
    "grid",
    "leather",
    "tile",
    "wood",
    "bottle",
    "cable",
    "capsule",
    "hazelnut",
    "metal_nut",
    "pill",
    "screw",
    "toothbrush",
    "transistor",
    "zipper",
)
CIFAR = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# (published column, our method, preset by recipe {"paper": ..., "cpu": ...}, extra options)
COLUMNS: dict[str, list[tuple[str, str, dict[str, str | None], dict[str, Any]]]] = {
    "table1": [
        ("AE SSIM", "ae_ssim", {"paper": "paper", "cpu": None}, {}),
        ("VAE L2", "vae_l2", {"paper": "paper_mvtec", "cpu": None}, {}),
        ("VQ-VAE SSIM", "vqvae_ssim", {"paper": "paper_mvtec", "cpu": None}, {}),
        ("VQ-VAE SSIM+AM", "vqvae_ssim_am", {"paper": "paper_mvtec", "cpu": None}, {}),
    ],
    "table2": [
        ("VAE L2", "vae_l2", {"paper": "paper_ucsd", "cpu": "paper_ucsd"}, {}),
        ("VQ-VAE SSIM", "vqvae_ssim", {"paper": "paper_ucsd", "cpu": "paper_ucsd"}, {}),
        ("VQ-VAE SSIM+AM", "vqvae_ssim_am", {"paper": "paper_ucsd", "cpu": "paper_ucsd"}, {}),
    ],
    # the AE has no CIFAR preset: its MNIST one (32 px, latent 32, linear output) in colour, with flips
    "table3": [
        ("AE L2", "ae_l2", {"paper": "mnist", "cpu": "mnist"}, {"channels": 3, "flips": True}),
        ("DSVDD", "dsvdd", {"paper": "paper_cifar", "cpu": "paper_cifar"}, {}),
        ("VQ-VAE SSIM", "vqvae_ssim", {"paper": "paper_cifar", "cpu": "paper_cifar"}, {}),
        ("VQ-VAE SSIM+AM", "vqvae_ssim_am", {"paper": "paper_cifar", "cpu": "paper_cifar"}, {}),
    ],
    "families": [
        ("pretrained", "padim", {"paper": None, "cpu": None}, {}),
        ("reconstruction", "vqvae_ssim_am", {"paper": None, "cpu": None}, {}),
        ("selfsupervised", "ssl_gaussian", {"paper": None, "cpu": None}, {}),
    ],
}
# Our columns that are not in the published table, each shown right after the published column named
# here (VEVAE is not implemented: our plain VAE with the L2 map stands beside it under its own name).
BESIDE: dict[str, dict[str, str]] = {"table1": {"VAE L2": "VEVAE"}}


def published() -> dict[str, Any]:
    return json.loads(resources.files("latentad.experiments").joinpath("published.json").read_text())


def paper_spec(
    table: str,
    root: Path,
    recipe: str = "paper",
    seeds: list[int] | None = None,
    eval_size: int | None = None,
    only: list[str] | None = None,
) -> Spec:
    """The grid of one table over whatever of its categories / classes is found under `root` (or
    only the ones named in `only`)."""
    if table not in TABLES:
        raise ConfigError(f"--paper {table}: one of {', '.join(TABLES)}")
    if recipe not in ("paper", "cpu"):
        raise ConfigError(f"--recipe {recipe}: paper or cpu")
    if not root.exists():
        raise ConfigError(f"--data-root {root}: not found")
    if table == "table1":
        found = [c for c in MVTEC if (root / c / "train").is_dir()]
        if not found:
            raise ConfigError(f"--data-root {root}: none of the 15 MVTec AD categories (e.g. {root / 'bottle'})")
        data = [DataEntry(c, str(root / c), "mvtec") for c in found]
    elif table == "table2":
        data = [DataEntry("UCSDped1", str(root), "ucsd", {"pixel_only": True})]
    elif table == "table3":
        data = [DataEntry(c, str(root), "cifar10", {"normal_class": i}) for i, c in enumerate(CIFAR)]
    else:
        data = [DataEntry(c, str(root / c), "auto") for c in categories_under(root, "--data-root")]
    if only:
        unknown = sorted(set(only) - {d.name for d in data})
        if unknown:
            raise ConfigError(f"--categories: {unknown[0]!r} is not among {', '.join(d.name for d in data)}")
        data = [d for d in data if d.name in only]
    methods = []
    for _column, method, presets, options in COLUMNS[table]:
        preset = presets[recipe]
        label = method if preset is None else f"{method}-{preset}"
        methods.append(MethodEntry(method, label, preset, dict(options)))
    return Spec(seeds or [0], data, methods, eval_size, source=f"--paper {table} --recipe {recipe}")


def layout_columns(table: str) -> list[tuple[str, str]]:
    """The paper layout's columns in order, each with what it shows: "both" (ours beside the published
    figure), "published" (a method not implemented here) or "ours" (a method of ours the published
    table does not have)."""
    pub_cols = published()[table]["columns"]
    ours = [col for col, *_ in COLUMNS[table]]
    beside = BESIDE.get(table, {})
    cols: list[tuple[str, str]] = []
    for c in pub_cols:
        cols.append((c, "both" if c in ours else "published"))
        cols += [(o, "ours") for o in ours if beside.get(o) == c]
    cols += [(o, "ours") for o in ours if o not in pub_cols and beside.get(o) not in pub_cols]
    return cols


def paper_layout(table: str, rows: list[dict[str, Any]]) -> str:
    """The table in the paper's layout: per category, ours (mean over seeds) beside the published."""
    if table == "families":
        return ""
    pub = published()[table]
    metric = pub["metric"]
    method_of = {col: method for col, method, _presets, _options in COLUMNS[table]}
    columns = layout_columns(table)
    label = {"both": "ours / published", "published": "published only", "ours": "ours, no published figure"}
    head = ["category"] + [f"{c} ({label[kind]})" for c, kind in columns]
    lines = [
        f"## {pub['title']}",
        "",
        f"Published: {pub['source']}. Ours: {metric}, mean over the seeds run.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    cats = [c for c in pub["rows"] if c != "mean"]
    means: dict[str, list[float]] = {c: [] for c, _ in columns}
    for cat in cats:
        got = [r for r in rows if r["data"] == cat and r["status"] == "done"]
        if not got:
            continue
        cells = [cat]
        for col, kind in columns:
            ours = "–"
            if kind != "published":
                v = [r[metric] for r in got if r["method"] == method_of[col] and r.get(metric) is not None]
                if v:
                    ours = f"{np.mean(v):.3f}"
                    means[col].append(float(np.mean(v)))
            cells.append(_cell(kind, ours, pub, cat, col))
        lines.append("| " + " | ".join(cells) + " |")
    n = max((len(v) for v in means.values()), default=0)
    if n:
        cells = [f"mean ({n} run here)"]
        for col, kind in columns:
            cells.append(_cell(kind, f"{np.mean(means[col]):.3f}" if means[col] else "–", pub, "mean", col))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(kind: str, ours: str, pub: dict[str, Any], row: str, col: str) -> str:
    """One cell: ours beside the published figure, the published figure alone, or ours alone. The
    published mean row is the paper's mean over all its categories, marked "(all)"."""
    if kind == "ours":
        return ours
    fig = f"{pub['rows'][row][pub['columns'].index(col)]:.2f}" + (" (all)" if row == "mean" else "")
    return fig if kind == "published" else f"{ours} / {fig}"
