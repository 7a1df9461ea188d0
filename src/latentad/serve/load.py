"""A load generator for the service: N clients posting images for T seconds, each answer checked.

Used by the bounded load test and by `benchmarks/serve_load.py`. A share of the uploads can be
corrupt (truncated files): each must be refused with 400, each good one scored (with the score
`predict` gave the same file, when those scores are given); nothing lost.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field

import numpy as np


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body of `files` under the field name `files`, and its content type."""
    b = uuid.uuid4().hex
    parts = []
    for name, data in files:
        parts.append(f'--{b}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{b}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={b}"


def post(url: str, files: list[tuple[str, bytes]], token: str | None = None, timeout: float = 120.0
         ) -> tuple[int, bytes]:
    body, ctype = multipart(files)
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": ctype})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class LoadReport:
    clients: int
    seconds: float
    good_sent: int = 0
    good_scored: int = 0
    corrupt_sent: int = 0
    corrupt_refused: int = 0
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return self.good_sent + self.corrupt_sent

    def summary(self) -> dict:
        lat = np.array(self.latencies) if self.latencies else np.zeros(1)
        return {"clients": self.clients, "seconds": round(self.seconds, 2), "requests": self.requests,
                "requests_per_s": round(self.requests / self.seconds, 2),
                "images_per_s": round(self.good_scored / self.seconds, 2),
                "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 1),
                "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 1),
                "good_sent": self.good_sent, "good_scored": self.good_scored, "corrupt_sent": self.corrupt_sent,
                "corrupt_refused": self.corrupt_refused, "errors": len(self.failures)}


def same_score(got: float, want: float | None) -> bool:
    return want is None or abs(got - want) <= 1e-4 * max(abs(want), 1e-6)


def run_load(base: str, images: list[tuple[str, bytes]], clients: int, seconds: float, token: str | None = None,
             corrupt_share: float = 0.0, seed: int = 0, expected: dict[str, float] | None = None,
             query: str = "") -> LoadReport:
    """Each client posts one image per request, drawn in turn from `images` (a share truncated to a
    third of its bytes), until `seconds` have passed; every answer is checked, scores against
    `expected` (name -> score) when given. `query` is appended to /predict (e.g. "masks=png")."""
    expected = expected or {}
    report = LoadReport(clients, seconds)
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        rng = np.random.default_rng(seed + k)
        i = k
        while time.monotonic() < stop:
            name, data = images[i % len(images)]
            i += clients
            bad = rng.random() < corrupt_share
            if bad:
                name, data = f"corrupt_{name}", data[: len(data) // 3]
            t0 = time.perf_counter()
            try:
                status, out = post(base + "/predict" + (f"?{query}" if query else ""), [(name, data)], token)
            except OSError as exc:
                status, out = -1, str(exc).encode()
            dt = time.perf_counter() - t0
            with lock:
                report.latencies.append(dt)
                if bad:
                    report.corrupt_sent += 1
                    if status == 400 and name in json.loads(out or b"{}").get("detail", ""):
                        report.corrupt_refused += 1
                    else:
                        report.failures.append(f"{name}: HTTP {status} {out[:100]!r}")
                else:
                    report.good_sent += 1
                    row = json.loads(out)["results"][0] if status == 200 else {}
                    ok = row.get("filename") == name and same_score(row.get("score", float("nan")),
                                                                     expected.get(name))
                    if ok:
                        report.good_scored += 1
                    else:
                        report.failures.append(f"{name}: HTTP {status} {out[:100]!r}")

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report.seconds = time.monotonic() - t0
    return report
