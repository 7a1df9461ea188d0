"""The `latentad` command line: a small, stable contract that scripts rely on.

    latentad fit --method NAME --data DIR --out RUN [--preset P] [--seed N] [--epochs E] [--resume]
    latentad evaluate --run RUN --data DIR [--json] [--eval-size S]
    latentad predict --run RUN --out OUT [--no-recursive] PATH...
    latentad calibrate --run RUN [--target-fpr F] [--no-recursive] PATH...
    latentad list
    latentad demo [--out DIR]

Errors in the user's input end the command with one line on stderr naming the file and the
problem, and exit code 2; no traceback (set LATENTAD_DEBUG=1 to see one).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="latentad: unsupervised image anomaly detection (fit on normal images only).")

JSON_KEYS = ["image_auroc", "pixel_auroc", "aupro", "aupimo", "f1_max", "n_images", "seconds"]


def _err(message: str) -> None:
    typer.echo(f"latentad: error: {message}", err=True)


class _EchoHandler(logging.Handler):
    """The library's log lines (e.g. hidden files skipped) on stderr as `latentad: ...`."""

    def emit(self, record: logging.LogRecord) -> None:
        typer.echo(f"latentad: {record.getMessage()}", err=True)


def _log_to_stderr() -> None:
    logger = logging.getLogger("latentad")
    if not any(isinstance(h, _EchoHandler) for h in logger.handlers):
        logger.addHandler(_EchoHandler())
    logger.setLevel(logging.INFO)


def _run_safely(func, *args, **kwargs):
    """Turn user-input errors into one line and exit 2; unexpected errors into one line and exit 1."""
    from latentad.errors import LatentADError

    _log_to_stderr()

    if os.environ.get("LATENTAD_DEBUG"):
        return func(*args, **kwargs)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda msg, *a, **k: typer.echo(f"latentad: warning: {msg}", err=True)
            return func(*args, **kwargs)
    except LatentADError as exc:
        _err(str(exc))
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        _err("interrupted")
        raise typer.Exit(130) from None
    except MemoryError:
        _err("out of memory (try a smaller --option batch_size=... or image_size=...)")
        raise typer.Exit(1) from None
    except Exception as exc:  # a bug: still one line, with the way to get the traceback
        _err(f"internal error: {type(exc).__name__}: {exc} (rerun with LATENTAD_DEBUG=1 for a traceback)")
        raise typer.Exit(1) from None


DeviceOpt = Annotated[str, typer.Option(help="auto (a GPU when torch sees one), cpu, cuda, cuda:N or mps")]
PrecisionOpt = Annotated[str, typer.Option(help="32, 16-mixed (CUDA) or bf16-mixed")]
FormatOpt = Annotated[str, typer.Option("--format", help="auto, mvtec, folder, mnist, cifar10, elpv, ucsd, "
                                                         "synthetic")]
WorkersOpt = Annotated[int | None, typer.Option(help="threads decoding images while the model runs (default: "
                                                   "min(4, cores); 0: in the main thread)")]
EngineOpt = Annotated[str, typer.Option(help="auto (torch for a run folder, onnxruntime for an export folder), "
                                              "torch, onnxruntime or openvino")]
DataOpt = Annotated[list[str] | None, typer.Option("--data-option", "-d",
                                                   help="data set option key=value (e.g. normal_class=3)")]


