"""The service's memory budget: what one request and all requests together may hold.

Three limits keep a burst of requests from exhausting the server (the README states the resulting
bound): the body of one request is capped while it streams (`guard`); the pixels one request may
make the server decode are capped, checked from each file's header before its pixels are decoded;
and the decoded images held at once (reduced to the model's input as soon as they are decoded,
waiting in the queue or being scored) are capped in bytes across all requests.
"""

from __future__ import annotations

import threading

from latentad.serve.batcher import QueueFull


class TooLarge(Exception):
    """One request asks for more than the service ever holds for a request (HTTP 413)."""


class Budget:
    """Bytes of decoded uploads held across requests, at most `limit`."""

    def __init__(self, limit: int, option: str = "--memory-budget-mb") -> None:
        self.limit, self.option = limit, option
        self.held = 0
        self.lock = threading.Lock()

    def hold(self) -> Hold:
        return Hold(self)


class Hold:
    """One request's share of the budget; released once, when its images have left the service."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.bytes = 0
        self.released = False
        self.submitted = False  # handed to the model thread, whose job releases it

    def add(self, n: int) -> None:
        b = self.budget
        with b.lock:
            if self.bytes + n > b.limit:
                raise TooLarge(f"the decoded images of one request take over {b.limit / (1 << 20):.0f} MB "
                               f"({b.option}); send fewer images per request")
            if b.held + n > b.limit:
                raise QueueFull(f"decoded images waiting fill the memory budget of {b.limit / (1 << 20):.0f} MB")
            b.held += n
            self.bytes += n

    def release(self) -> None:
        b = self.budget
        with b.lock:
            if not self.released:
                b.held -= self.bytes
                self.released = True


class PixelCount:
    """Pixels one request has asked the server to decode, at most `limit` (checked from headers)."""

    def __init__(self, limit: int, option: str = "--max-request-mpix") -> None:
        self.limit, self.option, self.total = limit, option, 0

    def add(self, name: str, pixels: int) -> None:
        self.total += pixels
        if self.total > self.limit:
            raise TooLarge(f"{name}: the images of this request add up to over {self.limit / 1e6:g} megapixels "
                           f"({self.option}); send fewer or smaller images per request")
