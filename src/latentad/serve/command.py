"""`latentad serve`: the command that starts the inspection service (its options checked first)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from latentad.cli_support import DeviceOpt, EngineOpt, run_safely


def serve(
    run: Annotated[Path, typer.Option(help="run folder written by fit, or an export folder")],
    host: Annotated[str, typer.Option(help="address to bind (loopback unless told otherwise; any other "
                                           "address needs a token)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    token: Annotated[str | None, typer.Option(help="require 'Authorization: Bearer TOKEN' on every request but "
                                                   "/health and the page; prefer LATENTAD_TOKEN or --token-file "
                                                   "(a flag shows in the process list)",
                                              envvar="LATENTAD_TOKEN")] = None,
    token_file: Annotated[Path | None, typer.Option(help="file whose first line is the token")] = None,
    allow_origin: Annotated[list[str] | None, typer.Option(help="extra browser origin allowed to write "
                                                                "(e.g. https://line.example:443); repeatable")] = None,
    max_upload_mb: Annotated[float, typer.Option(help="largest uploaded file accepted (413 above)")] = 20.0,
    max_request_mb: Annotated[float, typer.Option(help="largest request body, counted while it streams "
                                                       "(413 above)")] = 128.0,
    max_pixels: Annotated[int, typer.Option(help="largest image accepted, in pixels (400 above: "
                                                 "decompression bombs)")] = 40_000_000,
    max_request_mpix: Annotated[float, typer.Option(help="pixels one request may have decoded, in "
                                                         "megapixels (413 above)")] = 400.0,
    memory_budget_mb: Annotated[float, typer.Option(help="decoded images held at once across requests "
                                                         "(503 when full)")] = 1024.0,
    engine: EngineOpt = "auto",
    device: DeviceOpt = "auto",
) -> None:
    """Score images over HTTP (POST /predict, /calibrate), with an operator page at /."""

    def go():
        from latentad.serve.app import create_app  # first: without the `serve` extra, the line that names it
        from latentad.serve.options import serve_token, validate_origins, validate_serve

        secret = serve_token(token, token_file)
        validate_origins(allow_origin or [])
        validate_serve(host, port, secret, [max_upload_mb, max_request_mb, max_pixels, max_request_mpix,
                                            memory_budget_mb])
        import uvicorn

        api = create_app(run, secret, max_upload_mb, engine, max_pixels, bind=host, allow_origins=allow_origin or (),
                         max_request_mb=max_request_mb, max_request_mpix=max_request_mpix,
                         memory_budget_mb=memory_budget_mb, device=device)
        typer.echo(f"serving {api.state.service.detector.name} from {run} on http://{host}:{port}/", err=True)
        try:
            uvicorn.run(api, host=host, port=port, log_level="warning", limit_concurrency=128)
        finally:
            api.state.service.close()

    run_safely(go)
