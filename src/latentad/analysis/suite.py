"""`analyze`: the latent-space questions for any fitted runs, on one data set, written as
`analysis.json` (for scripts), `figures/` and `analysis.html` (for people).

Data flows one way: runs + data -> `collect` (one embedding pass per image set and run) -> one
module per question -> `agreement` across runs -> json + page.
"""

from __future__ import annotations

import datetime as _dt
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from latentad import io
from latentad.analysis import agreement, codebook, components, dimension, gaussianity, levels, positions, projection
from latentad.analysis.collect import Collected, collect
from latentad.analysis.page import QUESTIONS, write_page
from latentad.errors import ConfigError
from latentad.extras import require
from latentad.report.html import describe_data
from latentad.runs import load_run, open_split


def _names(runs: list[Path]) -> list[str]:
    """Run names for the page and the json: the folder name, made unique with its parent's."""
    names = [r.resolve().name for r in runs]
    return [f"{r.resolve().parent.name}-{n}" if names.count(n) > 1 else n for r, n in zip(runs, names, strict=True)]


def answer_run(c: Collected, figdir: Path, use_umap: bool, say: Callable[[str], None]) -> dict:
    """Every question for one run (None where a question does not apply to its method)."""
    steps = [
        ("gaussianity", lambda: gaussianity.answer(c, figdir)),
        ("components", lambda: components.answer(c, figdir)),
        ("intrinsic_dimension", lambda: dimension.answer(c, figdir)),
        ("levels", lambda: levels.answer(c, figdir)),
        ("codebook", lambda: codebook.answer(c, figdir)),
        ("positions", lambda: positions.answer(c, figdir)),
        ("projection", lambda: projection.answer(c, figdir, use_umap)),
    ]
    out: dict = {}
    for key, step in steps:
        t0 = time.perf_counter()
        out[key] = step()
        say(f"{c.name}: {key} ({time.perf_counter() - t0:.1f} s)")
    return out


def analyze(
    runs: list[Path],
    out: Path,
    data: str | None = None,
    fmt: str | None = None,
    data_options: dict | None = None,
    limit: int | None = None,
    device: str | None = None,
    use_umap: bool = True,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
) -> dict:
    """Answer the questions for each run on `data` (default: the first run's data) and write `out`."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    if not runs:
        raise ConfigError("analyze: give at least one --run")
    require("skdim", "analysis", "latentad analyze")  # before any embedding pass, not after it
    if limit is not None and limit < 2:
        raise ConfigError(f"--limit {limit}: must be at least 2")
    loaded = [load_run(Path(r), device) for r in runs]
    first = loaded[0][0].get("data", {})
    data = data or first.get("path")
    if data is None:
        raise ConfigError(f"{runs[0]}: the run records no data path; give --data")
    same_as_first = str(data) == str(first.get("path"))
    fmt = fmt or (first.get("format_option", "auto") if same_as_first else "auto")
    opts = data_options if data_options is not None else (first.get("data_options", {}) if same_as_first else {})
    split = open_split(str(data), fmt, opts)
    for run, (config, _, _) in zip(runs, loaded, strict=True):
        if str(config.get("data", {}).get("path")) != str(data):
            warnings.warn(f"{run}: fitted on {config.get('data', {}).get('path')}, analysed on {data}", stacklevel=2)
    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result: dict = {
        "data": {**split.info, "path": str(data), "format": fmt, "options": opts},
        "limit": limit,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "runs": {},
    }
    collected = []
    for name, run, (config, detector, cal) in zip(_names(runs), runs, loaded, strict=True):
        c = collect(name, Path(run), config, detector, cal.image_threshold, split, limit, progress)
        answers = answer_run(c, figdir, use_umap, say)
        result["runs"][name] = {
            "method": c.method,
            "family": c.family,
            "run": str(run),
            "embedding": c.image_key,
            "embedding_dim": int(c.train.shape[1]),
            "positions": c.grid_key,
            "positions_note": c.grid_note,
            **answers,
        }
        result.setdefault("images", {"train": len(c.train), "heldout": len(c.heldout), "test": len(c.test)})
        c.codebook = None  # the agreement needs only scores, labels and paths
        c.levels, c.maps, c.masks = {}, None, None
        collected.append(c)
    result["agreement"] = agreement.answer(collected, figdir)
    titles = dict(QUESTIONS)
    result["findings"] = [
        f"{name} / {titles[k]} {r[k]['summary']}"
        for name, r in result["runs"].items()
        for k, _ in QUESTIONS
        if r.get(k)
    ]
    if result["agreement"]:
        result["findings"].append(f"agreement: {result['agreement']['summary']}")
    result["seconds"] = round(time.perf_counter() - t0, 1)
    io.write_json(out / "analysis.json", result)
    write_page(out, result, describe_data(result["data"]))
    say(f"analysis: {out / 'analysis.html'} ({result['seconds']} s)")
    return result
