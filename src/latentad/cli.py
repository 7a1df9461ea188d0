"""The `latentad` command line: a small, stable contract that scripts rely on.

    latentad fit --method NAME --data DIR --out RUN [--preset P] [--seed N] [--epochs E] [--resume]
    latentad evaluate --run RUN --data DIR [--json] [--eval-size S]
    latentad predict --run RUN --out OUT [--no-recursive] PATH...
    latentad calibrate --run RUN [--target-fpr F] [--no-recursive] PATH...
    latentad calibrate / export / serve / analyze / benchmark   (see docs/cli.md)
    latentad list
    latentad demo [--out DIR] [--force]

Errors in the user's input end the command with one line on stderr naming the file and the
problem, and exit code 2; no traceback (set LATENTAD_DEBUG=1 to see one).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from latentad.cli_support import DataOpt, DeviceOpt, EngineOpt, FormatOpt, PrecisionOpt, WorkersOpt, run_safely
from latentad.serve.command import serve

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="latentad: unsupervised image anomaly detection (fit on normal images only).")


def _version(value: bool) -> None:
    if value:
        from latentad import __version__

        typer.echo(f"latentad {__version__}")
        raise typer.Exit()




app.command()(serve)


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="print the version and exit")] = False) -> None:
    """latentad: unsupervised image anomaly detection (fit on normal images only)."""

JSON_KEYS = ["image_auroc", "pixel_auroc", "aupro", "aupimo", "f1_max", "at_threshold", "n_images", "seconds"]


@app.command()
def fit(
    ctx: typer.Context,
    method: Annotated[str | None, typer.Option(help="method name (see `latentad list`)")] = None,
    data: Annotated[list[str] | None, typer.Option(help="data folder (MVTec layout by default) or 'elpv'; "
                                                        "repeated: one model for several products")] = None,
    out: Annotated[Path | None, typer.Option(help="run folder to write")] = None,
    preset: Annotated[str | None, typer.Option(help="named preset of the method")] = None,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same scores)")] = 0,
    epochs: Annotated[int | None, typer.Option(help="training epochs (trainable methods)")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="method option key=value")] = None,
    fmt: FormatOpt = "auto",
    data_option: DataOpt = None,
    resume: Annotated[bool, typer.Option(help="continue from the run's last checkpoint")] = False,
    force: Annotated[bool, typer.Option(help="replace a run folder that holds a model (built aside, swapped in "
                                             "when the fit succeeded)")] = False,
    calibration_fraction: Annotated[float, typer.Option(help="share of normal train images held out to "
                                                             "set the threshold")] = 0.1,
    target_fpr: Annotated[float | None, typer.Option(help="false-positive rate the threshold aims at (default "
                                                          "0.01, or the smallest rate the hold-out can back)")] = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "32",
    tune: Annotated[Path | None, typer.Option(help="TOML file with a tune table: candidate options chosen "
                                                   "on a validation split of the normal training images "
                                                   "with synthetic defects")] = None,
    shots: Annotated[int | None, typer.Option(help="few-shot: fit on K normal training images drawn by the seed "
                                                   "(the rest are not read)")] = None,
    budget: Annotated[str | None, typer.Option(help="--method auto: time for the whole search and the final fit "
                                                    "(600, 90s, 10m, 1h; default 10m)")] = None,
    candidates: Annotated[str | None, typer.Option(help="--method auto: the candidates to choose among, "
                                                        "comma-separated (default: the whole portfolio)")] = None,
    fusion: Annotated[str | None, typer.Option(help="--method auto: 'all' (default) fuses every candidate fitted "
                                                    "in the budget, equal weights; 'best' keeps the best by "
                                                    "validation (faster to predict)")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML file of fit's flags (key = value, e.g. method = "
                                                     "\"padim\"); flags given on the command line win")] = None,
) -> None:
    """Train a detector on the normal images of DATA and save it to OUT."""
    flags = {k: val for k, val in locals().items() if k != "ctx"}  # the parameters, before any other name
    from latentad.cli_support import auto_options, fit_config, method_flags, required
    from latentad.config import coerce_options
    from latentad.data.pipeline import set_decode_workers
    from latentad.registry import get_method
    from latentad.runs import fit_run, parse_options

    def go():
        v = fit_config(ctx, config, flags)
        required(v, "method", "data", "out")
        method_flags(v)
        run = Path(v["out"])
        set_decode_workers(v["workers"])
        options = auto_options(v) if v["method"] == "auto" else coerce_options(
            get_method(v["method"]).Config, parse_options(v["option"]))
        if v["epochs"] is not None:
            options["epochs"] = v["epochs"]
        from latentad.tuning import read_tune_file, summary_lines

        tune_table = read_tune_file(Path(v["tune"])) if v["tune"] is not None else None
        data = [v["data"]] if isinstance(v["data"], str) else list(v["data"])  # a --config file gives one
        summary = fit_run(run, v["method"], data[0] if len(data) == 1 else data, v["fmt"],
                          parse_options(v["data_option"]), v["preset"],
                          options, v["seed"], v["resume"], v["force"], v["calibration_fraction"], v["target_fpr"],
                          v["device"], v["precision"], tune=tune_table, shots=v["shots"])
        if tune_table is not None:
            record = json.loads((run / "tuning.json").read_text())
            typer.echo("\n".join(summary_lines(record)) + f"\ntuned: {json.dumps(record['chosen'])}")
        if v["method"] == "auto":
            from latentad.selection.auto import summary_lines as auto_lines

            record = json.loads((run / "auto.json").read_text())
            typer.echo("\n".join(auto_lines(record)) + f"\nauto chose {record['chosen']['name']} "
                       f"({record['seconds']:.0f} s of {record['budget_seconds']:.0f} s)")
            if record.get("budget_limited"):
                typer.echo("latentad: the budget (or the machine's load) left candidates out (budget_limited in "
                           "auto.json); a larger --budget, or --candidates naming those fitted, replays the members")
        typer.echo(f"fitted {v['method']} on {summary['n_train']} images in {summary['fit_seconds']:.1f} s -> {run}")

    run_safely(go)


@app.command()
def evaluate(
    run: Annotated[Path, typer.Option(help="run folder written by fit")],
    data: Annotated[str | None, typer.Option(help="data folder (default: the one fitted on)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object of metrics")] = False,
    fmt: Annotated[str | None, typer.Option("--format", help="data format (default: as fitted)")] = None,
    data_option: DataOpt = None,
    eval_size: Annotated[str | None, typer.Option(help="size maps and masks are resized to for the pixel metrics: "
                                                       "a side (256) or HxW (default: the detector's input size)")
                         ] = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "32",
) -> None:
    """Score DATA's test split; write RUN/metrics.json, scores.csv, heat maps and report.html."""
    from latentad.cli_support import parse_size
    from latentad.data.pipeline import set_decode_workers
    from latentad.runs import evaluate_run, parse_options

    def go():
        set_decode_workers(workers)
        opts = parse_options(data_option) if data_option else None
        size = parse_size(eval_size, "--eval-size")
        result = evaluate_run(run, data, fmt, opts, eval_size=size, device=device, precision=precision)
        m = result.metrics
        if as_json:
            extra = {k: m[k] for k in ("became", "category", "routing_accuracy", "per_category") if k in m}
            typer.echo(json.dumps({k: m.get(k) for k in JSON_KEYS} | extra))
        else:
            shown = "  ".join(f"{k} {m[k]:.4f}" if isinstance(m.get(k), float) else f"{k} {m.get(k)}"
                              for k in JSON_KEYS if k != "at_threshold")
            typer.echo(shown + "  (f1_max: best threshold chosen with the test labels)")
            a = m["at_threshold"]
            typer.echo("at the calibrated threshold {:.6g}: ".format(a["threshold"]) + "  ".join(
                f"{k} {a[k]:.4f}" if a[k] is not None else f"{k} -" for k in ("fpr", "tpr", "precision")))
            typer.echo(f"report: {run / 'report.html'}")

    run_safely(go)


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
    category: Annotated[str | None, typer.Option(help="multi-class run: the product these images are "
                                                       "(default: each image routed to the nearest product)")] = None,
    masks: Annotated[bool, typer.Option(help="defect masks (OUT/masks/) and regions (OUT/regions.csv) at the "
                                             "calibrated pixel threshold")] = True,
    pixel_size: Annotated[float | None, typer.Option(help="side of a pixel in mm: regions get area_mm2")] = None,
) -> None:
    """Score images: OUT/scores.csv (path, score, is_anomalous) and one overlay PNG per image."""
    from latentad.data.pipeline import set_decode_workers
    from latentad.predict import predict_paths

    def go():
        set_decode_workers(workers)
        rows = predict_paths(run, out, paths, recursive, device, precision, overlays, engine, category, masks,
                             pixel_size)
        n_anom = sum(r["is_anomalous"] for r in rows)
        typer.echo(f"scored {len(rows)} images ({n_anom} anomalous at the run's threshold) -> {out}")

    run_safely(go)


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

    run_safely(go)