@app.command()
def fit(
    method: Annotated[str, typer.Option(help="method name (see `latentad list`)")],
    data: Annotated[str, typer.Option(help="data folder (MVTec layout by default) or 'elpv'")],
    out: Annotated[Path, typer.Option(help="run folder to write")],
    preset: Annotated[str | None, typer.Option(help="named preset of the method")] = None,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same scores)")] = 0,
    epochs: Annotated[int | None, typer.Option(help="training epochs (trainable methods)")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="method option key=value")] = None,
    fmt: FormatOpt = "auto",
    data_option: DataOpt = None,
    resume: Annotated[bool, typer.Option(help="continue from the run's last checkpoint")] = False,
    force: Annotated[bool, typer.Option(help="overwrite a run folder that holds a model")] = False,
    calibration_fraction: Annotated[float, typer.Option(help="share of normal train images held out to "
                                                             "set the threshold")] = 0.1,
    target_fpr: Annotated[float, typer.Option(help="false-positive rate the threshold aims at")] = 0.01,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "32",
    tune: Annotated[Path | None, typer.Option(help="TOML file with a [tune] table: candidate options chosen "
                                                   "on a validation split of the normal training images "
                                                   "with synthetic defects")] = None,
) -> None:
    """Train a detector on the normal images of DATA and save it to OUT."""
    from latentad.config import coerce_options
    from latentad.data.pipeline import set_decode_workers
    from latentad.detectors.base import get_method
    from latentad.runs import fit_run, parse_options

    def go():
        set_decode_workers(workers)
        options = coerce_options(get_method(method).Config, parse_options(option))
        if epochs is not None:
            options["epochs"] = epochs
        from latentad.tuning import read_tune_file, summary_lines

        tune_table = read_tune_file(tune) if tune is not None else None
        summary = fit_run(out, method, data, fmt, parse_options(data_option), preset, options, seed, resume,
                          force, calibration_fraction, target_fpr, device, precision, tune=tune_table)
        if tune_table is not None:
            record = json.loads((out / "tuning.json").read_text())
            typer.echo("\n".join(summary_lines(record)) + f"\ntuned: {json.dumps(record['chosen'])}")
        typer.echo(f"fitted {method} on {summary['n_train']} images in {summary['fit_seconds']:.1f} s -> {out}")

    _run_safely(go)


@app.command()
def evaluate(
    run: Annotated[Path, typer.Option(help="run folder written by fit")],
    data: Annotated[str | None, typer.Option(help="data folder (default: the one fitted on)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object of metrics")] = False,
    fmt: Annotated[str | None, typer.Option("--format", help="data format (default: as fitted)")] = None,
    data_option: DataOpt = None,
    eval_size: Annotated[int | None, typer.Option(help="side (px) maps and masks are resized to for the pixel "
                                                       "metrics (default: the detector's input size)")] = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "32",
) -> None:
    """Score DATA's test split; write RUN/metrics.json, scores.csv, heat maps and report.html."""
    from latentad.data.pipeline import set_decode_workers
    from latentad.runs import evaluate_run, parse_options

    def go():
        set_decode_workers(workers)
        opts = parse_options(data_option) if data_option else None
        result = evaluate_run(run, data, fmt, opts, eval_size=eval_size, device=device, precision=precision)
        m = result.metrics
        if as_json:
            typer.echo(json.dumps({k: m.get(k) for k in JSON_KEYS}))
        else:
            shown = "  ".join(f"{k} {m[k]:.4f}" if isinstance(m.get(k), float) else f"{k} {m.get(k)}"
                              for k in JSON_KEYS)
            typer.echo(shown)
            typer.echo(f"report: {run / 'report.html'}")

    _run_safely(go)


@app.command()
def predict(
    run: Annotated[Path, typer.Option(help="run folder written by fit, or an export folder")],
    out: Annotated[Path, typer.Option(help="folder for scores.csv and heat-map overlays")],
    paths: Annotated[list[Path], typer.Argument(help="image files or folders of images")],
    recursive: Annotated[bool, typer.Option(help="descend into sub-folders of the folders given")] = True,
    overlays: Annotated[str, typer.Option(help="heat-map PNGs for all images, only the anomalous ones, or "
                                               "none (scores only)")] = "all",
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "32",
    engine: EngineOpt = "auto",
) -> None:
    """Score images: OUT/scores.csv (path, score, is_anomalous) and one overlay PNG per image."""
    from latentad.data.pipeline import set_decode_workers
    from latentad.predict import predict_paths

    def go():
        set_decode_workers(workers)
        rows = predict_paths(run, out, paths, recursive, device, precision, overlays, engine)
        n_anom = sum(r["is_anomalous"] for r in rows)
        typer.echo(f"scored {len(rows)} images ({n_anom} anomalous at the run's threshold) -> {out}")

    _run_safely(go)


