"""One grid cell (data x method x seed) = one run folder made by the same code as `fit` + `evaluate`.

`OUT/runs/<data>/<label>/seed<k>/` holds the run and `cell.json`: the spec entry the cell was run
for, its status (running / done / failed), its one-line error and its row of results. A cell whose
`cell.json` says done for the same entry is skipped; a cell left running (killed) starts again, and
trained methods resume from their checkpoint. `run_cell` takes and returns plain dicts so that a
worker process or a Dask worker can run it.
"""

from __future__ import annotations

import json
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from latentad import io

ROW_KEYS = [
    "data",
    "label",
    "method",
    "preset",
    "seed",
    "shots",
    "status",
    "image_auroc",
    "pixel_auroc",
    "aupro",
    "aupimo",
    "f1_max",
    "fit_seconds",
    "eval_seconds",
    "eval_size",
    "threads",
    "warnings",
    "error",
    "tuned",
]


def cell_dir(out: Path, cell: dict[str, Any]) -> Path:
    return out / "runs" / Path(cell["data"]["name"]) / cell["method"]["label"] / f"seed{cell['seed']}"


def _identity(cell: dict[str, Any]) -> dict[str, Any]:
    """What must match for a finished cell to count for this spec entry (JSON-normalised)."""
    return json.loads(json.dumps(cell))


def finished_row(out: Path, cell: dict[str, Any]) -> dict[str, Any] | None:
    """The cell's row when it already ran to completion for this same entry, else None."""
    f = cell_dir(out, cell) / "cell.json"
    if not f.is_file():
        return None
    try:
        saved = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if (
        saved.get("status") == "done"
        and saved.get("entry") == _identity(cell)
        and (cell_dir(out, cell) / "metrics.json").is_file()
    ):
        return saved["row"]
    return None


def _row(cell: dict[str, Any], status: str, **values: Any) -> dict[str, Any]:
    row = dict.fromkeys(ROW_KEYS)
    row.update(
        data=cell["data"]["name"],
        label=cell["method"]["label"],
        method=cell["method"]["name"],
        preset=cell["method"]["preset"] or "default",
        seed=cell["seed"],
        shots=cell.get("shots"),
        status=status,
        eval_size=cell["eval_size"],
    )
    row.update(values)
    return row


def _fit_and_evaluate(cell: dict[str, Any], run: Path, resume: bool, device: str | None) -> dict[str, Any]:
    import torch

    from latentad.errors import LatentADError
    from latentad.runs import evaluate_run, fit_run

    m, d = cell["method"], cell["data"]
    try:
        t0 = time.perf_counter()
        fit_run(run, m["name"], d["path"], d["format"], dict(d["options"]), m["preset"], dict(m["options"]),
                cell["seed"], resume, True, cell["calibration_fraction"], cell["target_fpr"], device,
                tune=None if m.get("tune") is None else {**m["tune"], **(d.get("tune") or {})},
                shots=cell.get("shots"))
        fit_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        metrics = evaluate_run(run, None, None, None, eval_size=cell["eval_size"], device=device).metrics
        return _row(cell, "done", **{k: metrics.get(k) for k in ("image_auroc", "pixel_auroc", "aupro", "aupimo",
                                                                 "f1_max")},
                    fit_seconds=round(fit_s, 2), eval_seconds=round(time.perf_counter() - t1, 2),
                    tuned=_tuned(run),
                    threads=torch.get_num_threads())
    except (LatentADError, ValueError, RuntimeError, OSError, MemoryError) as exc:
        line = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        io.write_text(run / "error.txt", traceback.format_exc())
        return _row(cell, "failed", error=line, threads=torch.get_num_threads())


def _tuned(run: Path) -> str | None:
    """The options the cell's tuning chose (JSON), when it had a `tune` table."""
    f = run / "tuning.json"
    return json.dumps(json.loads(f.read_text())["chosen"], sort_keys=True) if f.is_file() else None


def run_cell(cell: dict[str, Any], out: str, threads: int | None = None, device: str | None = None) -> dict[str, Any]:
    """Fit and evaluate one cell (or return its finished row); never raises for a failing cell: the
    error is recorded as one line in the row and in `cell.json`, and the grid goes on."""
    import torch

    out_path = Path(out)
    done = finished_row(out_path, cell)
    if done is not None:
        return {**done, "skipped": True}
    if threads:
        torch.set_num_threads(threads)
    run = cell_dir(out_path, cell)
    run.mkdir(parents=True, exist_ok=True)
    entry = _identity(cell)
    io.write_json(run / "cell.json", {"entry": entry, "status": "running", "started": time.time()})
    resume = (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir())
    with warnings.catch_warnings(record=True) as seen:  # a cell's warnings go to its folder, not the console
        warnings.simplefilter("always")
        row = _fit_and_evaluate(cell, run, resume, device)
    if seen:
        io.write_text(run / "warnings.txt", "".join(f"{w.category.__name__}: {w.message}\n" for w in seen))
    row["warnings"] = len(seen)
    io.write_json(run / "cell.json", {"entry": entry, "status": row["status"], "row": row})
    return row
