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
    memory_budget_mb: Annotated[float, typer.Option(help="bodies, decoded images and answers held at once "
                                                         "across requests (503 when full)")] = 512.0,
    decode_cpu_s: Annotated[float, typer.Option(help="CPU seconds one image's decoding may take (its "
                                                     "worker is killed past it; the image's row fails)")] = 5.0,
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
                                            memory_budget_mb, decode_cpu_s])
        import uvicorn

        from latentad.serve.limits import raise_open_files, server_config

        raise_open_files()
        api = create_app(run, secret, max_upload_mb, engine, max_pixels, bind=host, allow_origins=allow_origin or (),
                         max_request_mb=max_request_mb, max_request_mpix=max_request_mpix,
                         memory_budget_mb=memory_budget_mb, device=device, decode_cpu_s=decode_cpu_s)
        typer.echo(f"serving {api.state.service.detector.name} from {run} on http://{host}:{port}/", err=True)
        try:
            uvicorn.Server(server_config(api, host, port)).run()
        finally:
            api.state.service.close()

    run_safely(go)
