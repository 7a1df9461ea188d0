"""The service's front door, as plain ASGI middleware (it sees every byte before FastAPI does).

- Host: on a loopback or a named address, a request must name that host (or one of the allowed
  origins' hosts): a DNS-rebinding page cannot reach the service under its own name.
- Origin: a write (any method but GET / HEAD / OPTIONS) from a browser must come from the service's
  own origin or an allowed one (`--allow-origin`); a browser's cross-site "simple" POST, which needs
  no preflight, is refused with 403. Clients that are not browsers send no Origin and pass.
- Token: with one set, everything but the open paths needs `Authorization: Bearer TOKEN`, compared
  in constant time.
- Body: at most `max_body` bytes per request, counted while the body streams (chunked bodies too);
  past it the answer is 413 and the connection closes, the rest unread. It must arrive at the
  minimum rate of `limits.BodyClock` (408 and the connection closes otherwise).
- Memory: each request gets its account in the memory budget (`budget.Hold`, in the request's
  state as `hold`), charged with the body as it streams (503 when the budget is full) and released
  after the answer has been sent.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from latentad.serve.batcher import QueueFull
from latentad.serve.budget import Budget, TooLarge
from latentad.serve.limits import BodyClock
from latentad.serve.telemetry import Telemetry

OPEN_PATHS = ("/health", "/", "/favicon.ico")
KNOWN = {"/predict", "/calibrate", "/calibrate/undo", "/calibrate/feedback", "/feedback", "/feedback/clear", "/health",
         "/metrics", "/", "/favicon.ico"}
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARD = ("0.0.0.0", "::", "")
DRAIN_CAP = 64 << 20  # bytes of a body refused before reading (and dropped) so the client reads its answer


class BodyRefused(Exception):
    """The body went past a cap or fell behind its rate while streaming; the refusal has been sent."""


def hostname(value: str) -> str:
    """The host part of a Host header or an origin's netloc, lower case, without port or brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def normal_origin(origin: str) -> str:
    parts = urlsplit(origin.strip().lower())
    return f"{parts.scheme}://{parts.netloc}"


def is_loopback(host: str) -> bool:
    return hostname(host) in LOOPBACK or hostname(host).startswith("127.")


class Guard:
    """Checks Host, Origin, token and body size of every HTTP request; see the module docstring."""

    def __init__(self, app: Callable, telemetry: Telemetry, bind: str = "127.0.0.1", token: str | None = None,
                 allow_origins: Iterable[str] = (), max_body: int = 128 << 20, body_option: str = "--max-request-mb",
                 budget: Budget | None = None) -> None:
        self.app, self.telemetry, self.token = app, telemetry, token
        self.origins = {normal_origin(o) for o in allow_origins}
        bound = hostname(bind)
        if bound in WILDCARD:
            self.hosts: set[str] | None = None  # any name may reach a wildcard bind: the token guards it
        else:
            self.hosts = {bound, *(LOOPBACK if is_loopback(bound) else ())}
            self.hosts |= {hostname(urlsplit(o).netloc) for o in self.origins}
        self.max_body, self.body_option = max_body, body_option
        self.budget = budget or Budget(1 << 62)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = {"code": 500}

        async def counted_send(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        refusal = self.check(scope)
        if refusal is not None:
            await self.refuse(receive, counted_send, *refusal)
        else:
            await self.pass_on(scope, receive, counted_send)
        path = scope["path"]
        self.telemetry.observe(path if path in KNOWN else "other", status["code"], time.perf_counter() - t0)

    def check(self, scope) -> tuple[int, str, str] | None:
        """(status, error kind, one line) for a request refused before its body is read; else None."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if self.hosts is not None and hostname(host) not in self.hosts:
            return 421, "wrong_host", f"Host {host!r} is not this service (allowed: {', '.join(sorted(self.hosts))})"
        if scope["method"] not in SAFE_METHODS:
            reason = self.cross_origin(headers, host)
            if reason:
                return 403, "cross_origin", reason
        if self.token and scope["path"] not in OPEN_PATHS:
            got = headers.get("authorization", "")
            if not hmac.compare_digest(got.encode(), f"Bearer {self.token}".encode()):
                return 401, "unauthorized", "missing or wrong bearer token (Authorization: Bearer TOKEN)"
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return 413, "too_large", self.too_large(f"request of {int(length) / (1 << 20):.1f} MB")
        return None

    def cross_origin(self, headers: dict, host: str) -> str | None:
        """Why a write is refused as cross-origin, or None when it is same-origin or not from a browser."""
        origin = headers.get("origin")
        if origin is not None:
            o = normal_origin(origin)
            same = urlsplit(o).netloc == host.strip().lower() and o.startswith(("http://", "https://"))
            if same or o in self.origins:
                return None
            return f"cross-origin write from {origin!r} refused (allow it with --allow-origin)"
        site = headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return f"cross-site write refused (Sec-Fetch-Site: {site})"
        return None

    def too_large(self, what: str) -> str:
        return f"{what} is over the limit of {self.max_body / (1 << 20):g} MB per request ({self.body_option})"

    async def refuse(self, receive, send, status: int, kind: str, detail: str) -> None:
        self.telemetry.errors.labels(kind).inc()
        clock = BodyClock()
        extra = [(b"www-authenticate", b"Bearer")] if status == 401 else []
        try:
            while clock.seen <= DRAIN_CAP:  # read (and drop) a little, so a client still sending can read the answer
                message = await clock.receive(receive)
                if message["type"] != "http.request":
                    return
                if not message.get("more_body", False):
                    break
        except TimeoutError:
            extra.append((b"connection", b"close"))
        await respond(send, status, detail, extra)

    async def pass_on(self, scope, receive, send) -> None:
        answered, done = False, False
        clock, hold = BodyClock(), self.budget.hold()
        scope = {**scope, "state": {**scope.get("state", {}), "hold": hold}}

        async def stop(status: int, kind: str, detail: str, extra=()) -> None:
            nonlocal answered
            self.telemetry.errors.labels(kind).inc()
            answered = True
            await respond(send, status, detail, [(b"connection", b"close"), *extra])
            raise BodyRefused

        async def capped_receive():
            nonlocal done
            if done:  # the body is in: what comes now is the disconnect, whenever it happens
                return await receive()
            try:
                message = await clock.receive(receive)
            except TimeoutError:
                await stop(408, "too_slow", clock.why())
            if message["type"] != "http.request":
                return message
            done = not message.get("more_body", False)
            if clock.seen > self.max_body:
                await stop(413, "too_large", self.too_large("the request body"))
            try:
                hold.add(len(message.get("body", b"")))
            except TooLarge as exc:
                await stop(413, "too_large", str(exc))
            except QueueFull as exc:
                await stop(503, "memory_full", f"busy: {exc}; retry later", [(b"retry-after", b"1")])
            return message

        async def once_send(message) -> None:
            if not answered:  # after our refusal, whatever the app still says is dropped
                await send(message)

        try:
            await self.app(scope, capped_receive, once_send)
        except BodyRefused:
            pass
        except Exception:
            if not answered:
                raise
        finally:
            hold.release()  # the answer has been sent (or the client is gone)


async def respond(send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
