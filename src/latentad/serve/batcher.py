"""Requests that arrive together are scored together: one model thread drains a bounded queue,
waiting a few milliseconds for company before it runs a batch, so throughput under concurrency
approaches offline `predict` while a lone request is not held back long.

The thread is supervised: a waiter that went away (its future cancelled) is skipped, one item whose
scoring raises fails only its own result (the batch is rescored item by item), and if the loop dies
anyway it is restarted and the restart counted, so `/health` can say so."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("latentad.serve")


class QueueFull(Exception):
    """The service is saturated: the client should retry later (HTTP 503)."""


class ItemFailed(Exception):
    """One item of a batch could not be scored; the other items' results stand."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass
class Job:
    """A unit of work for the model thread: `items` scored in one call of the scoring function
    together with the other jobs' items (same kind), or a `call` run alone (e.g. a calibration).
    A scored job's result is one entry per item: the item's result, or an `ItemFailed`."""

    items: list[Any] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    call: Callable[[], Any] | None = None
    future: Future = field(default_factory=Future)
    on_done: Callable[[], None] | None = None  # runs once the job left the queue, whatever its fate


def settle(job: Job, result: Any = None, error: BaseException | None = None) -> None:
    """Hand the job its outcome; a waiter that went away meanwhile is not an error of the thread."""
    try:
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)
    except InvalidStateError:  # cancelled between the check and now: nobody is listening
        pass
    finally:
        if job.on_done is not None:
            job.on_done()
            job.on_done = None


class Batcher:
    """`score(items) -> one result per item` and the jobs' calls all run on one thread, in order."""

    def __init__(self, score: Callable[[list[Any]], list[Any]], batch_size: int, max_wait_s: float = 0.01,
                 max_queue: int = 64) -> None:
        self.score, self.batch_size, self.max_wait_s = score, max(1, batch_size), max_wait_s
        self.jobs: queue.Queue[Job | None] = queue.Queue(max_queue)
        self.batches = 0
        self.restarts = 0
        self.closed = False
        self.guard = threading.Lock()
        self.thread = self._start()

    def _start(self) -> threading.Thread:
        thread = threading.Thread(target=self._supervised, name="latentad-model", daemon=True)
        thread.start()
        return thread

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def ensure_alive(self) -> None:
        """Restart the model thread if it is gone (counted); called on every submit and health probe."""
        with self.guard:
            if not self.closed and not self.thread.is_alive():
                self.restarts += 1
                log.error("model thread found dead: restarted (restart %d)", self.restarts)
                self.thread = self._start()

    def submit(self, job: Job) -> Future:
        self.ensure_alive()
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"more than {self.jobs.maxsize} requests waiting") from None
        return job.future

    def close(self, wait_s: float = 3.0) -> None:
        """Stop after the batch in progress; a full queue is not waited on (the thread is a daemon)."""
        with self.guard:
            self.closed = True
        try:
            self.jobs.put_nowait(None)
        except queue.Full:
            pass
        self.thread.join(timeout=wait_s)

    def _supervised(self) -> None:
        while True:
            try:
                self._loop()
                return
            except BaseException:  # a bug of ours, not of a request: log it, count it, go on
                with self.guard:
                    self.restarts += 1
                log.exception("model thread failed: restarted (restart %d)", self.restarts)

    def _take(self, timeout: float | None = None) -> Job | None:
        """The next job whose waiter is still there (cancelled ones are dropped); raises queue.Empty."""
        while True:
            job = self.jobs.get(timeout=timeout) if timeout is not None else self.jobs.get()
            if job is None or job.future.set_running_or_notify_cancel():
                return job
            settle(job)  # cancelled: only its clean-up runs

    def _loop(self) -> None:
        while True:
            job = self._take()
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
                    nxt = self._take(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None or nxt.call is not None:
                    after.append(nxt)
                    break
                group.append(nxt)
                n += len(nxt.items)
            try:
                self._run(group)
            except BaseException as exc:  # nobody is left waiting forever; the supervisor restarts us
                for j in group:
                    settle(j, error=exc)
                raise
            for nxt in after:
                if nxt is None:
                    return
                self._resolve(nxt)

    def _score_each(self, items: list[Any]) -> list[Any]:
        """The batch failed: score item by item so that only the culprit fails."""
        out = []
        for it in items:
            try:
                out.append(self.score([it])[0])
            except Exception as exc:
                out.append(ItemFailed(exc))
        return out

    def _run(self, group: list[Job]) -> None:
        items = [it for job in group for it in job.items]
        try:
            results = self.score(items)
        except Exception as exc:
            results = self._score_each(items) if len(items) > 1 else [ItemFailed(exc)]
        self.batches += 1
        start = 0
        for job in group:
            settle(job, results[start:start + len(job.items)])
            start += len(job.items)

    @staticmethod
    def _resolve(job: Job) -> None:
        try:
            result = job.call()
        except Exception as exc:
            settle(job, error=exc)
            return
        settle(job, result)
