"""Progress bars for long steps (rich), silent when no description is given or output is not a TTY
and LATENTAD_PROGRESS is unset."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

T = TypeVar("T")


_QUIET = [False]
_DEADLINE: list[float | None] = [None]


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Long loops (`track`, training steps) raise `errors.OverTime` once `seconds` have passed: a
    budgeted search stops a candidate that overruns its estimate instead of overrunning the budget."""
    before, _DEADLINE[0] = _DEADLINE[0], time.perf_counter() + seconds
    try:
        yield
    finally:
        _DEADLINE[0] = before


def tick() -> None:
    """A point where a deadline set around the work is checked."""
    if _DEADLINE[0] is not None and time.perf_counter() > _DEADLINE[0]:
        from latentad.errors import OverTime

        raise OverTime("the time allowed for this work ran out")


@contextmanager
def quiet() -> Iterator[None]:
    """Inner progress bars off while an outer one (a search over candidates) is shown: rich shows
    one live display at a time."""
    before, _QUIET[0] = _QUIET[0], True
    try:
        yield
    finally:
        _QUIET[0] = before


def enabled() -> bool:
    if _QUIET[0]:
        return False
    flag = os.environ.get("LATENTAD_PROGRESS")
    if flag is not None:
        return flag not in ("0", "", "false")
    return sys.stderr.isatty()


def make_progress() -> Progress:
    from rich.console import Console

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=Console(stderr=True),
        transient=False,
    )


def track(items: Iterable[T], description: str | None, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar when `description` is set and progress is enabled."""
    if not description or not enabled():
        for item in items:
            tick()
            yield item
        return
    with make_progress() as progress:
        task = progress.add_task(description, total=total, info="")
        for item in items:
            tick()
            yield item
            progress.advance(task)
