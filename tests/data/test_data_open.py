"""open_dataset: format detection and option pass-through on tiny trees of every layout."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentad.data.open import detect_format, open_dataset
from latentad.errors import ConfigError, DataError


def _png(path: Path, value: int = 90, shape: tuple[int, ...] = (8, 8, 3)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(path)


def _mvtec(root: Path) -> Path:
    for i in range(2):
        _png(root / "train" / "good" / f"{i}.png")
    _png(root / "test" / "good" / "0.png")
    _png(root / "test" / "crack" / "0.png", 200)
    return root


def _mnist(root: Path) -> Path:
    images = np.zeros((20, 4, 4), dtype=np.uint8)
    labels = np.arange(20, dtype=np.uint8) % 10
    root.mkdir(parents=True, exist_ok=True)
    files = (("t10k-images-idx3-ubyte.gz", images, 2051), ("t10k-labels-idx1-ubyte.gz", labels, 2049))
    for name, arr, magic in files:
        header = struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape)
        (root / name).write_bytes(gzip.compress(header + arr.tobytes()))
    return root


def _cifar(root: Path) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        batch = {b"data": np.zeros((10, 3072), dtype=np.uint8), b"labels": list(range(10)),
                 b"batch_label": name.encode(), b"filenames": [b"x.png"] * 10}
        (d / name).write_bytes(pickle.dumps(batch, protocol=4))  # a Python 3 copy: bytes keys, no _codecs
    return root


def _ucsd(root: Path) -> Path:
    ped = root / "UCSDped1"
    for f in (1, 2):
        _png(ped / "Train" / "Train001" / f"{f:03d}.tif", shape=(6, 10))
        _png(ped / "Test" / "Test001" / f"{f:03d}.tif", shape=(6, 10))
    (ped / "Test" / "UCSDped1.m").write_text("TestDataset.gt_frame{1} = [2:2];\n")
    return root


def test_detects_each_layout(tmp_path):
    assert detect_format(_mvtec(tmp_path / "m")) == "mvtec"
    assert detect_format(_mnist(tmp_path / "d")) == "mnist"
    assert detect_format(tmp_path / "d" / "t10k-images-idx3-ubyte.gz") == "mnist"
    assert detect_format(_cifar(tmp_path / "c")) == "cifar10"
    assert detect_format(tmp_path / "c" / "cifar-10-batches-py") == "cifar10"
    assert detect_format(_ucsd(tmp_path / "u")) == "ucsd"
    _png(tmp_path / "f" / "normal" / "a.png")
    assert detect_format(tmp_path / "f") == "folder"
    assert detect_format("elpv") == "elpv" and detect_format("synthetic") == "synthetic"


def test_open_each_format(tmp_path):
    split = open_dataset(_mvtec(tmp_path / "m"), size=4)
    assert split.info["format"] == "mvtec" and split.train[0].image.shape == (3, 4, 4)
    split = open_dataset(_mnist(tmp_path / "d"), size=None, normal_class=3, seed=1)
    assert split.info["format"] == "mnist" and split.info["normal_class"] == 3 and split.info["seed"] == 1
    split = open_dataset(_cifar(tmp_path / "c"), size=None, normal_class="dog")
    assert split.info["format"] == "cifar10" and len(split.train) == 5 and len(split.test) == 10
    split = open_dataset(_ucsd(tmp_path / "u"), size=None)
    assert split.info["format"] == "ucsd" and split.test.labels.tolist() == [0, 1]
    split = open_dataset("synthetic", size=24, n_train=2, n_test_good=1, n_test_defect=1)
    assert split.info["format"] == "synthetic" and split.train[0].image.shape == (3, 24, 24)


def test_folder_options_pass_through(tmp_path):
    for i in range(4):
        _png(tmp_path / "ok" / f"{i}.png")
    _png(tmp_path / "bad" / "0.png", 200)
    split = open_dataset(tmp_path, normal="ok", test_fraction=0.25, size=None)
    assert split.info["format"] == "folder" and len(split.train) == 3


def test_elpv_by_name():
    pytest.importorskip("elpv_dataset")
    split = open_dataset("elpv", size=32, cell_type="poly", limit=1, partial="anomalous")
    assert split.info["format"] == "elpv" and split.info["cell_type"] == "poly"
    assert len(split.train) == 1 and len(split.test) == 2


def test_cifar_class_folders_need_the_format(tmp_path):
    _png(tmp_path / "train" / "cat" / "0.png", shape=(32, 32, 3))
    _png(tmp_path / "test" / "cat" / "0.png", shape=(32, 32, 3))
    _png(tmp_path / "test" / "dog" / "0.png", shape=(32, 32, 3))
    with pytest.raises(DataError) as exc:
        open_dataset(tmp_path)
    msg = str(exc.value)
    assert "no known data set layout" in msg and "mvtec" in msg and "cifar10" in msg and "\n" not in msg
    split = open_dataset(tmp_path, format="cifar10", normal_class="cat", size=None)
    assert split.test.labels.tolist() == [0, 1]


def test_synthetic_written_to_a_path(tmp_path):
    split = open_dataset(tmp_path / "s", format="synthetic", size=16, n_train=2, n_test_good=1,
                         n_test_defect=1)
    assert split.info["layout"] == "mvtec" and (tmp_path / "s" / "train" / "good" / "000.png").is_file()


def test_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="not an MNIST idx"):
        open_dataset(tmp_path / "notes.txt")
    with pytest.raises(ConfigError, match="unknown data format"):
        open_dataset(tmp_path, format="imagenet")
    with pytest.raises(ConfigError, match="'normal_class' does not apply to format mvtec"):
        open_dataset(_mvtec(tmp_path / "m"), normal_class=1)
