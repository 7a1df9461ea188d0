"""Connection-level limits: a connection that sends nothing, or sends slowly, costs a socket for a
bounded time and never a slot of the work the service does.

- No cap on connections at the HTTP layer (uvicorn's `limit_concurrency` counts idle connections
  too, so a few hundred silent ones locked everyone out); the open-file limit is raised to its hard
  limit instead, and `MAX_WORKING` caps the requests being decoded and scored.
- The request head (line and headers, at most `MAX_HEAD` bytes) must be complete within
  `HEADER_TIMEOUT_S` of the connection opening or of its previous answer, or the connection is
  closed (uvicorn has no such deadline: `HeadDeadline`).
- An idle keep-alive connection is closed after `IDLE_TIMEOUT_S`.
- A body must arrive at `MIN_BODY_RATE` on average once `BODY_GRACE_S` have passed, and in at most
  `BODY_TIMEOUT_S` in all (`BodyClock`, enforced by the guard): 408, and the connection closes.
- /health takes no work slot, so it answers while every slot is busy.
- On SIGTERM, requests still running after `GRACEFUL_S` are cancelled; decode workers are killed.
"""

from __future__ import annotations

import asyncio
import resource
import time

from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 5
MAX_HEAD = 16 << 10
BODY_GRACE_S = 10.0
MIN_BODY_RATE = 16 << 10  # bytes per second, averaged since the head arrived
BODY_TIMEOUT_S = 300.0
MAX_WORKING = 32
WORK_WAIT_S = 10.0  # a request waits this long for a work slot, then 503
GRACEFUL_S = 3


class BodyTooSlow(Exception):
    """The body fell behind its minimum rate or its deadline; the 408 has been sent."""


class BodyClock:
    """When the next piece of a body must have arrived, given what has arrived so far."""

    def __init__(self) -> None:
        self.start, self.grace, self.rate, self.total = time.monotonic(), BODY_GRACE_S, MIN_BODY_RATE, BODY_TIMEOUT_S
        self.seen = 0

    def remaining(self) -> float:
        deadline = self.start + min(self.total, self.grace + self.seen / self.rate)
        return max(0.0, deadline - time.monotonic())

    def why(self) -> str:
        took = time.monotonic() - self.start
        return (f"request body too slow: {self.seen} bytes in {took:.1f} s (a body must arrive at "
                f"{self.rate / 1024:g} KB/s or faster after its first {self.grace:g} s, and within "
                f"{self.total:g} s)")

    async def receive(self, receive):
        """The next message of `receive`, or TimeoutError when the body is late."""
        async with asyncio.timeout(self.remaining()):
            message = await receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
        return message


class HeadDeadline(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head is not complete within
    HEADER_TIMEOUT_S of its opening or of its previous answer (silent connections included)."""

    header_timeout = HEADER_TIMEOUT_S
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not None and self.cycle is not before:
            self._cancel_head()  # a head arrived: the body has its own clock (BodyClock)

    def on_response_complete(self) -> None:
        self._arm_head()  # the next head's deadline; a pipelined head cancels it at once
        super().on_response_complete()

    def _arm_head(self) -> None:
        self._cancel_head()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_expired)

    def _cancel_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
            self.transport.close()


def raise_open_files() -> int:
    """The soft limit on open files raised to the hard one (each connection is a file): the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 65536)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


class Closing:
    """`app` with a lifespan that runs `close` on shutdown, in a thread: uvicorn re-raises SIGTERM
    once it has shut down, so code after `Server.run` never runs; this does, before."""

    def __init__(self, app, close) -> None:
        self.app, self.close = app, close

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.close)
                await send({"type": "lifespan.shutdown.complete"})
                return


def server_config(app, host: str, port: int, **options):
    """The uvicorn configuration `latentad serve` runs under (the limits above); the service is
    closed (its decode workers killed) when the server shuts down."""
    import uvicorn

    app = Closing(app, app.state.service.close)
    return uvicorn.Config(app, host=host, port=port, http=HeadDeadline, limit_concurrency=None,
                          timeout_keep_alive=IDLE_TIMEOUT_S, timeout_graceful_shutdown=GRACEFUL_S,
                          h11_max_incomplete_event_size=MAX_HEAD, **{"log_level": "warning", **options})
