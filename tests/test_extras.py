"""A command that needs a missing optional package says in one line which `pip install "latentad[EXTRA]"`
brings it (a missing module is simulated with `sys.modules[name] = None`)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from latentad.errors import ConfigError, LatentADError, MissingExtraError
from latentad.extras import require


def _missing(monkeypatch, *modules: str) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def _one_line(err: pytest.ExceptionInfo, extra: str) -> str:
    msg = str(err.value)
    assert "\n" not in msg and f'pip install "latentad[{extra}]"' in msg
    return msg


def test_require_imports_or_names_the_extra(monkeypatch):
    assert require("json", "serve") is sys.modules["json"]
    _missing(monkeypatch, "fastapi")
    with pytest.raises(MissingExtraError) as err:
        require("fastapi", "serve", "latentad serve")
    assert _one_line(err, "serve").startswith("latentad serve needs the optional package 'fastapi'")
    assert issubclass(MissingExtraError, ConfigError) and issubclass(MissingExtraError, LatentADError)


def test_serve_app_refuses_at_import_without_the_serve_extra(monkeypatch):
    monkeypatch.delitem(sys.modules, "latentad.serve.app", raising=False)
    _missing(monkeypatch, "fastapi")
    with pytest.raises(MissingExtraError) as err:
        importlib.import_module("latentad.serve.app")
    _one_line(err, "serve")


def test_dask_executor_names_its_extra(monkeypatch):
    from latentad.experiments.executors import dask_client

    _missing(monkeypatch, "distributed")
    with pytest.raises(MissingExtraError) as err:
        dask_client("local:1", None)
    _one_line(err, "dask")


def test_export_and_engines_name_their_extras(monkeypatch, tmp_path):
    from latentad.export.engine import open_engine
    from latentad.export.graph import export_detector

    _missing(monkeypatch, "onnxruntime", "openvino")
    with pytest.raises(MissingExtraError) as err:
        export_detector(None, tmp_path / "calibration.json", tmp_path / "out", "onnx")  # refused before any use
    _one_line(err, "export")
    with pytest.raises(MissingExtraError) as err:
        open_engine(tmp_path, "onnxruntime")
    _one_line(err, "export")
    with pytest.raises(MissingExtraError) as err:
        open_engine(tmp_path, "openvino")
    _one_line(err, "openvino")


def test_analysis_and_data_name_their_extras(monkeypatch):
    import numpy as np

    from latentad.analysis import dimension
    from latentad.analysis.suite import analyze
    from latentad.data.elpv import elpv_data_dir

    _missing(monkeypatch, "skdim", "elpv_dataset")
    with pytest.raises(MissingExtraError) as err:
        dimension.estimate(np.zeros((20, 3)))
    _one_line(err, "analysis")
    with pytest.raises(MissingExtraError) as err:
        analyze([Path("no-such-run")], Path("unused"))  # refused before any run is read
    _one_line(err, "analysis")
    with pytest.raises(MissingExtraError) as err:
        elpv_data_dir()
    _one_line(err, "data")


def test_the_cli_prints_the_extra_in_one_line(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from latentad.cli import app

    _missing(monkeypatch, "elpv_dataset")
    res = CliRunner().invoke(app, ["fit", "--method", "gaussian", "--data", "elpv", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("latentad: error:") and 'pip install "latentad[data]"' in last
