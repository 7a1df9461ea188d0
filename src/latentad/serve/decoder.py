"""Decoding uploads in worker processes, one per decode slot, each with a CPU-time limit that holds.

A thread cannot be stopped, so a decode that runs long (a progressive JPEG of many scans, a crafted
TIFF) would keep its slot, and a shutdown, waiting for as long as it likes. Here each slot is a
process forked from a fork server that has already imported the decoders: a decode over its CPU
time is killed by the kernel (RLIMIT_CPU), one over its wall-clock deadline or whose client went
away is killed by us, and the slot is refilled at once by a fresh fork. A worker may allocate at
most a stated amount (RLIMIT_AS) beyond what it had at start, so a decode cannot take the host's
memory either. Inside a worker Pillow knows only the accepted formats (`serve.formats`).
"""

from __future__ import annotations

import io
import logging
import multiprocessing as mp
import os
import queue
import resource
import signal
import threading
from dataclasses import dataclass

import numpy as np

from latentad.errors import DataError

log = logging.getLogger("latentad.serve")
WALL_FACTOR = 3.0  # wall-clock deadline per CPU second: slots share the cores with the model
WALL_EXTRA_S = 2.0


@dataclass
class DecodeJob:
    """What a worker needs to turn an upload into the model's input, as `predict` would."""

    name: str
    data: bytes
    size: tuple[int, int] | None
    channels: int
    mode: str
    max_pixels: int
    preview_side: int | None  # a copy at most this long on its longest side (overlays), or none


@dataclass
class Decoded:
    tensor: np.ndarray  # (C, H, W) float32 in [0, 1]
    orig_size: tuple[int, int]
    preview: np.ndarray | None


class Cancelled(Exception):
    """The client went away; its decode was stopped."""


class Ticket:
    """One decode's handle: cancelling it kills the worker running it (or skips it if not started)."""

    def __init__(self) -> None:
        self.cancelled = False
        self.worker: Worker | None = None
        self.lock = threading.Lock()

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            if self.worker is not None:
                self.worker.kill()


def shrink(image: np.ndarray, side: int) -> np.ndarray:
    """A copy of `image` (HxWxC uint8) with its longest side at most `side`."""
    from PIL import Image

    h, w = image.shape[:2]
    if max(h, w) <= side:
        return image.copy()
    scale = side / max(h, w)
    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    out = np.asarray(pil.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR))
    return out if out.ndim == 3 else out[:, :, None]


def decode(job: DecodeJob) -> Decoded:
    """The upload decoded and reduced to the model's input (in a worker)."""
    from latentad.data.base import decode_image, to_input

    image = decode_image(io.BytesIO(job.data), job.name, None, job.size, job.max_pixels)
    tensor = to_input(image, job.size, job.channels, job.mode).numpy()
    preview = shrink(image, job.preview_side) if job.preview_side else None
    return Decoded(tensor, tuple(image.shape[:2]), preview)


def cpu_used() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def vm_size() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def worker_main(conn, cpu_s: float, memory: int) -> None:
    """A worker's life: decode jobs one at a time, each under its own CPU-time limit."""
    from PIL import Image

    from latentad.serve.formats import FORMATS

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the service, which stops us
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a CPU overrun kills us: no core file
    try:
        resource.setrlimit(resource.RLIMIT_AS, (vm_size() + memory, resource.RLIM_INFINITY))
    except (ValueError, OSError):  # a hard limit below: it stands
        pass
    Image.init()
    Image.ID[:] = [f for f in Image.ID if f in FORMATS]
    blank = io.BytesIO()
    Image.new("RGB", (8, 8)).save(blank, "PNG")
    decode(DecodeJob("warm-up", blank.getvalue(), (8, 8), 3, "squash", 64, None))  # one-time costs, before any job
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        soft = int(cpu_used() + cpu_s) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (soft if hard < 0 else min(soft, hard), hard))
        try:
            out = ("ok", decode(job))
        except DataError as exc:
            out = ("bad", str(exc))
        except MemoryError:
            out = ("bad", f"{job.name}: refused, decoding it needs more than {memory >> 20} MB")
        except Exception as exc:  # noqa: BLE001 (a decoder's failure is the upload's, not ours)
            out = ("bad", f"{job.name}: corrupt or truncated image ({type(exc).__name__}: {exc})")
        conn.send(out)


