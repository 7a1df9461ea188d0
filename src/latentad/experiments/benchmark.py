"""`latentad benchmark`: run a spec's grid with an executor, then write `results.csv`, `tables.md`
(and, for the paper's tables, `paper_table.md`) in the output folder."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from latentad import io
from latentad.errors import ConfigError
from latentad.experiments.cells import finished_row
from latentad.experiments.executors import Tracker, run_dask, run_local
from latentad.experiments.spec import Spec
from latentad.experiments.tables import paired_tests, tables_markdown, write_results_csv


def _key(cell: dict[str, Any]) -> tuple:
    return cell["data"]["name"], cell["method"]["label"], cell["seed"]


def run_grid(
    spec: Spec,
    out: Path,
    executor: str = "local",
    scheduler: str | None = None,
    workers: int | None = None,
    device: str | None = None,
    paper: str | None = None,
    say: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Every cell of `spec` (finished ones skipped), then the results files; returns the rows in
    spec order."""
    from latentad.experiments.paper import paper_layout

    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    if executor not in ("local", "dask"):
        raise ConfigError(f"--executor {executor}: local or dask")
    if executor == "local" and scheduler is not None:
        raise ConfigError("--scheduler applies only with --executor dask")
    if executor == "dask" and workers is not None and scheduler is not None:
        raise ConfigError("--workers goes with --executor local, or with dask and no --scheduler (local:N sets "
                          "the workers; a running cluster has its own)")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers}: must be at least 1")
    out.mkdir(parents=True, exist_ok=True)
    io.write_json(
        out / "spec.json",
        {
            "source": spec.source,
            "seeds": spec.seeds,
            "eval_size": spec.eval_size,
            "data": [asdict(d) for d in spec.data],
            "methods": [asdict(m) for m in spec.methods],
        },
    )
    cells = spec.cells()
    tracker = Tracker(len(cells), say)
    t0 = time.perf_counter()
    got: dict[tuple, dict[str, Any]] = {}
    pending = []
    for c in cells:  # finished cells are skipped here: a rerun of a done grid starts no worker at all
        row = finished_row(out, c)
        if row is None:
            pending.append(c)
        else:
            got[_key(c)] = row
            tracker.finished({**row, "skipped": True})
    if pending:
        stream = (run_dask(pending, str(out), scheduler, workers, device, tracker) if executor == "dask"
                  else run_local(pending, str(out), workers or 1, device, tracker))
        got.update({(r["data"], r["label"], r["seed"]): r for r in stream})
    rows = [got[_key(c)] for c in cells]
    for r in rows:
        r.pop("skipped", None)
    write_results_csv(out / "results.csv", rows)
    tests = paired_tests(out, cells, rows)
    io.write_json(out / "tests.json", tests)
    tables = tables_markdown(rows, tests, f"latentad benchmark: {spec.source}")
    if spec.shots:
        from latentad.experiments.shots import shots_curve

        figure = shots_curve(out / "shots_curve.png", rows)
        tables += f"\n![image and pixel AUROC against the number of normal images K]({figure.name})\n"
    io.write_text(out / "tables.md", tables)
    if paper and paper != "families":
        io.write_text(out / "paper_table.md", paper_layout(paper, rows))
    say(f"benchmark: {len(rows)} cells in {time.perf_counter() - t0:.0f} s -> {out / 'tables.md'}")
    return rows
