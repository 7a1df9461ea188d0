"""Progress bars for long steps (rich), silent when no description is given or output is not a TTY
and LATENTAD_PROGRESS is unset."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

T = TypeVar("T")


def enabled() -> bool:
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
        yield from items
        return
    with make_progress() as progress:
        task = progress.add_task(description, total=total, info="")
        for item in items:
            yield item
            progress.advance(task)
