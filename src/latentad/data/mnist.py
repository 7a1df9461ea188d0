"""MNIST in the official idx format, as a one-vs-rest anomaly detection split.

idx files (gzip-compressed or plain): a big-endian header, magic 2051 for images (0x00000803: unsigned
bytes, 3 dimensions N, rows, cols) or 2049 for labels (0x00000801: unsigned bytes, 1 dimension N),
then the raw bytes.

Protocol: the images of `normal_class` are split with a seeded permutation into a training part
(`train_fraction` of them) and a held-out normal test part; the test set is the held-out normal
images (label 0) plus every image of the other nine digits (label 1, defect type "digit_<d>").
"""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from pathlib import Path

import numpy as np

from latentad.data.base import ImageSet, Split, array_record
from latentad.data.folder import split_indices
from latentad.errors import ConfigError, DataError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Read an idx file of unsigned bytes (gzip or plain) into an array of the header's shape."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip file ({exc})") from None
    if len(raw) < 4:
        raise DataError(f"{path}: truncated idx file ({len(raw)} bytes, no header)")
    found = struct.unpack(">I", raw[:4])[0]
    if found != magic:
        kind = "images" if magic == IMAGES_MAGIC else "labels"
        raise DataError(f"{path}: not an idx {kind} file (magic {found}, expected {magic})")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated idx header ({len(raw)} bytes, need {header})")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "trailing data after the"
        raise DataError(
            f"{path}: {problem} idx data (header says {'x'.join(map(str, shape))}, "
            f"file has {len(raw)} bytes, expected {expected})"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def labels_path_for(images: Path) -> Path:
    """t10k-images-idx3-ubyte.gz -> t10k-labels-idx1-ubyte.gz (same folder)."""
    name = images.name
    if "images-idx3" in name:
        return images.with_name(name.replace("images-idx3", "labels-idx1"))
    if "images" in name:
        return images.with_name(name.replace("images", "labels"))
    raise DataError(f"{images}: cannot derive the labels file from this name (pass labels_gz)")


def _split_name(images: Path) -> str:
    m = re.match(r"(.+?)[-.]images", images.name)
    return m.group(1) if m else images.name.split(".")[0]


def load_mnist(
    images_gz: str | Path,
    labels_gz: str | Path | None = None,
    normal_class: int = 0,
    seed: int = 0,
    train_fraction: float = 0.8,
    size: int | None = None,
) -> Split:
    """One-vs-rest MNIST split from an idx images file and its labels file (see module docstring).

    `size` None keeps 28x28. Records are named "mnist/<split>/<index:06d>" (index into the file).
    """
    images_path = Path(images_gz)
    labels_path = Path(labels_gz) if labels_gz is not None else labels_path_for(images_path)
    if isinstance(normal_class, bool) or not isinstance(normal_class, int | np.integer) \
            or not 0 <= int(normal_class) <= 9:
        raise ConfigError(f"normal_class must be a digit 0..9 for MNIST, got {normal_class!r}")
    normal_class = int(normal_class)
    if not 0.0 < train_fraction <= 1.0:
        raise ConfigError(f"train_fraction must be in (0, 1], got {train_fraction}")
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(
            f"{labels_path}: {len(labels)} labels but {images_path.name} has {len(images)} images"
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"{labels_path}: label {int(labels.max())} is not a digit 0..9")

    normal_idx = np.flatnonzero(labels == normal_class)
    if len(normal_idx) == 0:
        raise DataError(f"{labels_path}: no images of digit {normal_class}")
    n_train = max(1, int(round(train_fraction * len(normal_idx))))
    train_pos, held_pos = split_indices(len(normal_idx), n_train, seed)
    train_idx, held_idx = normal_idx[train_pos], normal_idx[held_pos]
    other_idx = np.flatnonzero(labels != normal_class)
    split_name = _split_name(images_path)

    def record(i: int, label: int):
        kind = "good" if label == 0 else f"digit_{int(labels[i])}"
        return array_record(f"mnist/{split_name}/{i:06d}", images[i], label, kind)

    train = ImageSet([record(i, 0) for i in train_idx], size, 1, False, f"mnist/{split_name}/train")
    test_idx = np.sort(np.concatenate([held_idx, other_idx]))
    test = ImageSet(
        [record(i, 0 if labels[i] == normal_class else 1) for i in test_idx],
        size, 1, False, f"mnist/{split_name}/test",
    )
    info = {
        "format": "mnist",
        "images": str(images_path.resolve()),
        "labels": str(labels_path.resolve()),
        "normal_class": normal_class,
        "seed": seed,
        "train_fraction": train_fraction,
        "split": "one-vs-rest: numpy default_rng(seed).permutation over the normal digit's images (file "
                 "order); the first round(train_fraction * n) train, the rest are test normals; test = "
                 "held-out normals + all other digits",
        "n_train": len(train),
        "n_test": len(test),
        "n_test_normal": len(held_idx),
        "n_test_anomalous": len(other_idx),
    }
    return Split(train, test, info)
