"""Scoring with an export folder: onnxruntime or OpenVINO behind the detector interface `score_set`
uses (`predict` on a batch at the input shape, `input_shape`, `config`), so `latentad predict`,
`calibrate` and `serve` treat an export like a run, with the calibration file beside the graph."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from latentad import io
from latentad.detectors.base import Prediction
from latentad.errors import ConfigError, ModelFileError
from latentad.extras import require

ENGINES = ("onnxruntime", "openvino")


def is_export(folder: Path) -> bool:
    return (Path(folder) / "export.json").is_file()


class _OnnxRuntime:
    def __init__(self, folder: Path) -> None:
        ort = require("onnxruntime", "export", "--engine onnxruntime")
        path = folder / "model.onnx"
        if not path.is_file():
            raise ModelFileError(f"{path}: file not found (export with --format onnx)")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelFileError(f"{path}: onnxruntime cannot load it ({str(exc).splitlines()[0]})") from None

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {"images": np.ascontiguousarray(x, dtype=np.float32)})


class _OpenVINO:
    def __init__(self, folder: Path) -> None:
        ov = require("openvino", "openvino", "--engine openvino")
        path = folder / "model.xml"
        if not path.is_file():
            raise ModelFileError(f"{path}: file not found (export with --format openvino)")
        # f32: OpenVINO would otherwise pick bf16 on CPUs that have it, and drift from the checkpoint
        self.model = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        result = self.model(np.ascontiguousarray(x, dtype=np.float32))
        return [np.asarray(result[out]) for out in self.model.outputs]


def open_engine(folder: Path, engine: str):
    """The runtime session of an export folder's graph (`run(batch) -> [scores, maps?]`)."""
    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine}: one of torch, {', '.join(ENGINES)}")
    return _OnnxRuntime(Path(folder)) if engine == "onnxruntime" else _OpenVINO(Path(folder))


@dataclass
class ExportedConfig:
    """The fields of the detector config that decide how images reach the graph."""

    image_size: tuple[int, int]
    channels: int
    resize: str
    batch_size: int
    tile: int = 0


class ExportedDetector:
    """An export folder as a scorer: same placement of inputs, same raw outputs as the checkpoint."""

    fitted = True
    full_resolution = False

    def __init__(self, folder: Path, engine: str = "onnxruntime") -> None:
        self.folder = Path(folder)
        meta = io.read_json(self.folder / "export.json")
        try:
            self.name = str(meta["method"])
            self.family = str(meta.get("family", ""))
            self.localizes = bool(meta["localizes"])
            self.map_statistic = meta.get("map_statistic")
            shape = meta["input"]["shape"]
            pre = meta["preprocessing"]
            self.config = ExportedConfig((int(shape[2]), int(shape[3])), int(shape[1]), str(pre["resize"]),
                                         int(meta.get("batch_size", 16)))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{self.folder / 'export.json'}: missing or malformed field ({exc})") from None
        self.meta = meta
        self.engine_name = engine
        self.engine = open_engine(self.folder, engine)

    @property
    def input_shape(self) -> tuple[int, int]:
        return self.config.image_size

    def predict(self, images: torch.Tensor) -> Prediction:
        """Raw scores and maps of a float batch (N,C,H,W) in [0,1] at the input shape."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 \
                or tuple(images.shape[1:]) != (self.config.channels, *self.input_shape):
            raise ConfigError(f"{self.folder}: the graph takes (N,{self.config.channels},{self.input_shape[0]},"
                              f"{self.input_shape[1]}) batches, got {tuple(getattr(images, 'shape', ()))}")
        outs = self.engine.run(images.detach().cpu().float().numpy())
        return Prediction(outs[0].astype(np.float64), outs[1] if self.localizes else None)
