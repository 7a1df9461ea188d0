"""The grid's results: `results.csv` (one row per cell) and `tables.md` (per data set and method, the
mean and standard deviation over seeds; the mean over data sets; paired Wilcoxon tests).

The paired test compares two methods on the same anomalous images, as the AUPIMO reference does:
each anomalous image's share of normal test images it outscores (the per-image term whose mean is
the image AUROC), and, where both methods have per-image AUPIMO (localising methods on data with
masks), each image's own AUPIMO in a second test: AUPIMO reads only very low false-positive rates
and is 0 for every image of a weak localiser, so the detection test is kept beside it. Per image,
the value is averaged over the seeds both methods ran.
"""

from __future__ import annotations

import csv
import io as _io
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import wilcoxon

from latentad import io
from latentad.experiments.cells import ROW_KEYS, cell_dir

METRICS = ("image_auroc", "pixel_auroc", "aupro", "aupimo", "f1_max")


def write_results_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=ROW_KEYS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r.get(k) for k in ROW_KEYS})
    io.write_text(path, buf.getvalue())


def _fmt(values: list[float]) -> str:
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return "–"
    return f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}" if len(v) > 1 else f"{v[0]:.3f}"


VALUE_KINDS = {"auroc": "per-image AUROC term", "aupimo": "per-image AUPIMO"}


def per_image_values(run: Path, kind: str = "auroc") -> dict[str, float]:
    """{image path: paired value} of one finished cell, read from its scores.csv: `kind` "aupimo"
    (each anomalous image's AUPIMO; empty when the cell has none) or "auroc" (the share of normal
    test images its score exceeds, ties counted half)."""
    with open(run / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if kind == "aupimo":
        return {r["path"]: float(r["aupimo"]) for r in rows if r["label"] == "1" and r.get("aupimo") not in (None, "")}
    normal = np.sort([float(r["score"]) for r in rows if r["label"] == "0"])
    if not len(normal):
        return {}
    out = {}
    for r in rows:
        if r["label"] == "1":
            s = float(r["score"])
            out[r["path"]] = (np.searchsorted(normal, s, "left") + np.searchsorted(normal, s, "right")) / (
                2 * len(normal)
            )
    return out


def paired_tests(out: Path, cells: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Wilcoxon signed-rank tests for every pair of methods on each data set."""
    done = {(r["data"], r["label"], r["seed"]) for r in rows if r["status"] == "done"}
    by_key = {(c["data"]["name"], c["method"]["label"], c["seed"]): c for c in cells}
    tests = []
    for data in dict.fromkeys(c["data"]["name"] for c in cells):
        labels = list(dict.fromkeys(c["method"]["label"] for c in cells if c["data"]["name"] == data))
        for a, b in itertools.combinations(labels, 2):
            seeds = sorted(
                {s for (d, lab, s) in done if d == data and lab == a}
                & {s for (d, lab, s) in done if d == data and lab == b}
            )
            if not seeds:
                continue
            for kind in VALUE_KINDS:
                test = _paired(out, by_key, data, a, b, seeds, kind)
                if test is not None:
                    tests.append(test)
    return tests


def _paired(out: Path, by_key: dict, data: str, a: str, b: str, seeds: list[int], kind: str
            ) -> dict[str, Any] | None:
    """One Wilcoxon test of methods a and b on `data` with per-image values of `kind`; None when
    the two have no image with such a value in common."""
    va: dict[str, list[float]] = {}
    vb: dict[str, list[float]] = {}
    for s in seeds:
        for store, lab in ((va, a), (vb, b)):
            for p, v in per_image_values(cell_dir(out, by_key[(data, lab, s)]), kind).items():
                store.setdefault(p, []).append(v)
    common = sorted(set(va) & set(vb))
    if not common:
        return None
    xa = np.array([np.mean(va[p]) for p in common])
    xb = np.array([np.mean(vb[p]) for p in common])
    p = None if len(common) < 2 or np.allclose(xa, xb) else float(wilcoxon(xa, xb).pvalue)
    return {"data": data, "a": a, "b": b, "seeds": seeds, "n_images": len(common), "values": VALUE_KINDS[kind],
            "mean_a": float(xa.mean()), "mean_b": float(xb.mean()), "p_value": p}


def tables_markdown(rows: list[dict[str, Any]], tests: list[dict[str, Any]], title: str) -> str:
    data_names = list(dict.fromkeys(r["data"] for r in rows))
    labels = list(dict.fromkeys(r["label"] for r in rows))
    lines = [f"# {title}", "", "Mean ± standard deviation over seeds (cells that finished).", ""]
    head = "| data | method | seeds | " + " | ".join(METRICS) + " | fit s |"
    lines += [head, "|" + "---|" * (len(METRICS) + 4)]
    for d in data_names:
        for lab in labels:
            sel = [r for r in rows if r["data"] == d and r["label"] == lab and r["status"] == "done"]
            failed = [r for r in rows if r["data"] == d and r["label"] == lab and r["status"] == "failed"]
            if not sel and not failed:
                continue
            cells = [_fmt([r.get(m) for r in sel]) for m in METRICS]
            seeds = f"{len(sel)}" + (f" (+{len(failed)} failed)" if failed else "")
            lines.append(
                f"| {d} | {lab} | {seeds} | " + " | ".join(cells) + f" | {_fmt([r.get('fit_seconds') for r in sel])} |"
            )
    if len(data_names) > 1:
        lines += [
            "",
            "Mean over data sets (each data set's mean over seeds, then their mean ± std):",
            "",
            "| method | data sets | " + " | ".join(METRICS) + " |",
            "|" + "---|" * (len(METRICS) + 2),
        ]
        for lab in labels:
            per_data = {m: [] for m in METRICS}
            n = 0
            for d in data_names:
                sel = [r for r in rows if r["data"] == d and r["label"] == lab and r["status"] == "done"]
                if sel:
                    n += 1
                    for m in METRICS:
                        v = [r[m] for r in sel if r.get(m) is not None]
                        if v:
                            per_data[m].append(float(np.mean(v)))
            lines.append(f"| {lab} | {n} | " + " | ".join(_fmt(per_data[m]) for m in METRICS) + " |")
    if tests:
        lines += [
            "",
            "Paired Wilcoxon signed-rank tests (same anomalous images, values averaged over seeds):",
            "",
            "| data | A | B | values | images | mean A | mean B | p |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for t in tests:
            p = "–" if t["p_value"] is None else format_p(t["p_value"])
            lines.append(
                f"| {t['data']} | {t['a']} | {t['b']} | {t['values']} | {t['n_images']} | "
                f"{t['mean_a']:.3f} | {t['mean_b']:.3f} | {p} |"
            )
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines += ["", "Failed cells:", ""] + [
            f"- {r['data']} / {r['label']} / seed {r['seed']}: {r['error']}" for r in failed
        ]
    return "\n".join(lines) + "\n"


def format_p(p: float) -> str:
    """A p-value for a table; one that underflows float64 reads "< 1e-300", not 0."""
    return "< 1e-300" if p < 1e-300 else f"{p:.3g}"

