"""The HTTP face of the inspection service (FastAPI): /predict, /calibrate, /calibrate/undo,
/calibrate/feedback, /feedback, /feedback/clear, /health, /metrics and the operator page at /.

Refusals are one line in `{"detail": ...}`: 421 for a Host that is not this service, 403 for a
cross-origin write, 401 without the bearer token (everything but /health and the page, which is
static and holds no data: it asks for the token and sends it with each call), 408 for a body that
arrives too slowly, 413 for a body, a file, the pixels or the held bytes of a request over its
limit, 400 for a bad parameter (a write without its product on a multi-class run among them), 503
when the work slots, the queue or the memory budget are full, 507 when the feedback store is.
A file that is not an accepted image, is truncated, over a structural cap or over its decode CPU
time fails its own row (`error`, naming it); a request all of whose files fail is a 400. A failure
of ours is a 500 with a request id; the details go to the log, not to the client. No answer ever
names a path on the server: uploads are bytes, decoded in worker processes.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from latentad.serve.decoder import Ticket
from latentad.serve.feedback import FeedbackFull
from latentad.serve.guard import Guard
from latentad.serve.limits import MAX_WORKING, WORK_WAIT_S
from latentad.serve.service import (
    DECODE_SLOTS,
    DEFAULT_BUDGET_MB,
    DEFAULT_DECODE_CPU_S,
    DEFAULT_MAX_PIXELS,
    DEFAULT_REQUEST_MPIX,
    Service,
    Upload,
)
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
    """Result rows in upload order; an image that could not be decoded or scored gets its own error row
    (a 400 for the request when every image failed, a 500 when the first failure was ours)."""
    rows, ours = [], []
    for name, r in zip(names, results, strict=True):
        if isinstance(r, LatentADError):
            r = ItemFailed(r)
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


async def field(request: Request, name: str) -> str | None:
    """A parameter from the query string or, failing that, the form (None when absent or empty)."""
    value = request.query_params.get(name)
    if value is None and request.headers.get("content-type", "").startswith(("multipart/form-data",
                                                                             "application/x-www-form-urlencoded")):
        value = (await request.form()).get(name)
    return value if isinstance(value, str) and value != "" else None


async def disconnected(request: Request) -> None:
    """Returns when the client has gone away (the body has been read by then)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(model_dir: Path, token: str | None = None, max_upload_mb: float = 20.0, engine: str = "auto",
               max_pixels: int = DEFAULT_MAX_PIXELS, max_wait_s: float = 0.01, bind: str = "127.0.0.1",
               allow_origins: Iterable[str] = (), max_request_mb: float = DEFAULT_REQUEST_MB,
               max_request_mpix: float = DEFAULT_REQUEST_MPIX, memory_budget_mb: float = DEFAULT_BUDGET_MB,
               device: str | None = None, decode_cpu_s: float = DEFAULT_DECODE_CPU_S) -> FastAPI:
    service = Service(model_dir, engine, max_pixels, max_wait_s, max_request_mpix, memory_budget_mb, device,
                      decode_cpu_s)
    telemetry = Telemetry()
    telemetry.threshold.set(service.calibration.image_threshold)
    limit = int(max_upload_mb * (1 << 20))
    app = FastAPI(title="latentad inspection service", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.add_middleware(Guard, telemetry=telemetry, bind=bind, token=token, allow_origins=allow_origins,
                       max_body=int(max_request_mb * (1 << 20)), budget=service.budget)
    reading = asyncio.Semaphore(DECODE_SLOTS)  # files held as bytes while decoding, across requests
    working = asyncio.Semaphore(MAX_WORKING)  # requests being decoded or scored (not their connections)

    async def read_uploads(files: list[UploadFile], overlays: bool, hold, tickets: list[Ticket],
                           keep: bool = False) -> list[tuple[str, Upload | LatentADError, bytes | None]]:
        """Each file decoded: (name, its upload or why it failed, its bytes when `keep`)."""
        if len(files) > MAX_FILES:
            raise TooLarge(f"{len(files)} files in one request, more than {MAX_FILES}")
        pixels, out = service.pixel_count(), []
        for i, f in enumerate(files):
            name = Path(f.filename or f"file{i}").name  # a label only: never opened on the server
            if f.size is not None and f.size > limit:
                raise TooLarge(f"{name}: {f.size / (1 << 20):.1f} MB is over the limit of {max_upload_mb:g} MB "
                               "(--max-upload-mb)")
            async with reading:
                data = await f.read(limit + 1)
                if len(data) > limit:
                    raise TooLarge(f"{name}: over the limit of {max_upload_mb:g} MB (--max-upload-mb)")
                tickets.append(Ticket())
                try:
                    up = await run_in_threadpool(service.prepare, name, data, overlays, pixels, hold, tickets[-1])
                except LatentADError as exc:  # this file fails its own row
                    up = exc
            await f.close()
            if keep:
                hold.add(len(data))
            out.append((name, up, data if keep else None))
        return out

    async def scored(uploads: list, hold) -> list[dict]:
        """Rows for the decoded uploads (scored on the model thread) and the failed ones, in order."""
        good = [u for _, u, _ in uploads if isinstance(u, Upload)]
        results = iter(await queued(lambda done: service.predict(good, on_done=done), hold) if good else [])
        return rows_of([u if not isinstance(u, Upload) else next(results) for _, u, _ in uploads],
                       [n for n, _, _ in uploads])

    async def queued(submit, hold):
        """Hand work to the model thread; the request's memory stays held until it has left the queue."""
        share = hold.share()
        try:
            future = submit(share.release)
        except BaseException:
            share.release()
            raise
        return await asyncio.wrap_future(future)

    async def run_work(request: Request, work, hold, tickets: list[Ticket]):
        """`work` in a work slot, stopped (its decodes killed) when the client goes away: None then."""
        try:
            async with asyncio.timeout(WORK_WAIT_S):
                await working.acquire()
        except TimeoutError:
            raise QueueFull(f"all {MAX_WORKING} work slots stayed busy for {WORK_WAIT_S:g} s") from None
        try:
            task, gone = asyncio.ensure_future(work(hold, tickets)), asyncio.ensure_future(disconnected(request))
            try:
                await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                gone.cancel()
            if not task.done():
                for t in tickets:
                    t.cancel()
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                return None
            return task.result()
        finally:
            working.release()

    async def answer(request: Request, work, where: str) -> Response:
        hold, tickets = request.state.hold, []
        try:
            result = await run_work(request, work, hold, tickets)
            if result is None:
                telemetry.errors.labels("client_gone").inc()
                return Response(status_code=499)  # nobody is listening
            response = JSONResponse(result)
            hold.add(len(response.body))  # held until it has been sent (the guard releases it)
            return response
        except TooLarge as exc:
            telemetry.errors.labels("too_large").inc()
            return refusal(413, str(exc))
        except QueueFull as exc:
            telemetry.errors.labels("queue_full").inc()
            return refusal(503, f"busy: {exc}; retry later", {"Retry-After": "1"})
        except Failed as exc:
            telemetry.errors.labels("internal" if exc.status == 500 else "bad_request").inc()
            return refusal(exc.status, str(exc))
        except FeedbackFull as exc:
            telemetry.errors.labels("feedback_full").inc()
            return refusal(507, str(exc))
        except LatentADError as exc:
            telemetry.errors.labels("bad_request").inc()
            return refusal(400, str(exc))
        except Exception as exc:  # the service goes on; the client gets a request id, the log the rest
            telemetry.errors.labels("internal").inc()
            return refusal(500, f"internal error (request id {internal(exc, where)})")

    def count(rows: list[dict]) -> None:
        scored_rows = [r for r in rows if "error" not in r]
        telemetry.images.inc(len(scored_rows))
        telemetry.anomalies.inc(sum(r["is_anomalous"] for r in scored_rows))

    def set_threshold(key: str | None, result: dict) -> None:
        if key is None:
            telemetry.threshold.set(result["threshold"])

    @app.post("/predict")
    async def predict(request: Request, files: Annotated[list[UploadFile], File()]) -> Response:
        async def work(hold, tickets):
            overlays = request.query_params.get("map") == "png"
            product = request.query_params.get("product")  # a multi-class run: whose threshold applies
            if product is not None:
                service.calibrations.key(product, "predict")
            masks = request.query_params.get("masks", "regions")
            if masks not in MASK_CHOICES:
                raise ConfigError(f"masks={masks!r}: expected one of {', '.join(MASK_CHOICES)}")
            uploads = await read_uploads(files, overlays, hold, tickets)
            for _, u, _ in uploads:
                if isinstance(u, Upload):
                    u.product, u.masks = product, masks
            rows = await scored(uploads, hold)
            count(rows)
            return {"results": rows}

        return await answer(request, work, "/predict")

    @app.post("/calibrate")
    async def calibrate(request: Request, files: Annotated[list[UploadFile], File()],
                        target_fpr: Annotated[str | None, Form()] = None) -> Response:
        async def work(hold, tickets):
            key = service.calibrations.key(await field(request, "product"), "calibrate")
            current = service.calibrations.get(key)
            try:
                fpr = float(target_fpr) if target_fpr not in (None, "") else current.target_fpr
            except ValueError:
                raise ConfigError(f"target_fpr {target_fpr!r}: not a number") from None
            service.check_calibration(len(files), fpr)
            uploads = await read_uploads(files, False, hold, tickets)
            bad = [u for _, u, _ in uploads if not isinstance(u, Upload)]
            if bad:  # a calibration is from good images only: every one must be usable
                raise bad[0]
            good = [u for _, u, _ in uploads]
            result = await queued(lambda done: service.calibrate(good, fpr, key, on_done=done), hold)
            set_threshold(key, result)
            return result

        return await answer(request, work, "/calibrate")

    @app.post("/feedback")
    async def feedback(request: Request, files: Annotated[list[UploadFile], File()]) -> Response:
        """Parts an operator marks good (false alarms): scored, and kept with their images and product
        when the model flagged them."""
        async def work(hold, tickets):
            product = request.query_params.get("product")
            if product is not None:
                service.calibrations.key(product, "feedback")
            uploads = await read_uploads(files, False, hold, tickets, keep=True)
            for _, u, _ in uploads:
                if isinstance(u, Upload):
                    u.product, u.masks = product, "none"
            rows = await scored(uploads, hold)
            out = [await keep_row(name, data, row) for (name, _, data), row in zip(uploads, rows, strict=True)]
            return {"kept": sum(r["kept"] for r in out), "total": len(service.feedback.entries()), "results": out}

        return await answer(request, work, "/feedback")

    async def keep_row(name: str, data: bytes, row: dict) -> dict:
        if "error" in row:
            return {"filename": name, "kept": False, "reason": row["error"]}
        if row.get("routed") == "unknown":
            return {"filename": name, "kept": False, "reason": "routed to no product: no threshold to correct"}
        if not row["is_anomalous"]:
            return {"filename": name, "kept": False, "reason": f"not flagged (score {row['score']:.6g} is at or "
                                                               f"below the threshold {row['threshold']:.6g}): "
                                                               "nothing to correct"}
        added = await run_in_threadpool(service.feedback.keep, name, data, row["score"], row.get("category"),
                                        row["threshold"])
        return {"filename": name, "kept": added, **({} if added else {"reason": "already kept"})}

    @app.post("/calibrate/feedback")
    async def calibrate_feedback(request: Request) -> Response:
        product, force = await field(request, "product"), await field(request, "force")

        async def work(hold, tickets):
            key = service.calibrations.key(product, "calibrate/feedback")
            result = await run_in_threadpool(service.recalibrate_with_feedback, key, force in ("1", "true", "yes"))
            set_threshold(key, result)
            return result

        return await answer(request, work, "/calibrate/feedback")

    @app.post("/calibrate/undo")
    async def undo(request: Request) -> Response:
        product = await field(request, "product")

        async def work(hold, tickets):
            key = service.calibrations.key(product, "calibrate/undo")
            result = await run_in_threadpool(service.undo, key)
            set_threshold(key, result)
            return result

        return await answer(request, work, "/calibrate/undo")

    @app.post("/feedback/clear")
    async def clear_feedback(request: Request) -> Response:
        product = await field(request, "product")

        async def work(hold, tickets):
            if product is not None:
                service.calibrations.key(product, "feedback/clear")
            return {"removed": await run_in_threadpool(service.feedback.clear, product),
                    "total": len(service.feedback.entries())}

        return await answer(request, work, "/feedback/clear")

    @app.get("/health")
    async def health() -> dict:  # no work slot: it answers while every slot is busy
        return service.health()

    @app.get("/metrics")
    async def metrics() -> Response:
        telemetry.drift(service.watches.summary())
        return Response(telemetry.text(), media_type="text/plain; version=0.0.4")

    page = resources.files("latentad.serve").joinpath("templates/operator.html").read_text()

    @app.get("/")
    async def operator_page() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/favicon.ico")
    async def favicon() -> Response:
        return Response(status_code=204)  # browsers ask; nothing to send

    return app
