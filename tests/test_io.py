"""Model files: safetensors + JSON, nested optimizer state without pickle, atomic writes."""

import json

import pytest
import torch

from latentad import io
from latentad.errors import ModelFileError


def test_optimizer_state_round_trips_through_safetensors_and_json(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors: dict[str, torch.Tensor] = {}
    skeleton = io.flatten_state("optim", opt.state_dict(), tensors)
    io.write_tensors(tmp_path / "t.safetensors", tensors)
    io.write_json(tmp_path / "s.json", skeleton)
    restored = io.unflatten_state(io.read_json(tmp_path / "s.json"), io.read_tensors(tmp_path / "t.safetensors"))
    original = opt.state_dict()
    assert restored["param_groups"][0]["lr"] == original["param_groups"][0]["lr"]
    assert set(restored["state"]) == set(original["state"])  # integer keys survive
    for k, v in original["state"][0].items():
        assert torch.equal(restored["state"][0][k], v)
    opt2 = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=5.0)
    opt2.load_state_dict(restored)
    assert opt2.param_groups[0]["lr"] == 1e-3


def test_writes_are_atomic_and_leave_no_temporary_files(tmp_path):
    io.write_json(tmp_path / "a.json", {"x": float("nan"), "y": [1, 2]})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": None, "y": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_bad_files_give_one_line_errors_naming_the_file(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="bad.json"):
        io.read_json(tmp_path / "bad.json")
    (tmp_path / "bad.safetensors").write_bytes(b"\x80\x02garbage")
    with pytest.raises(ModelFileError, match="bad.safetensors"):
        io.read_tensors(tmp_path / "bad.safetensors")
    with pytest.raises(ModelFileError, match="missing.json: file not found"):
        io.read_json(tmp_path / "missing.json")
