"""The HTTP face of the inspection service (FastAPI): /predict, /calibrate, /calibrate/undo, /health,
/metrics and the operator page at /.

Refusals are one line in `{"detail": ...}`: 401 without the bearer token (everything but /health and
the page, which is static and holds no data: it asks for the token and sends it with each call),
413 for a file over the upload limit (and, unread, for a body too long to hold 256 such files), 400 for a file
that is not an image, is truncated or is a decompression bomb (named), 503 when the queue is full.
No request ever names a path on the server: uploads are bytes, decoded in memory.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from importlib import resources
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from latentad.errors import ConfigError, LatentADError
from latentad.serve.batcher import QueueFull
from latentad.serve.service import DEFAULT_MAX_PIXELS, Service, Upload
from latentad.serve.telemetry import Telemetry

OPEN_PATHS = ("/health", "/", "/favicon.ico")
KNOWN = {"/predict", "/calibrate", "/calibrate/undo", "/health", "/metrics", "/", "/favicon.ico"}
MAX_FILES = 256  # files in one request
DRAIN_CAP = 64 << 20  # bytes of a refused body read (and dropped) so the client can read its answer


class TooLarge(Exception):
    """The uploads of one request add up to more than the limit (HTTP 413)."""


def refusal(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def create_app(model_dir: Path, token: str | None = None, max_upload_mb: float = 20.0, engine: str = "auto",
               max_pixels: int = DEFAULT_MAX_PIXELS, max_wait_s: float = 0.01) -> FastAPI:
    service = Service(model_dir, engine, max_pixels, max_wait_s)
    telemetry = Telemetry()
    telemetry.threshold.set(service.calibration.image_threshold)
    limit = int(max_upload_mb * (1 << 20))
    app = FastAPI(title="latentad inspection service", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    async def drain(request: Request) -> None:
        seen = 0
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > DRAIN_CAP:
                break

    @app.middleware("http")
    async def guard(request: Request, call_next):
        t0 = time.perf_counter()
        path = request.url.path
        response = None
        if token and path not in OPEN_PATHS:
            got = request.headers.get("authorization", "")
            if not hmac.compare_digest(got.encode(), f"Bearer {token}".encode()):
                telemetry.errors.labels("unauthorized").inc()
                await drain(request)
                response = refusal(401, "missing or wrong bearer token (Authorization: Bearer TOKEN)",
                                   {"WWW-Authenticate": "Bearer"})
        if response is None:  # a body that cannot hold MAX_FILES files within the limit: refused unread
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > limit * MAX_FILES:
                telemetry.errors.labels("too_large").inc()
                await drain(request)
                response = refusal(413, f"request of {int(length) / (1 << 20):.1f} MB is over {MAX_FILES} files of "
                                        f"{max_upload_mb:g} MB (--max-upload-mb)")
        if response is None:
            response = await call_next(request)
        telemetry.observe(path if path in KNOWN else "other", response.status_code, time.perf_counter() - t0)
        return response

    async def read_uploads(files: list[UploadFile], overlays: bool) -> list[Upload]:
        if len(files) > MAX_FILES:
            raise TooLarge(f"{len(files)} files in one request, more than {MAX_FILES}")
        uploads = []
        for i, f in enumerate(files):
            name = Path(f.filename or f"file{i}").name  # a label only: never opened on the server
            if f.size is not None and f.size > limit:
                raise TooLarge(f"{name}: {f.size / (1 << 20):.1f} MB is over the limit of {max_upload_mb:g} MB "
                               "(--max-upload-mb)")
            data = await f.read(limit + 1)
            if len(data) > limit:
                raise TooLarge(f"{name}: over the limit of {max_upload_mb:g} MB (--max-upload-mb)")
            image = await run_in_threadpool(service.decode, name, data)
            uploads.append(Upload(name, image, overlays))
        return uploads

    async def answer(work) -> Response:
        try:
            return JSONResponse(await work())
        except TooLarge as exc:
            telemetry.errors.labels("too_large").inc()
            return refusal(413, str(exc))
        except QueueFull as exc:
            telemetry.errors.labels("queue_full").inc()
            return refusal(503, f"busy: {exc}; retry later", {"Retry-After": "1"})
        except LatentADError as exc:
            telemetry.errors.labels("bad_request").inc()
            return refusal(400, str(exc))
        except Exception as exc:  # the service goes on; the client gets one line
            telemetry.errors.labels("internal").inc()
            return refusal(500, f"internal error: {type(exc).__name__}: {exc}")

    @app.post("/predict")
    async def predict(request: Request, files: Annotated[list[UploadFile], File()]) -> Response:
        async def work():
            overlays = request.query_params.get("map") == "png"
            uploads = await read_uploads(files, overlays)
            results = await asyncio.wrap_future(service.predict(uploads))
            telemetry.images.inc(len(results))
            telemetry.anomalies.inc(sum(r["is_anomalous"] for r in results))
            return {"results": results}

        return await answer(work)

    @app.post("/calibrate")
    async def calibrate(files: Annotated[list[UploadFile], File()],
                        target_fpr: Annotated[str | None, Form()] = None) -> Response:
        async def work():
            try:
                fpr = float(target_fpr) if target_fpr not in (None, "") else service.calibration.target_fpr
            except ValueError:
                raise ConfigError(f"target_fpr {target_fpr!r}: not a number") from None
            uploads = await read_uploads(files, False)
            result = await asyncio.wrap_future(service.calibrate(uploads, fpr))
            telemetry.threshold.set(result["threshold"])
            return result

        return await answer(work)

    @app.post("/calibrate/undo")
    async def undo() -> Response:
        async def work():
            result = service.undo()
            telemetry.threshold.set(result["threshold"])
            return result

        return await answer(work)

    @app.get("/health")
    async def health() -> dict:
        return service.health()

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(telemetry.text(), media_type="text/plain; version=0.0.4")

    page = resources.files("latentad.serve").joinpath("templates/operator.html").read_text()

    @app.get("/")
    async def operator_page() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/favicon.ico")
    async def favicon() -> Response:
        return Response(status_code=204)  # browsers ask; nothing to send

    return app
