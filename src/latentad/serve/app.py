"""The HTTP face of the inspection service (FastAPI): /predict, /calibrate, /calibrate/undo, /health,
/metrics and the operator page at /.

Refusals are one line in `{"detail": ...}`: 421 for a Host that is not this service, 403 for a
cross-origin write, 401 without the bearer token (everything but /health and the page, which is
static and holds no data: it asks for the token and sends it with each call), 413 for a body, a
file, the pixels or the decoded size of a request over its limit, 400 for a file that is not an
image, is truncated or is a decompression bomb (named), 503 when the queue or the memory budget is
full. A failure of ours is a 500 with a request id; the details go to the log, not to the client.
No answer ever names a path on the server: uploads are bytes, decoded in memory.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
import uuid
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Annotated

from latentad.errors import ConfigError, LatentADError
from latentad.extras import missing_extra

try:  # the `serve` extra: without it, one line naming the pip install, not a traceback
    import prometheus_client  # noqa: F401 (serve.telemetry's)
    import uvicorn  # noqa: F401 (what `latentad serve` runs the app in)
    from fastapi import FastAPI, File, Form, Request, UploadFile
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
except ImportError as exc:
    raise missing_extra(exc, "serve", "latentad serve") from None

from latentad.serve.batcher import ItemFailed, QueueFull
from latentad.serve.budget import TooLarge
from latentad.serve.guard import Guard
from latentad.serve.service import DEFAULT_BUDGET_MB, DEFAULT_MAX_PIXELS, DEFAULT_REQUEST_MPIX, Service
from latentad.serve.telemetry import Telemetry

MAX_FILES = 256  # files in one request
MASK_CHOICES = ("none", "regions", "png")  # /predict?masks=: pixel decisions left out, regions, regions + mask PNG
DEFAULT_REQUEST_MB = 128.0  # body of one request
log = logging.getLogger("latentad.serve")


class Failed(Exception):
    """Every image of a request failed; the first failure stands for them (400, or 500 when ours)."""

    def __init__(self, detail: str, status: int) -> None:
        super().__init__(detail)
        self.status = status


def refusal(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def internal(exc: BaseException, where: str) -> str:
    """Log a failure of ours with a fresh request id; the client gets only the id."""
    rid = uuid.uuid4().hex[:12]
    log.error("request %s (%s) failed:\n%s", rid, where, "".join(traceback.format_exception(exc)).rstrip())
    return rid


def rows_of(results: list, names: list[str]) -> list[dict]:
    """Result rows in upload order; an image whose scoring failed gets its own error row."""
    rows, ours = [], []
    for name, r in zip(names, results, strict=True):
        if not isinstance(r, ItemFailed):
            rows.append(r)
            continue
        mine = not isinstance(r.cause, LatentADError)
        ours.append(mine)
        detail = f"internal error (request id {internal(r.cause, name)})" if mine else str(r.cause)
        rows.append({"filename": name, "error": detail})
    if rows and len(ours) == len(rows):
        raise Failed(rows[0]["error"], 500 if ours[0] else 400)
    return rows


def create_app(model_dir: Path, token: str | None = None, max_upload_mb: float = 20.0, engine: str = "auto",
               max_pixels: int = DEFAULT_MAX_PIXELS, max_wait_s: float = 0.01, bind: str = "127.0.0.1",
               allow_origins: Iterable[str] = (), max_request_mb: float = DEFAULT_REQUEST_MB,
               max_request_mpix: float = DEFAULT_REQUEST_MPIX, memory_budget_mb: float = DEFAULT_BUDGET_MB,
               device: str | None = None) -> FastAPI:
    service = Service(model_dir, engine, max_pixels, max_wait_s, max_request_mpix, memory_budget_mb, device)
    telemetry = Telemetry()
    telemetry.threshold.set(service.calibration.image_threshold)
    limit = int(max_upload_mb * (1 << 20))
    app = FastAPI(title="latentad inspection service", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.add_middleware(Guard, telemetry=telemetry, bind=bind, token=token, allow_origins=allow_origins,
                       max_body=int(max_request_mb * (1 << 20)))
    reading = asyncio.Semaphore(2)  # files held as bytes while decoding, across requests

    async def read_uploads(files: list[UploadFile], overlays: bool, hold):
        if len(files) > MAX_FILES:
            raise TooLarge(f"{len(files)} files in one request, more than {MAX_FILES}")
        pixels = service.pixel_count()
        uploads = []
        for i, f in enumerate(files):
            name = Path(f.filename or f"file{i}").name  # a label only: never opened on the server
            if f.size is not None and f.size > limit:
                raise TooLarge(f"{name}: {f.size / (1 << 20):.1f} MB is over the limit of {max_upload_mb:g} MB "
                               "(--max-upload-mb)")
            async with reading:
                data = await f.read(limit + 1)
                if len(data) > limit:
                    raise TooLarge(f"{name}: over the limit of {max_upload_mb:g} MB (--max-upload-mb)")
                uploads.append(await run_in_threadpool(service.prepare, name, data, overlays, pixels, hold))
            await f.close()
        return uploads

    async def answer(work, where: str) -> Response:
        hold = service.budget.hold()
        try:
            return JSONResponse(await work(hold))
        except TooLarge as exc:
            telemetry.errors.labels("too_large").inc()
            return refusal(413, str(exc))
        except QueueFull as exc:
            telemetry.errors.labels("queue_full").inc()
            return refusal(503, f"busy: {exc}; retry later", {"Retry-After": "1"})
        except Failed as exc:
            telemetry.errors.labels("internal" if exc.status == 500 else "bad_request").inc()
            return refusal(exc.status, str(exc))
        except LatentADError as exc:
            telemetry.errors.labels("bad_request").inc()
            return refusal(400, str(exc))
        except Exception as exc:  # the service goes on; the client gets a request id, the log the rest
            telemetry.errors.labels("internal").inc()
            return refusal(500, f"internal error (request id {internal(exc, where)})")
        finally:
            if not hold.submitted:
                hold.release()

    async def queued(future, hold):
        hold.submitted = True
        return await asyncio.wrap_future(future)

    @app.post("/predict")
    async def predict(request: Request, files: Annotated[list[UploadFile], File()]) -> Response:
        async def work(hold):
            overlays = request.query_params.get("map") == "png"
            product = request.query_params.get("product")  # a multi-class run: whose threshold applies
            service.check_product(product)
            masks = request.query_params.get("masks", "regions")
            if masks not in MASK_CHOICES:
                raise ConfigError(f"masks={masks!r}: expected one of {', '.join(MASK_CHOICES)}")
            uploads = await read_uploads(files, overlays, hold)
            for u in uploads:
                u.product, u.masks = product, masks
            results = await queued(service.predict(uploads, on_done=hold.release), hold)
            rows = rows_of(results, [u.name for u in uploads])
            scored = [r for r in rows if "error" not in r]
            telemetry.images.inc(len(scored))
            telemetry.anomalies.inc(sum(r["is_anomalous"] for r in scored))
            return {"results": rows}

        return await answer(work, "/predict")

    @app.post("/calibrate")
    async def calibrate(files: Annotated[list[UploadFile], File()],
                        target_fpr: Annotated[str | None, Form()] = None) -> Response:
        async def work(hold):
            try:
                fpr = float(target_fpr) if target_fpr not in (None, "") else service.calibration.target_fpr
            except ValueError:
                raise ConfigError(f"target_fpr {target_fpr!r}: not a number") from None
            service.check_calibration(len(files), fpr)
            uploads = await read_uploads(files, False, hold)
            result = await queued(service.calibrate(uploads, fpr, on_done=hold.release), hold)
            telemetry.threshold.set(result["threshold"])
            return result

        return await answer(work, "/calibrate")

    @app.post("/feedback")
    async def feedback(files: Annotated[list[UploadFile], File()]) -> Response:
        """Parts an operator marks good (false alarms): scored, then kept with their images."""
        async def work(hold):
            if len(files) > MAX_FILES:
                raise TooLarge(f"{len(files)} files in one request, more than {MAX_FILES}")
            raw = []
            for i, f in enumerate(files):
                data = await f.read(limit + 1)
                if len(data) > limit:
                    raise TooLarge(f"{f.filename}: over the limit of {max_upload_mb:g} MB (--max-upload-mb)")
                raw.append((Path(f.filename or f"file{i}").name, data))
            pixels = service.pixel_count()
            uploads = [await run_in_threadpool(service.prepare, n, d, False, pixels, hold) for n, d in raw]
            results = await queued(service.predict(uploads, on_done=hold.release), hold)
            rows = rows_of(results, [u.name for u in uploads])
            kept = [service.feedback.keep(n, d, r["score"]) for (n, d), r in zip(raw, rows, strict=True)
                    if "error" not in r]
            return {"kept": len(kept), "total": len(service.feedback.entries())}

        return await answer(work, "/feedback")

    @app.post("/calibrate/feedback")
    async def calibrate_feedback() -> Response:
        async def work(hold):
            result = await run_in_threadpool(service.recalibrate_with_feedback)
            telemetry.threshold.set(result["threshold"])
            return result

        return await answer(work, "/calibrate/feedback")

    @app.post("/calibrate/undo")
    async def undo() -> Response:
        async def work(hold):
            result = service.undo()
            telemetry.threshold.set(result["threshold"])
            return result

        return await answer(work, "/calibrate/undo")

    @app.get("/health")
    async def health() -> dict:
        return service.health()

    @app.get("/metrics")
    async def metrics() -> Response:
        telemetry.drift(service.drift.state(service.calibration.score_median, service.calibration.normal_scores))
        return Response(telemetry.text(), media_type="text/plain; version=0.0.4")

    page = resources.files("latentad.serve").joinpath("templates/operator.html").read_text()

    @app.get("/")
    async def operator_page() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/favicon.ico")
    async def favicon() -> Response:
        return Response(status_code=204)  # browsers ask; nothing to send

    return app
