"""Decoding ahead of the model: images are decoded and resized in worker threads while the caller
(the model) works on the previous batch, in order, with a bounded look-ahead so memory stays flat.

PIL's decoders and torch's resize release the GIL, so threads overlap with the forward pass without
the start-up and copying costs of processes. `workers` <= 1 decodes in the calling thread (the old
behaviour). The default comes from `set_decode_workers` (the CLI's `--workers`), else the
`LATENTAD_DECODE_WORKERS` environment variable, else min(4, cores).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from latentad.errors import ConfigError

T = TypeVar("T")
_chosen: int | None = None


def set_decode_workers(n: int | None) -> None:
    """Set the process-wide default number of decoding threads (None: back to the default)."""
    global _chosen
    if n is not None and n < 0:
        raise ConfigError(f"--workers {n}: must be 0 (decode in the main thread) or more")
    _chosen = n


def decode_workers() -> int:
    if _chosen is not None:
        return _chosen
    env = os.environ.get("LATENTAD_DECODE_WORKERS")
    if env:
        try:
            return max(0, int(env))
        except ValueError:
            raise ConfigError(f"LATENTAD_DECODE_WORKERS={env!r}: expected a number of threads") from None
    return min(4, os.cpu_count() or 1)


def prefetched(indices: Sequence[int], load: Callable[[int], T], workers: int | None = None,
               ahead: int = 32) -> Iterator[T]:
    """`load(i)` for each index, in order, computed up to `ahead` items in advance by `workers` threads."""
    n = decode_workers() if workers is None else workers
    if n <= 1:
        for i in indices:
            yield load(i)
        return
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="latentad-decode") as pool:
        pending: deque[Future[T]] = deque()
        it = iter(indices)
        for i in it:
            pending.append(pool.submit(load, i))
            if len(pending) >= ahead:
                break
        while pending:
            fut = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(load, nxt))
            try:
                yield fut.result()
            except BaseException:
                for f in pending:
                    f.cancel()
                raise