@app.command("export")
def export_cmd(
    run: Annotated[Path, typer.Option(help="run folder written by fit")],
    out: Annotated[Path, typer.Option(help="folder for model.onnx, calibration.json and export.json")],
    to: Annotated[str, typer.Option("--to", help="model format: onnx | openvino (needs the openvino package)")
                  ] = "onnx",
    old_format: Annotated[str | None, typer.Option("--format", hidden=True, help="deprecated: --to")] = None,
) -> None:
    """Export the run's scoring graph (raw scores and maps); the calibration stays a file beside it."""
    from latentad.cli_support import deprecated
    from latentad.export.graph import export_detector
    from latentad.runs import load_run

    def go():
        fmt = deprecated("export --format", "--to", old_format, to, "onnx")
        _, detector, _ = load_run(run)
        meta = export_detector(detector, run / "calibration.json", out, fmt, source=str(run))
        h, w = detector.input_shape
        typer.echo(f"exported {detector.name} ({fmt}, input (N,{detector.config.channels},{h},{w}), outputs "
                   f"{', '.join(meta['outputs'])}; matches torch to {meta['checked']['max_relative_difference']:.1e}) "
                   f"-> {out}")

    run_safely(go)


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

    run_safely(go)


@app.command()
def benchmark(
    spec: Annotated[Path | None, typer.Argument(help="grid spec (TOML); not with --paper")] = None,
    out: Annotated[Path, typer.Option(help="folder for runs/, results.csv and tables.md")] = Path("runs/benchmark"),
    executor: Annotated[str, typer.Option(help="local (this machine) or dask (a dask.distributed cluster)")] = "local",
    scheduler: Annotated[str | None, typer.Option(help="dask: tcp://host:8786, or local:N to start N workers")] = None,
    processes: Annotated[int | None, typer.Option(help="local: N worker processes with the cores split between "
                                                       "them (default one cell at a time)")] = None,
    workers: Annotated[int | None, typer.Option(hidden=True, help="deprecated: --processes")] = None,
    paper: Annotated[str | None, typer.Option(help="table1 | table2 | table3 | families: the paper's protocol "
                                                   "instead of a spec")] = None,
    data_root: Annotated[Path | None, typer.Option(help="with --paper: the folder holding the categories")] = None,
    recipe: Annotated[str | None, typer.Option(help="with --paper: paper presets (GPU-sized, the default) or "
                                                    "cpu defaults")] = None,
    seeds: Annotated[str | None, typer.Option(help="with --paper: seeds, e.g. 0,1,2 (default 0)")] = None,
    eval_size: Annotated[str | None, typer.Option(help="with --paper: size of the pixel metrics, a side or "
                                                       "HxW")] = None,
    categories: Annotated[str | None, typer.Option(help="with --paper: only these categories / classes, "
                                                        "e.g. bottle,screw")] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Run a method x data x seed grid (resumable), locally or on Dask; write results.csv and tables.md."""
    from latentad.cli_support import deprecated, parse_size
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
            grid = paper_spec(paper, data_root, recipe or "paper", seed_list, parse_size(eval_size, "--eval-size"),
                              only)
        else:
            if seeds or data_root or eval_size or categories or recipe:
                raise ConfigError("--seeds / --data-root / --eval-size / --categories / --recipe go with --paper; "
                                  "a spec sets them itself")
            grid = load_spec(spec)
        n_proc = deprecated("benchmark --workers", "--processes", workers, processes, None)
        rows = run_grid(grid, out, executor, scheduler, n_proc, device, paper)
        typer.echo((out / "tables.md").read_text())
        if paper and (out / "paper_table.md").is_file():
            typer.echo((out / "paper_table.md").read_text())
        failed = sum(r["status"] == "failed" for r in rows)
        if failed:
            typer.echo(f"{failed} of {len(rows)} cells failed (errors in results.csv)", err=True)

    run_safely(go)


@app.command("list")
def list_methods() -> None:
    """Methods, their family and presets."""
    from latentad.registry import available_methods, get_method

    for name in available_methods():
        cls = get_method(name)
        presets = ", ".join(["default", *cls.presets])
        typer.echo(f"{name:16s} {cls.family:15s} presets: {presets}\n{'':16s} {cls.describe()}")
        for preset, note in cls.preset_notes.items():
            typer.echo(f"{'':16s}   {preset}: {note}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="folder for the three runs and comparison.html")] = Path("runs/demo"),
    method: Annotated[list[str] | None, typer.Option(help="only these methods (repeatable; default one of each "
                                                          "family: ae_ssim, padim, ssl_gaussian)")] = None,
    cell_type: Annotated[str, typer.Option(help="ELPV cell type: mono, poly or all")] = "mono",
    epochs: Annotated[int | None, typer.Option(help="training epochs (trainable methods)")] = None,
    force: Annotated[bool, typer.Option(help="replace an earlier demo in OUT")] = False,
) -> None:
    """Fit one method of each latent-space family on the ELPV solar cells (shipped by the elpv-dataset
    package), evaluate them on the same test cells and write one page comparing them."""
    from latentad.demo import run_demo

    def go():
        result = run_demo(out, force, cell_type, method, epochs)
        for name, m in result["methods"].items():
            a = m["at_threshold"]
            typer.echo(f"{name:14s} {m['family']:15s} image AUROC {m['image_auroc']:.4f}  at threshold: "
                       f"FPR {a['fpr']:.3f} TPR {a['tpr']:.3f}")
        typer.echo(f"comparison: {Path(result['page']).resolve()}")

    run_safely(go)


def main() -> None:
    try:
        app()
    except SystemExit as exc:
        sys.exit(exc.code)


if __name__ == "__main__":
    main()
