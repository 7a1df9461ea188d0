"""A fitted detector's scoring path as one traceable module, and its export to ONNX / OpenVINO.

The graph is `Detector.score_batch` itself (the function `predict` runs), traced once: image batch
(N,C,H,W) in [0,1] at the detector's input shape in, raw scores (N) and, for localising methods, raw
maps (N,H,W) out. Normalisation of the input is inside the graph (it belongs to the model); the
threshold and the heat-map scale are not: they stay in `calibration.json` beside the graph, so a
recalibration never needs a re-export and the exported scores are the checkpoint's.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from latentad import __version__, io
from latentad.detectors.base import Detector
from latentad.errors import ConfigError
from latentad.export.dedupe import dedupe_constants
from latentad.extras import require

FORMATS = ("onnx", "openvino")
OPSET = 17
TOLERANCE = 1e-4  # relative difference between the traced graph and torch accepted at export


class ScoringGraph(nn.Module):
    """images (N,C,H,W) in [0,1] -> (scores (N),) or (scores (N), maps (N,H,W)): `score_batch`."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.detector = detector  # a plain attribute: its networks are traced as constants

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        scores, maps = self.detector.score_batch(x)
        return (scores,) if maps is None else (scores, maps)


def example_batch(detector: Detector, n: int = 2) -> torch.Tensor:
    """A seeded batch at the detector's input shape (what the graph is traced and checked on)."""
    h, w = detector.input_shape
    return torch.rand(n, detector.config.channels, h, w, generator=torch.Generator().manual_seed(0))


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max(|a|, |b|, 1e-6), elementwise (the check's measure)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-6)
    return float((np.abs(a - b) / scale).max()) if a.size else 0.0


def trace_onnx(detector: Detector, path: Path) -> list[str]:
    """Write the ONNX graph of `detector` to `path` (batch axis dynamic); returns the output names."""
    if getattr(detector, "full_resolution", False):
        raise ConfigError(f"{detector.name}: a tiled detector (tile={detector.config.tile}) cannot be exported "
                          "yet: its tiles are cut and stitched outside the network")
    graph = ScoringGraph(detector).eval()
    x = example_batch(detector)
    with torch.no_grad():
        n_out = len(graph(x))
    names = ["scores", "maps"][:n_out]
    axes = {"images": {0: "batch"}, **{n: {0: "batch"} for n in names}}
    with frozen(detector), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shapes read as Python numbers
        try:
            torch.onnx.export(graph, (x,), str(path), dynamo=False, input_names=["images"], output_names=names,
                              dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True)
            dedupe_constants(path)  # a backbone run at two input sizes is traced twice: one copy of its weights
        except Exception as exc:  # the exporter's own errors carry whole tensors in their messages
            raise ConfigError(f"{detector.name}: the scoring graph cannot be exported ({one_line(exc)})") from None
    return names


def one_line(exc: BaseException, limit: int = 160) -> str:
    """An exception as one short line: its type and the first line of its message."""
    first = (str(exc).strip().splitlines() or [""])[0]
    first = first if len(first) <= limit else first[: limit - 3] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def modules_of(obj, seen: set[int] | None = None) -> list[nn.Module]:
    """The torch modules a detector holds, through the detectors it is made of (an ensemble's
    members, ssl's Gaussians) and the lists, tuples and dicts they sit in."""
    return [v for v in _held(obj, set() if seen is None else seen) if isinstance(v, nn.Module)]


def _held(obj, seen: set[int]) -> list:
    """Modules and tensors reachable from a detector's attributes."""
    found: list = []
    values = list(vars(obj).values()) if isinstance(obj, Detector) else [obj]
    for v in values:
        if id(v) in seen:
            continue
        seen.add(id(v))
        if isinstance(v, nn.Module | torch.Tensor):
            found.append(v)
        elif isinstance(v, Detector):
            found += _held(v, seen)
        elif isinstance(v, list | tuple):
            for item in v:
                found += _held(item, seen)
        elif isinstance(v, dict):
            for item in v.values():
                found += _held(item, seen)
    return found


@contextmanager
def frozen(detector: Detector) -> Iterator[None]:
    """Every weight and fitted tensor of `detector` without requires_grad while the graph is traced
    (they enter it as constants, which must not require grad), restored afterwards."""
    held = _held(detector, set())
    tensors = [p for m in held if isinstance(m, nn.Module) for p in m.parameters()]
    tensors += [t for t in held if isinstance(t, torch.Tensor) and t.is_leaf]
    changed = [t for t in tensors if t.requires_grad]
    for t in changed:
        t.requires_grad_(False)
    try:
        yield
    finally:
        for t in changed:
            t.requires_grad_(True)


def export_detector(detector: Detector, calibration: Path, out: Path, fmt: str = "onnx",
                    source: str | None = None) -> dict:
    """`out/model.onnx` (+ `model.xml`/`.bin` for openvino), `calibration.json` copied from `calibration`,
    `export.json` describing the input; the graph is checked against torch before anything lands."""
    from latentad.export.engine import open_engine

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: one of {', '.join(FORMATS)}")
    extra = "export" if fmt == "onnx" else "openvino"
    require("onnx", extra, f"latentad export --format {fmt}")  # torch writes the graph with it
    # the graph is checked against torch in the engine that will run it
    require("onnxruntime" if fmt == "onnx" else "openvino", extra, f"latentad export --format {fmt}")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".export.") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        names = trace_onnx(detector, onnx_path)
        files = ["model.onnx"]
        if fmt == "openvino":
            import openvino as ov

            # full-precision weights: save_model would halve them by default
            ov.save_model(ov.convert_model(str(onnx_path)), str(Path(tmp) / "model.xml"), compress_to_fp16=False)
            files += ["model.xml", "model.bin"]
        x = example_batch(detector, 3)  # another batch size than the traced one: the batch axis is free
        with torch.no_grad():
            want = ScoringGraph(detector).eval()(x)
        got = open_engine(Path(tmp), "onnxruntime" if fmt == "onnx" else "openvino").run(x.numpy())
        diff = max(relative_difference(w.cpu().numpy(), g) for w, g in zip(want, got, strict=True))
        if diff > TOLERANCE:
            raise ConfigError(f"{detector.name}: the exported graph differs from torch by {diff:.2e} (relative) "
                              f"on a test batch, more than {TOLERANCE:g}: not exported")
        for f in files:
            shutil.move(str(Path(tmp) / f), str(out / f))
    meta = {
        "format": fmt,
        "method": detector.name,
        "family": detector.family,
        "localizes": "maps" in names,
        "map_statistic": detector.map_statistic,
        "input": {"name": "images", "shape": ["batch", detector.config.channels, *detector.input_shape],
                  "dtype": "float32", "range": [0.0, 1.0]},
        "outputs": names,
        "preprocessing": {"channels": detector.config.channels, "resize": detector.config.resize,
                          "note": "decode, convert to the channels, bring to the input size by `resize`, scale "
                                  "to [0,1]; the model's own normalisation is inside the graph"},
        "batch_size": detector.config.batch_size,
        "config": dataclasses.asdict(detector.config),
        "checked": {"max_relative_difference": diff, "batch": int(x.shape[0])},
        "opset": OPSET,
        "latentad_version": __version__,
        "torch_version": torch.__version__,
        "source_run": source,
    }
    io.write_bytes(out / "calibration.json", Path(calibration).read_bytes())
    io.write_json(out / "export.json", meta)
    return meta
