"""What the command line shares across commands: one meaning per flag, sizes as `HxW`, old flag
spellings kept for a release with a deprecation line, and `fit --config FILE` (flags win)."""

from __future__ import annotations

import logging
import os
import tomllib
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from latentad.errors import ConfigError


def parse_size(text: str | None, option: str) -> int | tuple[int, int] | None:
    """`256` or `256x320` (height x width) -> 256 or (256, 320); anything else is a one-line error."""
    if text is None:
        return None
    parts = text.lower().replace(" ", "").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) <= 0:
        raise ConfigError(f"{option} {text}: expected a side in pixels (256) or HxW (256x320)")
    return values[0] if len(values) == 1 else (values[0], values[1])


def parse_duration(text: str | float | None, option: str) -> float | None:
    """`90s`, `10m`, `1.5h` or a number of seconds (text, or a number from a --config file) -> seconds;
    anything else is a one-line error."""
    if text is None:
        return None
    if isinstance(text, int | float) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str):
        raise ConfigError(f"{option} {text!r}: expected a positive duration (600, 90s, 10m, 1h)")
    raw = text.strip().lower()
    scale = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(raw[-1:], None)
    number = raw[:-1] if scale is not None else raw
    try:
        value = float(number) * (scale or 1.0)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{option} {text}: expected a positive duration (600, 90s, 10m, 1h)")
    return value


def deprecated(old: str, new: str, value: Any, current: Any, default: Any) -> Any:
    """The value of a renamed flag: the new spelling's, or the old one's with a deprecation line."""
    if value is None:
        return current
    if current != default:
        raise ConfigError(f"{old} and {new} are the same option (give {new} only)")
    typer.echo(f"latentad: {old} is deprecated and will be removed in the next release; use {new}", err=True)
    return value


def fit_config(ctx: typer.Context, path: Path | None, values: dict[str, Any]) -> dict[str, Any]:
    """`values` (the fit flags by parameter name) completed from the TOML file `path`: a key of the
    file is used where its flag was not given on the command line. Keys are the flags' names
    (`calibration-fraction` or `calibration_fraction`; `format`, `option` and `data-option` may be
    tables of key = value)."""
    if path is None:
        return values
    try:
        table = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML ({exc})") from None
    out = dict(values)
    for key, value in table.items():
        name = {"format": "fmt"}.get(key.replace("-", "_"), key.replace("-", "_"))
        if name not in values or name == "config":
            raise ConfigError(f"--config {path}: unknown key {key!r} (the keys are fit's flags: "
                              f"{', '.join(sorted(k for k in values if k != 'config'))})")
        source = ctx.get_parameter_source(name)  # typer may carry its own click: compare by name
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            continue  # flags win
        if isinstance(value, dict):
            value = [f"{k}={v}" for k, v in value.items()]
        default = values[name]
        kind = float if isinstance(default, float) else type(default)
        if default is not None and not (isinstance(value, kind) or (kind is float and isinstance(value, int))):
            raise ConfigError(f"--config {path}: {key} = {value!r} must be a {kind.__name__}")
        out[name] = value
    return out


def auto_options(values: dict[str, Any]) -> dict[str, Any]:
    """fit's flags for `--method auto` as AutoDetector's options; what does not apply is refused."""
    from latentad.selection.auto import DEFAULT_BUDGET
    from latentad.selection.portfolio import parse_candidates

    for flag, key in (("--option", "option"), ("--epochs", "epochs"), ("--tune", "tune"), ("--resume", "resume")):
        if values.get(key):
            raise ConfigError(f"{flag}: does not apply to --method auto (each candidate keeps its own options)")
    parse_candidates(values.get("candidates"))  # an unknown name refused before anything is read
    budget = parse_duration(values.get("budget"), "--budget")
    options = {"budget": DEFAULT_BUDGET if budget is None else budget, "candidates": values.get("candidates")}
    if values.get("fusion") is not None:
        options["fusion"] = values["fusion"]
    return options


def method_flags(values: dict[str, Any]) -> None:
    """--budget, --candidates and --fusion belong to --method auto only: refused elsewhere, not ignored."""
    for flag, key in (("--budget", "budget"), ("--candidates", "candidates"), ("--fusion", "fusion")):
        if values.get(key) is not None and values.get("method") != "auto":
            raise ConfigError(f"{flag}: applies only to --method auto")


def required(values: dict[str, Any], *names: str) -> None:
    missing = [n for n in names if values.get(n) is None]
    if missing:
        raise ConfigError(f"fit: --{missing[0]} is required (on the command line or in --config)")


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


def run_safely(func, *args, **kwargs):
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
FormatOpt = Annotated[str, typer.Option("--format", help="auto, mvtec, folder, mnist, cifar10, elpv, ucsd, deeppcb, "
                                                         "synthetic")]
WorkersOpt = Annotated[int | None, typer.Option(help="threads decoding images while the model runs (default: "
                                                   "min(4, cores); 0: in the main thread)")]
EngineOpt = Annotated[str, typer.Option(help="auto (torch for a run folder, onnxruntime for an export folder), "
                                              "torch, onnxruntime or openvino")]
DataOpt = Annotated[list[str] | None, typer.Option("--data-option", "-d",
                                                   help="data set option key=value (e.g. normal_class=3)")]
