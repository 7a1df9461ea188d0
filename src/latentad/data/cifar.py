"""CIFAR-10 as a one-vs-rest anomaly detection split, from either published layout.

(a) The official "python version" (`cifar-10-python.tar.gz` extracted):

    <root>/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch, batches.meta

    (or `root` is the cifar-10-batches-py folder itself). Each batch is a Python pickle of a dict
    {b"data": uint8 array (N, 3072), b"labels": [int], b"batch_label": bytes, b"filenames": [bytes]};
    a row of b"data" holds the red, then green, then blue 32x32 plane, each row-major.

(b) Class folders of images:

    <root>/train/<class>/*.png, <root>/test/<class>/*.png

    with classes named airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck or 0..9.

Protocol (standard one-vs-rest, Ruff et al. 2018; the VQ-VAE anomaly detection paper): the training
set is the normal class's images of the training split (5,000 in the full set); the test set is all
test images (10,000), the normal class labelled 0, the nine others 1 (defect type = class name).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from latentad.data.base import ImageSet, Split, array_record, file_record, list_images
from latentad.errors import ConfigError, DataError

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"


def _allowed_globals() -> dict[tuple[str, str], object]:
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the numpy globals the official CIFAR files contain.

    Unpickling can call any importable function; refusing every other global means a file that is
    not a genuine CIFAR batch cannot run code, it just fails with a DataError.
    """

    def __init__(self, file, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._path}: refuses to unpickle global {module}.{name} (not a CIFAR-10 batch file)"
            ) from None


def read_cifar_batch(path: str | Path) -> dict:
    """Unpickle one batch file of the official CIFAR-10 python version.

    This reads the published CIFAR format only (pickles written by the CIFAR authors); latentad itself
    never writes pickle. The restricted unpickler allows just `numpy.core.multiarray._reconstruct`
    (or `numpy._core...`), `numpy.ndarray` and `numpy.dtype` and raises DataError for any other
    global, so a tampered file cannot execute code.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (CIFAR-10 batch)")
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, path).load()
    except DataError:
        raise
    except Exception as exc:  # pickle raises many kinds on corrupt input
        raise DataError(f"{path}: not a readable CIFAR-10 batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a CIFAR-10 batch (holds a {type(obj).__name__}, expected a dict)")
    return obj


def _batch_arrays(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images N x 32 x 32 x 3 uint8, labels N int64, filenames) of one batch file."""
    batch = read_cifar_batch(path)
    for key in (b"data", b"labels"):
        if key not in batch:
            raise DataError(f"{path}: no {key.decode()!r} entry (not a CIFAR-10 batch)")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: data is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
    if labels.shape != (len(data),):
        raise DataError(f"{path}: {labels.size} labels for {len(data)} images")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: label {int(labels.max())} outside 0..9")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in batch.get(b"filenames", [])]
    if len(names) != len(data):
        names = [f"{i:05d}" for i in range(len(data))]
    return images, labels, names


def _class_names(batch_dir: Path) -> tuple[str, ...]:
    meta = batch_dir / "batches.meta"
    if meta.is_file():
        names = read_cifar_batch(meta).get(b"label_names")
        if isinstance(names, list) and len(names) == 10:
            return tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names)
    return CIFAR10_CLASSES


def _normal_index(normal_class: int | str, names: tuple[str, ...]) -> int:
    if isinstance(normal_class, str):
        if normal_class.isdigit():
            normal_class = int(normal_class)
        elif normal_class in names:
            return names.index(normal_class)
        else:
            raise ConfigError(f"normal_class {normal_class!r} is not a CIFAR-10 class ({', '.join(names)})")
    if isinstance(normal_class, bool) or not isinstance(normal_class, int | np.integer) \
            or not 0 <= int(normal_class) <= 9:
        raise ConfigError(f"normal_class must be 0..9 or a class name, got {normal_class!r}")
    return int(normal_class)


def find_batches_dir(root: Path) -> Path | None:
    """The folder holding data_batch_1 (root itself or root/cifar-10-batches-py), else None."""
    for d in (root, root / "cifar-10-batches-py"):
        if (d / "data_batch_1").is_file() or (d / TEST_BATCH).is_file():
            return d
    return None


