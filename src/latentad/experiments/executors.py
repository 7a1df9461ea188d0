"""Where the cells run: one after another in this process, in N local worker processes with the
cores split between them, or on a `dask.distributed` cluster (an existing scheduler, or a
`LocalCluster` of N single-threaded worker processes started for the grid).

Each executor yields the rows as cells finish; `Tracker` turns them into progress (done / running /
failed, time so far, an estimate of what remains). Dask workers read the data paths themselves:
every worker must see the same files at the same paths (a shared file system).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from latentad.errors import ConfigError
from latentad.experiments.cells import run_cell
from latentad.extras import require

Row = dict[str, Any]


class Tracker:
    """Counts and timing for the progress line."""

    def __init__(self, total: int, show: Callable[[str], None]) -> None:
        self.total, self.show, self.t0 = total, show, time.perf_counter()
        self.done = self.failed = self.skipped = self.running = 0
        self.work_seconds: list[float] = []

    def started(self, n: int = 1) -> None:
        self.running += n
        self.line()

    def finished(self, row: Row) -> None:
        self.running = max(0, self.running - 1)
        if row.get("skipped"):
            self.skipped += 1
        elif row["status"] == "failed":
            self.failed += 1
        else:
            self.done += 1
            self.work_seconds.append(time.perf_counter() - self.t0)
        self.line(
            f"{row['data']} / {row['label']} / seed {row['seed']}: {row['status']}"
            + (f" ({row['error']})" if row.get("error") else "")
        )

    def line(self, last: str = "") -> None:
        elapsed = time.perf_counter() - self.t0
        finished = self.done + self.failed + self.skipped
        ran = self.done + self.failed
        left = self.total - finished
        eta = f", about {elapsed / ran * left:.0f} s left" if ran and left else ""
        self.show(
            f"[{finished}/{self.total}] done {self.done + self.skipped} (skipped {self.skipped}), "
            f"running {self.running}, failed {self.failed}; {elapsed:.0f} s{eta}" + (f" | {last}" if last else "")
        )


def _drain(completed, slots: int, n: int, tracker: Tracker) -> Iterator[Row]:
    """Rows of finished futures (process pool or Dask) as they come, keeping the running count."""
    tracker.started(min(slots, n))
    for fut in completed:
        row = fut.result()
        tracker.finished(row)
        if tracker.running < min(slots, tracker.total - tracker.done - tracker.failed - tracker.skipped):
            tracker.started()
        yield row


def run_local(cells: list[dict], out: str, workers: int, device: str | None, tracker: Tracker) -> Iterator[Row]:
    if workers <= 1:
        for cell in cells:
            tracker.started()
            row = run_cell(cell, out, None, device)
            tracker.finished(row)
            yield row
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_cell, cell, out, threads, device) for cell in cells]
        yield from _drain(as_completed(futures), workers, len(cells), tracker)


def dask_client(scheduler: str | None, workers: int | None):
    """A `distributed.Client`: `local:N` starts a LocalCluster of N single-threaded processes."""
    require("distributed", "dask", "--executor dask")
    from distributed import Client, LocalCluster
    if scheduler is None or scheduler.startswith("local"):
        n = workers or 2
        if scheduler and scheduler.startswith("local:"):
            try:
                n = int(scheduler.split(":", 1)[1])
            except ValueError:
                raise ConfigError(f"--scheduler {scheduler}: expected local:N with N a number of workers") from None
        if n < 1:
            raise ConfigError(f"--scheduler {scheduler}: needs at least one worker")
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
        return Client(cluster), cluster
    try:
        return Client(scheduler, timeout="20s"), None
    except OSError as exc:
        raise ConfigError(f"--scheduler {scheduler}: cannot reach the Dask scheduler ({exc})") from None


def run_dask(
    cells: list[dict], out: str, scheduler: str | None, workers: int | None, device: str | None, tracker: Tracker
) -> Iterator[Row]:
    from distributed import as_completed as dask_completed

    client, cluster = dask_client(scheduler, workers)
    try:
        n_threads = sum(client.nthreads().values()) or 1
        per = max(1, min(client.nthreads().values() or [1]))
        futures = [
            client.submit(run_cell, cell, out, per, device, pure=False, key=f"cell-{i}") for i, cell in enumerate(cells)
        ]
        yield from _drain(dask_completed(futures), n_threads, len(cells), tracker)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
