"""MNIST idx loader on tiny idx files written here (plus one optional test on the real t10k files)."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from latentad.data.mnist import labels_path_for, load_mnist, read_idx
from latentad.errors import ConfigError, DataError

# the verified data beside the repository
REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"


def _idx(path: Path, arr: np.ndarray, magic: int, compress: bool = True) -> Path:
    header = struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def _files(tmp_path: Path, n: int = 30, compress: bool = True, prefix: str = "t10k") -> Path:
    images = np.stack([np.full((6, 5), i, dtype=np.uint8) for i in range(n)])
    images[:, 0, 1] = 255  # a marker pixel at row 0, column 1
    labels = np.arange(n) % 10
    ext = ".gz" if compress else ""
    img = _idx(tmp_path / f"{prefix}-images-idx3-ubyte{ext}", images, 2051, compress)
    _idx(tmp_path / f"{prefix}-labels-idx1-ubyte{ext}", labels, 2049, compress)
    return img


def test_one_vs_rest_split(tmp_path):
    split = load_mnist(_files(tmp_path), normal_class=2)
    assert len(split.train) == 2 and len(split.test) == 1 + 27
    assert set(split.train.labels) == {0}
    assert int((split.test.labels == 0).sum()) == 1
    assert split.train.channels == 1
    normal_paths = [r.path for r in split.train.records]
    normal_paths += [r.path for r in split.test.records if r.label == 0]
    assert sorted(normal_paths) == ["mnist/t10k/000002", "mnist/t10k/000012", "mnist/t10k/000022"]
    kinds = {r.defect_type for r in split.test.records if r.label == 1}
    assert kinds == {f"digit_{d}" for d in range(10) if d != 2}
    info = split.info
    assert info["normal_class"] == 2 and info["n_train"] == 2 and info["n_test_anomalous"] == 27
    json.dumps(info)


def test_pixels_and_shape(tmp_path):
    split = load_mnist(_files(tmp_path), normal_class=0)
    rec = next(r for r in split.test.records if r.path.endswith("000007"))
    image, mask = rec.load()
    assert image.shape == (6, 5, 1) and mask is None
    assert image[0, 1, 0] == 255 and image[3, 3, 0] == 7
    sample = split.test.with_size(None)[0]
    assert sample.image.shape == (1, 6, 5)
    assert split.with_size(12).train[0].image.shape == (1, 12, 12)


def test_seeded_and_plain_files(tmp_path):
    img = _files(tmp_path, n=200, compress=False, prefix="train")
    a = load_mnist(img, normal_class=5, seed=3)
    b = load_mnist(img, normal_class=5, seed=3)
    c = load_mnist(img, normal_class=5, seed=4)
    paths = lambda s: [r.path for r in s.train.records]  # noqa: E731
    assert paths(a) == paths(b) != paths(c)
    assert paths(a)[0].startswith("mnist/train/")
    assert len(a.train) == 16 and len(a.test) == 4 + 180


def test_labels_path_derivation(tmp_path):
    assert labels_path_for(Path("x/t10k-images-idx3-ubyte.gz")) == Path("x/t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match="labels_gz"):
        labels_path_for(Path("digits.bin"))


def test_explicit_labels_file(tmp_path):
    img = _files(tmp_path)
    other = tmp_path / "other.gz"
    other.write_bytes((tmp_path / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert len(load_mnist(img, labels_gz=other, normal_class=1).train) == 2


def test_wrong_magic_names_the_file(tmp_path):
    img = _files(tmp_path)
    with pytest.raises(DataError) as exc:
        load_mnist(tmp_path / "t10k-labels-idx1-ubyte.gz", labels_gz=img)
    msg = str(exc.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg and "magic 2049" in msg and "\n" not in msg


def test_truncated_file(tmp_path):
    img = _files(tmp_path, compress=False)
    raw = img.read_bytes()
    img.write_bytes(raw[:-7])
    with pytest.raises(DataError, match="truncated") as exc:
        read_idx(img, 2051)
    assert str(img) in str(exc.value)
    img.write_bytes(raw[:10])
    with pytest.raises(DataError, match="truncated idx header"):
        read_idx(img, 2051)
    img.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="no header"):
        read_idx(img, 2051)


def test_corrupt_gzip(tmp_path):
    img = _files(tmp_path)
    img.write_bytes(img.read_bytes()[:20])
    with pytest.raises(DataError, match="gzip") as exc:
        load_mnist(img)
    assert str(img) in str(exc.value)


def test_count_mismatch_and_missing_labels(tmp_path):
    img = _files(tmp_path)
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(5), 2049)
    with pytest.raises(DataError, match="5 labels"):
        load_mnist(img)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="not found"):
        load_mnist(img)


def test_bad_options(tmp_path):
    img = _files(tmp_path)
    with pytest.raises(ConfigError):
        load_mnist(img, normal_class=10)
    with pytest.raises(ConfigError):
        load_mnist(img, train_fraction=0.0)


@pytest.mark.skipif(not REAL.is_file(), reason="real MNIST t10k files not present")
def test_real_t10k_files():
    split = load_mnist(REAL, normal_class=0, seed=0)
    assert split.info["n_train"] + split.info["n_test"] == 10_000
    assert split.info["n_train"] + split.info["n_test_normal"] == 980  # digit 0 in t10k
    sample = split.train[0]
    assert sample.image.shape == (1, 28, 28) and 0.0 <= float(sample.image.min())