def load_cifar10(
    root: str | Path, normal_class: int | str = 0, seed: int = 0, size: int | None = None
) -> Split:
    """One-vs-rest CIFAR-10 split from either published layout (see the module docstring).

    `normal_class` is an index 0..9 or a class name; `size` None keeps 32x32. The split is fixed by
    the data set (`seed` is recorded in `info` but nothing here is random).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    batch_dir = find_batches_dir(root)
    if batch_dir is not None:
        return _load_batches(batch_dir, normal_class, seed, size)
    if (root / "train").is_dir() and (root / "test").is_dir():
        return _load_class_folders(root, normal_class, seed, size)
    raise DataError(
        f"{root}: no CIFAR-10 layout (expected cifar-10-batches-py/ with data_batch_1..5 and test_batch, "
        "or train/<class>/ and test/<class>/ image folders)"
    )


def _load_batches(batch_dir: Path, normal_class: int | str, seed: int, size: int | None) -> Split:
    names = _class_names(batch_dir)
    k = _normal_index(normal_class, names)
    train_records = []
    n_seen = 0
    for batch_name in TRAIN_BATCHES:
        images, labels, files = _batch_arrays(batch_dir / batch_name)
        n_seen += len(images)
        keep = np.flatnonzero(labels == k)
        normal_images = np.ascontiguousarray(images[keep])  # drop the other classes' pixels
        train_records += [
            array_record(f"cifar10/{batch_name}/{i:05d}/{files[i]}", img, 0, "good")
            for i, img in zip(keep, normal_images, strict=True)
        ]
    images, labels, files = _batch_arrays(batch_dir / TEST_BATCH)
    images = np.ascontiguousarray(images)
    test_records = [
        array_record(
            f"cifar10/{TEST_BATCH}/{i:05d}/{files[i]}", images[i], int(labels[i] != k),
            "good" if labels[i] == k else names[labels[i]],
        )
        for i in range(len(images))
    ]
    train = ImageSet(train_records, size, 3, False, f"cifar10/{names[k]}/train")
    test = ImageSet(test_records, size, 3, False, f"cifar10/{names[k]}/test")
    if len(train) == 0:
        raise DataError(f"{batch_dir}: no training images of class {names[k]!r} in the data batches")
    return Split(train, test, _info("python-batches", batch_dir, k, names, seed, train, test, n_seen))


def _load_class_folders(root: Path, normal_class: int | str, seed: int, size: int | None) -> Split:
    folders: dict[str, dict[int, Path]] = {}
    for part in ("train", "test"):
        found: dict[int, Path] = {}
        for sub in sorted(p for p in (root / part).iterdir() if p.is_dir() and not p.name.startswith(".")):
            if sub.name in CIFAR10_CLASSES:
                idx = CIFAR10_CLASSES.index(sub.name)
            elif sub.name.isdigit() and int(sub.name) <= 9:
                idx = int(sub.name)
            else:
                raise DataError(f"{sub}: not a CIFAR-10 class folder (expected a class name or 0..9)")
            if idx in found:
                raise DataError(f"{sub}: class {CIFAR10_CLASSES[idx]} also in {found[idx].name}/")
            found[idx] = sub
        folders[part] = found
    k = _normal_index(normal_class, CIFAR10_CLASSES)
    if k not in folders["train"]:
        raise DataError(f"{root / 'train'}: no folder for the normal class {CIFAR10_CLASSES[k]} (or {k})")
    train_files = list_images(folders["train"][k])
    if not train_files:
        raise DataError(f"{folders['train'][k]}: no images in the normal class folder")
    train = ImageSet(
        [file_record(p, 0, "good", "RGB", None, False) for p in train_files],
        size, 3, False, f"cifar10/{CIFAR10_CLASSES[k]}/train",
    )
    test_records = []
    for idx, folder in sorted(folders["test"].items()):
        kind = "good" if idx == k else CIFAR10_CLASSES[idx]
        test_records += [file_record(p, int(idx != k), kind, "RGB", None, False) for p in list_images(folder)]
    if not test_records:
        raise DataError(f"{root / 'test'}: no test images")
    test = ImageSet(test_records, size, 3, False, f"cifar10/{CIFAR10_CLASSES[k]}/test")
    n_seen = sum(len(list_images(f)) for f in folders["train"].values())
    return Split(train, test, _info("class-folders", root, k, CIFAR10_CLASSES, seed, train, test, n_seen))


def _info(layout: str, root: Path, k: int, names: tuple[str, ...], seed: int,
          train: ImageSet, test: ImageSet, n_train_all: int) -> dict:
    n_test_normal = int((test.labels == 0).sum())
    return {
        "format": "cifar10",
        "layout": layout,
        "root": str(root.resolve()),
        "normal_class": k,
        "normal_class_name": names[k],
        "seed": seed,
        "split": "one-vs-rest: train = the normal class's training images; test = all test images, "
                 "normal class 0, others 1",
        "n_train_images_all_classes": n_train_all,
        "n_train": len(train),
        "n_test": len(test),
        "n_test_normal": n_test_normal,
        "n_test_anomalous": len(test) - n_test_normal,
    }
