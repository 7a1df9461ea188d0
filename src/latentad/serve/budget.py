"""The service's memory budget: what one request and all requests together may hold.

One account per request (a `Hold`), opened by the front door (`guard`) when the request arrives and
closed only after its answer has been sent, holds everything the request makes the server keep:
its body as it streams in (whether the multipart parser keeps a part in memory or spools it), the
model inputs its uploads are decoded to (full-size pixels live only in a decode worker, see
`decoder`), and its serialised answer (overlays and masks included). All accounts together stay
within the budget (503 past it); one request alone asking for more is refused (413). The pixels one
request may make the server decode are capped too, checked from each file's header.
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
    """One request's share of the budget, released when its last holder lets go: the request once
    its answer is sent, and each job handed to the model thread once it has left the queue (a job
    whose client went away still holds its inputs until then)."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.bytes = 0
        self.holders = 1
        self.released = False

    def share(self) -> Hold:
        """One more holder (a job handed to the model thread), who must `release` too."""
        with self.budget.lock:
            self.holders += 1
        return self

    def add(self, n: int) -> None:
        b = self.budget
        with b.lock:
            if self.bytes + n > b.limit:
                raise TooLarge(f"one request would hold over {b.limit / (1 << 20):g} MB (its body, decoded "
                               f"images and answer; {b.option}); send fewer or smaller images per request")
            if b.held + n > b.limit:
                raise QueueFull(f"the requests in flight fill the memory budget of {b.limit / (1 << 20):g} MB")
            b.held += n
            self.bytes += n

    def release(self) -> None:
        b = self.budget
        with b.lock:
            self.holders -= 1
            if self.holders <= 0 and not self.released:
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
