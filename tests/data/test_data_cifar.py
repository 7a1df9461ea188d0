"""CIFAR-10 loader on tiny batch files written in the official python-version format.

The official batches were written by Python 2 `cPickle` with protocol 2: dict keys and byte strings
are py2 `str` (BINSTRING opcodes, read back as bytes with encoding="bytes") and the data array is a
numpy array pickled via `numpy.core.multiarray._reconstruct`. `_Py2Pickler` reproduces that byte
layout from Python 3 so the tests read exactly what the real files hold.
"""

from __future__ import annotations

import io
import json
import pickle
import pickletools
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentad.data.cifar import CIFAR10_CLASSES, load_cifar10, read_cifar_batch
from latentad.errors import ConfigError, DataError

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler, whose dispatch table can be extended
    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str

    def save_global(self, obj, name=None):
        if obj is _reconstruct:  # the module name numpy 1.x (and the official files) use
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)

    dispatch[type(_reconstruct)] = save_global


def _dump_py2(obj, path: Path) -> None:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())


def _batch(labels: list[int], name: str, first: int) -> dict:
    n = len(labels)
    data = np.zeros((n, 3072), dtype=np.uint8)
    for i in range(n):
        img = np.full((32, 32, 3), first + i, dtype=np.uint8)
        img[1, 2] = (200, 100, 50)  # known pixel: row 1, column 2 = (R, G, B)
        data[i] = img.transpose(2, 0, 1).reshape(-1)  # R plane, G plane, B plane, each row-major
    return {
        b"batch_label": f"{name} of 5".encode(),
        b"labels": list(labels),
        b"data": data,
        b"filenames": [f"img_{first + i}.png".encode() for i in range(n)],
    }


def _write_batches(root: Path, per_batch: int = 20, n_test: int = 30, meta: bool = True) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for k in range(1, 6):
        labels = [(k + i) % 10 for i in range(per_batch)]
        _dump_py2(_batch(labels, f"training batch {k}", 10 * k), d / f"data_batch_{k}")
    _dump_py2(_batch([i % 10 for i in range(n_test)], "testing batch 1", 100), d / "test_batch")
    if meta:
        _dump_py2({b"num_cases_per_batch": per_batch, b"label_names": [c.encode() for c in CIFAR10_CLASSES],
                   b"num_vis": 3072}, d / "batches.meta")
    return d


def test_file_looks_like_the_official_format(tmp_path):
    d = _write_batches(tmp_path)
    raw = (d / "data_batch_1").read_bytes()
    assert raw[:2] == b"\x80\x02"
    ops = {op.name for op, _, _ in pickletools.genops(raw)}
    assert "SHORT_BINSTRING" in ops and "BINUNICODE" not in ops and "SHORT_BINBYTES" not in ops
    assert b"numpy.core.multiarray\n_reconstruct" in raw
    batch = read_cifar_batch(d / "data_batch_1")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (20, 3072)


def test_python_batches_split_counts_and_pixels(tmp_path):
    _write_batches(tmp_path)
    split = load_cifar10(tmp_path, normal_class=3)
    # labels (k + i) % 10 over 20 images: class 3 appears twice per batch
    assert len(split.train) == 10 and set(split.train.labels) == {0}
    assert len(split.test) == 30 and int((split.test.labels == 0).sum()) == 3
    assert split.train.channels == 3 and split.train.size is None
    image, mask = split.train.records[0].load()
    assert mask is None and image.shape == (32, 32, 3)
    assert tuple(image[1, 2]) == (200, 100, 50) and tuple(image[0, 0]) == (image[0, 0, 0],) * 3
    sample = split.test[0]
    assert sample.image.shape == (3, 32, 32)
    assert torch_close(sample.image[:, 1, 2], (200 / 255, 100 / 255, 50 / 255))
    kinds = {r.defect_type for r in split.test.records if r.label == 1}
    assert kinds == set(CIFAR10_CLASSES) - {"cat"}
    info = split.info
    assert info["layout"] == "python-batches" and info["normal_class_name"] == "cat"
    assert info["n_train_images_all_classes"] == 100 and info["n_test_anomalous"] == 27
    json.dumps(info)


def torch_close(t, values) -> bool:
    return bool(np.allclose(t.numpy(), np.asarray(values, dtype=np.float32), atol=1e-6))


def test_batches_folder_itself_and_class_name(tmp_path):
    d = _write_batches(tmp_path, meta=False)
    split = load_cifar10(d, normal_class="airplane", size=8)
    assert split.info["normal_class"] == 0 and split.train[0].image.shape == (3, 8, 8)
    assert load_cifar10(d, normal_class="0").info["normal_class"] == 0


def test_restricted_unpickler_refuses_other_globals(tmp_path):
    d = _write_batches(tmp_path)
    from collections import OrderedDict

    (d / "data_batch_2").write_bytes(pickle.dumps(OrderedDict(a=1), protocol=2))
    with pytest.raises(DataError) as exc:
        load_cifar10(tmp_path)
    msg = str(exc.value)
    assert "data_batch_2" in msg and "collections.OrderedDict" in msg and "\n" not in msg


def test_bad_batches(tmp_path):
    d = _write_batches(tmp_path)
    (d / "data_batch_4").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match="data_batch_4"):
        load_cifar10(tmp_path)
    _dump_py2({b"data": np.zeros((2, 100), dtype=np.uint8), b"labels": [0, 1]}, d / "data_batch_4")
    with pytest.raises(DataError, match="expected uint8"):
        load_cifar10(tmp_path)
    (d / "data_batch_4").unlink()
    with pytest.raises(DataError, match="data_batch_4: file not found"):
        load_cifar10(tmp_path)


def test_bad_normal_class(tmp_path):
    _write_batches(tmp_path)
    for bad in (10, -1, "zebra"):
        with pytest.raises(ConfigError):
            load_cifar10(tmp_path, normal_class=bad)


def _png(path: Path, rgb: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((32, 32, 3), rgb, dtype=np.uint8)).save(path)


def test_class_folders(tmp_path):
    for c in ("airplane", "bird", "truck"):
        for i in range(2):
            _png(tmp_path / "train" / c / f"{i}.png", (10, 20, 30))
        _png(tmp_path / "test" / c / "0.png", (10, 20, 30))
    split = load_cifar10(tmp_path, normal_class="bird")
    assert split.info["layout"] == "class-folders" and split.info["normal_class"] == 2
    assert len(split.train) == 2 and len(split.test) == 3
    assert split.test.labels.tolist() == [1, 0, 1]
    assert split.info["n_train_images_all_classes"] == 6
    assert tuple(split.train.records[0].load()[0][0, 0]) == (10, 20, 30)
    with pytest.raises(DataError, match="normal class"):
        load_cifar10(tmp_path, normal_class="cat")


def test_class_folders_by_digit_and_bad_names(tmp_path):
    _png(tmp_path / "train" / "4" / "a.png", (1, 2, 3))
    _png(tmp_path / "test" / "4" / "a.png", (1, 2, 3))
    _png(tmp_path / "test" / "7" / "a.png", (1, 2, 3))
    split = load_cifar10(tmp_path, normal_class=4)
    assert split.info["normal_class_name"] == "deer" and split.test.labels.tolist() == [0, 1]
    _png(tmp_path / "test" / "unicorn" / "a.png", (1, 2, 3))
    with pytest.raises(DataError, match="unicorn"):
        load_cifar10(tmp_path, normal_class=4)


def test_no_layout(tmp_path):
    with pytest.raises(DataError, match="no CIFAR-10 layout"):
        load_cifar10(tmp_path)