class Worker:
    def __init__(self, ctx, cpu_s: float, memory: int) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=worker_main, args=(child, cpu_s, memory), daemon=True,
                                   name="latentad-decode")
        self.process.start()
        child.close()

    broken = False  # killed, or its pipe closed: never handed another job

    def kill(self) -> None:
        self.broken = True
        if self.process.is_alive():
            self.process.kill()

    def stop(self) -> None:
        if not self.broken:
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.process.join(0.5)
        self.kill()
        self.process.join(1.0)
        self.conn.close()


class DecodePool:
    """`slots` worker processes; `run(job, ticket)` decodes in one of them (blocking; call it in a
    thread) within `cpu_s` seconds of CPU and a wall-clock deadline, or raises."""

    def __init__(self, slots: int, cpu_s: float, memory_mb: float, wait_s: float = 30.0) -> None:
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(["latentad.serve.decoder", "latentad.data.base"])
        self.slots, self.cpu_s, self.memory = slots, cpu_s, int(memory_mb * (1 << 20))
        self.wall_s = WALL_FACTOR * cpu_s + WALL_EXTRA_S
        self.wait_s = wait_s
        self.idle: queue.Queue[Worker] = queue.Queue()
        self.killed = 0  # decodes stopped at their CPU time or deadline
        self.cancelled = 0  # decodes stopped because their client went away
        self.closed = False
        self.workers: set[Worker] = set()
        self.lock = threading.Lock()
        for _ in range(slots):
            self.idle.put(self._spawn())

    def _spawn(self) -> Worker:
        worker = Worker(self.ctx, self.cpu_s, self.memory)
        with self.lock:
            self.workers.add(worker)
        return worker

    def run(self, job: DecodeJob, ticket: Ticket | None = None) -> Decoded:
        from latentad.serve.batcher import QueueFull

        ticket = ticket or Ticket()
        try:
            worker = self.idle.get(timeout=self.wait_s)
        except queue.Empty:
            raise QueueFull(f"all {self.slots} decode slots stayed busy for {self.wait_s:g} s") from None
        try:
            return self._on(worker, job, ticket)
        finally:
            with ticket.lock:
                ticket.worker = None
            if worker.broken or not worker.process.is_alive():
                worker.stop()
                with self.lock:
                    self.workers.discard(worker)
                worker = self._spawn() if not self.closed else worker
            if not self.closed:
                self.idle.put(worker)

    def _on(self, worker: Worker, job: DecodeJob, ticket: Ticket) -> Decoded:
        with ticket.lock:
            if ticket.cancelled:
                raise Cancelled(job.name)
            ticket.worker = worker
        try:
            worker.conn.send(job)
            if not worker.conn.poll(self.wall_s):
                worker.kill()
                self.killed += 1
                raise DataError(f"{job.name}: refused, decoding took more than {self.wall_s:g} s")
            status, value = worker.conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            worker.kill()
            if ticket.cancelled:
                self.cancelled += 1
                raise Cancelled(job.name) from None
            self.killed += 1
            raise DataError(f"{job.name}: refused, decoding used more than {self.cpu_s:g} s of CPU time "
                            "(or the memory a decode may take)") from None
        if status != "ok":
            raise DataError(value)
        return value

    def close(self) -> None:
        """Stop every worker now (a decode in progress is killed): shutdown never waits on one."""
        self.closed = True
        with self.lock:
            workers, self.workers = list(self.workers), set()
        for w in workers:
            w.kill()
        for w in workers:
            w.process.join(1.0)
            w.conn.close()