@app.command("calibrate")
def calibrate_cmd(
    run: Annotated[Path, typer.Option(help="run folder written by fit, or an export folder")],
    paths: Annotated[list[Path], typer.Argument(help="NORMAL image files or folders")],
    target_fpr: Annotated[float, typer.Option(help="false-positive rate to aim at")] = 0.01,
    recursive: Annotated[bool, typer.Option(help="descend into sub-folders of the folders given")] = True,
    device: DeviceOpt = "auto",
    engine: EngineOpt = "auto",
) -> None:
    """Recompute the threshold of a run or an export folder from normal images only; the model is not touched."""
    from latentad.errors import ConfigError
    from latentad.predict import recalibrate

    def go():
        if not 0.0 < target_fpr < 1.0:
            raise ConfigError(f"--target-fpr {target_fpr}: must be in (0, 1)")
        cal = recalibrate(run, paths, target_fpr, recursive, device, engine)
        typer.echo(f"threshold {cal.image_threshold:.6g} at target FPR {target_fpr} from {cal.n_images} images "
                   f"(the smallest FPR {cal.n_images} images support: {cal.min_fpr:.3g})")

    _run_safely(go)


@app.command("export")
def export_cmd(
    run: Annotated[Path, typer.Option(help="run folder written by fit")],
    out: Annotated[Path, typer.Option(help="folder for model.onnx, calibration.json and export.json")],
    fmt: Annotated[str, typer.Option("--format", help="onnx | openvino (needs the openvino package)")] = "onnx",
) -> None:
    """Export the run's scoring graph (raw scores and maps); the calibration stays a file beside it."""
    from latentad.export.graph import export_detector
    from latentad.runs import load_run

    def go():
        _, detector, _ = load_run(run)
        meta = export_detector(detector, run / "calibration.json", out, fmt, source=str(run))
        h, w = detector.input_shape
        typer.echo(f"exported {detector.name} ({fmt}, input (N,{detector.config.channels},{h},{w}), outputs "
                   f"{', '.join(meta['outputs'])}; matches torch to {meta['checked']['max_relative_difference']:.1e}) "
                   f"-> {out}")

    _run_safely(go)


@app.command()
def analyze(
    run: Annotated[list[Path], typer.Option("--run", help="fitted run folder (repeat for several runs)")],
    out: Annotated[Path, typer.Option(help="folder for analysis.json, analysis.html and figures/")],
    data: Annotated[str | None, typer.Option(help="data set to analyse on (default: the first run's)")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="data format (default: as fitted)")] = None,
    data_option: DataOpt = None,
    limit: Annotated[int | None, typer.Option(help="at most this many images per part (train, held-out, "
                                                   "test), drawn with a seed, every label kept")] = None,
    umap: Annotated[bool, typer.Option(help="add a UMAP projection (when umap-learn is installed)")] = True,
    device: DeviceOpt = "auto",
) -> None:
    """Answer the latent-space questions for each RUN on DATA: how Gaussian, which directions, how many
    dimensions, which level, the codebook, where defects sit, and whether the runs agree."""
    from latentad.analysis import analyze as run_analysis
    from latentad.runs import parse_options

    def go():
        opts = parse_options(data_option) if data_option else None
        result = run_analysis(run, out, data, fmt, opts, limit, device, umap)
        for line in result["findings"]:
            typer.echo(line)
        typer.echo(f"analysis: {out / 'analysis.html'}")

    _run_safely(go)


