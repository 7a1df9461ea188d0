"""Requests that arrive together are scored together: one model thread drains a bounded queue,
waiting a few milliseconds for company before it runs a batch, so throughput under concurrency
approaches offline `predict` while a lone request is not held back long."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any


class QueueFull(Exception):
    """The service is saturated: the client should retry later (HTTP 503)."""


@dataclass
class Job:
    """A unit of work for the model thread: `items` scored in one call of the scoring function
    together with the other jobs' items (same kind), or a `call` run alone (e.g. a calibration)."""

    items: list[Any] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    call: Callable[[], Any] | None = None
    future: Future = field(default_factory=Future)


class Batcher:
    """`score(items) -> one result per item` and the jobs' calls all run on one thread, in order."""

    def __init__(self, score: Callable[[list[Any]], list[Any]], batch_size: int, max_wait_s: float = 0.01,
                 max_queue: int = 64) -> None:
        self.score, self.batch_size, self.max_wait_s = score, max(1, batch_size), max_wait_s
        self.jobs: queue.Queue[Job | None] = queue.Queue(max_queue)
        self.batches = 0
        self.thread = threading.Thread(target=self._loop, name="latentad-model", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> Future:
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"more than {self.jobs.maxsize} requests waiting") from None
        return job.future

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            if job.call is not None:
                self._resolve(job)
                continue
            group, n = [job], len(job.items)
            deadline = time.monotonic() + self.max_wait_s
            after: list[Job | None] = []  # a call or the stop met while gathering: run after this batch
            while n < self.batch_size:
                try:
                    nxt = self.jobs.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None or nxt.call is not None:
                    after.append(nxt)
                    break
                group.append(nxt)
                n += len(nxt.items)
            self._run(group)
            for nxt in after:
                if nxt is None:
                    return
                self._resolve(nxt)

    def _run(self, group: list[Job]) -> None:
        items = [it for job in group for it in job.items]
        try:
            results = self.score(items)
        except BaseException as exc:  # every waiting request learns of it; the thread goes on
            for job in group:
                job.future.set_exception(exc)
            return
        self.batches += 1
        start = 0
        for job in group:
            job.future.set_result(results[start:start + len(job.items)])
            start += len(job.items)

    @staticmethod
    def _resolve(job: Job) -> None:
        try:
            result = job.call()
        except BaseException as exc:
            job.future.set_exception(exc)
            return
        job.future.set_result(result)