@app.command()
def benchmark(
    spec: Annotated[Path | None, typer.Argument(help="grid spec (TOML); not with --paper")] = None,
    out: Annotated[Path, typer.Option(help="folder for runs/, results.csv and tables.md")] = Path("runs/benchmark"),
    executor: Annotated[str, typer.Option(help="local (this machine) or dask (a dask.distributed cluster)")] = "local",
    scheduler: Annotated[str | None, typer.Option(help="dask: tcp://host:8786, or local:N to start N workers")] = None,
    workers: Annotated[int | None, typer.Option(help="local: N worker processes with the cores split between "
                                                     "them (default one cell at a time)")] = None,
    paper: Annotated[str | None, typer.Option(help="table1 | table2 | table3 | families: the paper's protocol "
                                                   "instead of a spec")] = None,
    data_root: Annotated[Path | None, typer.Option(help="with --paper: the folder holding the categories")] = None,
    recipe: Annotated[str | None, typer.Option(help="with --paper: paper presets (GPU-sized, the default) or "
                                                    "cpu defaults")] = None,
    seeds: Annotated[str | None, typer.Option(help="with --paper: seeds, e.g. 0,1,2 (default 0)")] = None,
    eval_size: Annotated[int | None, typer.Option(help="with --paper: resolution of the pixel metrics")] = None,
    categories: Annotated[str | None, typer.Option(help="with --paper: only these categories / classes, "
                                                        "e.g. bottle,screw")] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Run a method x data x seed grid (resumable), locally or on Dask; write results.csv and tables.md."""
    from latentad.errors import ConfigError
    from latentad.experiments.benchmark import run_grid
    from latentad.experiments.paper import paper_spec
    from latentad.experiments.spec import load_spec

    def go():
        if (spec is None) == (paper is None):
            raise ConfigError("benchmark: give a SPEC file or --paper TABLE (not both)")
        if paper is not None:
            if data_root is None:
                raise ConfigError("--paper needs --data-root (the folder holding the data sets)")
            try:
                seed_list = [int(s) for s in seeds.split(",")] if seeds else None
            except ValueError:
                raise ConfigError(f"--seeds {seeds}: expected integers separated by commas") from None
            only = [c.strip() for c in categories.split(",")] if categories else None
            grid = paper_spec(paper, data_root, recipe or "paper", seed_list, eval_size, only)
        else:
            if seeds or data_root or eval_size or categories or recipe:
                raise ConfigError("--seeds / --data-root / --eval-size / --categories / --recipe go with --paper; "
                                  "a spec sets them itself")
            grid = load_spec(spec)
        rows = run_grid(grid, out, executor, scheduler, workers, device, paper)
        typer.echo((out / "tables.md").read_text())
        if paper and (out / "paper_table.md").is_file():
            typer.echo((out / "paper_table.md").read_text())
        failed = sum(r["status"] == "failed" for r in rows)
        if failed:
            typer.echo(f"{failed} of {len(rows)} cells failed (errors in results.csv)", err=True)

    _run_safely(go)


@app.command()
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
) -> None:
    """Score images over HTTP (POST /predict, /calibrate), with an operator page at /."""

    def go():
        from latentad.serve.options import serve_token, validate_serve

        secret = serve_token(token, token_file)
        validate_serve(host, port, secret, [max_upload_mb, max_request_mb, max_pixels, max_request_mpix,
                                            memory_budget_mb])
        import uvicorn

        from latentad.serve.app import create_app

        api = create_app(run, secret, max_upload_mb, engine, max_pixels, bind=host, allow_origins=allow_origin or (),
                         max_request_mb=max_request_mb, max_request_mpix=max_request_mpix,
                         memory_budget_mb=memory_budget_mb)
        typer.echo(f"serving {api.state.service.detector.name} from {run} on http://{host}:{port}/", err=True)
        try:
            uvicorn.run(api, host=host, port=port, log_level="warning", limit_concurrency=128)
        finally:
            api.state.service.close()

    _run_safely(go)


@app.command("list")
def list_methods() -> None:
    """Methods, their family and presets."""
    from latentad.detectors.base import available_methods, get_method

    for name in available_methods():
        cls = get_method(name)
        presets = ", ".join(["default", *cls.presets])
        typer.echo(f"{name:16s} {cls.family:15s} presets: {presets}\n{'':16s} {cls.describe()}")
        for preset, note in cls.preset_notes.items():
            typer.echo(f"{'':16s}   {preset}: {note}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="run folder")] = Path("runs/demo"),
    method: Annotated[str, typer.Option(help="method to demonstrate")] = "ae_ssim",
    cell_type: Annotated[str, typer.Option(help="ELPV cell type: mono, poly or all")] = "mono",
    epochs: Annotated[int | None, typer.Option(help="training epochs (trainable methods)")] = None,
) -> None:
    """Train on the ELPV solar cells (shipped by the elpv-dataset package), evaluate, write a report."""
    from latentad.runs import evaluate_run, fit_run

    def go():
        opts = {"cell_type": cell_type, "limit": {"train": 300, "test": 100}}
        options = {"epochs": epochs} if epochs is not None else {}
        preset = "demo" if method in ("ae_ssim", "ae_l2") and epochs is None else None
        fit_run(out, method, "elpv", "elpv", opts, preset, options, 0, False, True, 0.1, 0.01)
        result = evaluate_run(out, None, None, None)
        m = result.metrics
        typer.echo(json.dumps({k: m.get(k) for k in JSON_KEYS}))
        typer.echo(f"report: {(out / 'report.html').resolve()}")

    _run_safely(go)


def main() -> None:
    try:
        app()
    except SystemExit as exc:
        sys.exit(exc.code)


if __name__ == "__main__":
    main()
