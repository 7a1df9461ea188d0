"""One entry point for every data set format: `open_dataset(path, format="auto", size, **options)`.

Auto-detection, in this order:

- "elpv": the literal path "elpv" (the installed elpv-dataset package);
- "synthetic": the literal path "synthetic" (generated in memory);
- "mnist": an idx images file, or a folder holding t10k-images-idx3-ubyte(.gz) / train-images-...;
- "mvtec": a folder with train/good;
- "cifar10": a folder with cifar-10-batches-py/ or data_batch_1 (the python version);
- "ucsd": a folder with UCSDped1/ (or Train/ + Test/ clip folders);
- "deeppcb": a folder with [PCBData/]groupNNNNN/NNNNN/*_temp.jpg (DeepPCB's published layout);
- "folder": a folder with a `normal` subfolder (or the one named by the `normal` option).

CIFAR-10 as class folders (train/<class>/, test/<class>/) is read only with format="cifar10", and
"synthetic" with a path writes the data set there in the MVTec layout. Options are passed to the
loader (normal_class, seed, cell_type, limit, ...); an option the loader does not take is refused.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from latentad.config import coerce_text
from latentad.data.base import Split
from latentad.errors import ConfigError, DataError

FORMATS = ("mvtec", "folder", "mnist", "cifar10", "elpv", "ucsd", "deeppcb", "synthetic")
MNIST_NAMES = ("t10k-images-idx3-ubyte", "train-images-idx3-ubyte")
TRIED = (
    "mvtec (train/good), mnist (idx file or t10k-images-idx3-ubyte.gz), "
    "cifar10 (cifar-10-batches-py or data_batch_1), ucsd (UCSDped1 or Train/+Test/), "
    "deeppcb (PCBData/groupNNNNN/), folder (normal/)"
)


def _mnist_file(path: Path) -> Path | None:
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(4)
        gzipped_images = head[:2] == b"\x1f\x8b" and "images" in path.name
        if "idx3" in path.name or head == b"\x00\x00\x08\x03" or gzipped_images:
            return path
        return None
    if path.is_dir():
        for name in MNIST_NAMES:
            for candidate in (path / f"{name}.gz", path / name):
                if candidate.is_file():
                    return candidate
    return None


def detect_format(path: str | Path, normal: str = "normal") -> str:
    """The format name for `path` (see the module docstring), or a DataError naming what was tried."""
    text = str(path)
    if text in ("elpv", "synthetic") and not Path(text).exists():
        return text
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: data path not found")
    if _mnist_file(p) is not None:
        return "mnist"
    if p.is_file():
        raise DataError(f"{p}: a file, but not an MNIST idx images file (other formats are folders)")
    from latentad.data.cifar import find_batches_dir
    from latentad.data.deeppcb import find_pcb_root
    from latentad.data.ucsd import find_ucsd_dir

    if (p / "train" / "good").is_dir():
        return "mvtec"
    if find_batches_dir(p) is not None:
        return "cifar10"
    if find_ucsd_dir(p, "UCSDped1") is not None:
        return "ucsd"
    if find_pcb_root(p) is not None:
        return "deeppcb"
    if (p / normal).is_dir():
        return "folder"
    raise DataError(f"{p}: no known data set layout (tried {TRIED}; or give the format)")


def _loader(fmt: str) -> Callable[..., Split]:
    if fmt == "mvtec":
        from latentad.data.mvtec import load_mvtec

        return load_mvtec
    if fmt == "folder":
        from latentad.data.folder import load_folder

        return load_folder
    if fmt == "mnist":
        from latentad.data.mnist import load_mnist

        return load_mnist
    if fmt == "cifar10":
        from latentad.data.cifar import load_cifar10

        return load_cifar10
    if fmt == "elpv":
        from latentad.data.elpv import load_elpv

        return load_elpv
    if fmt == "ucsd":
        from latentad.data.ucsd import load_ucsd_ped1

        return load_ucsd_ped1
    if fmt == "deeppcb":
        from latentad.data.deeppcb import load_deeppcb

        return load_deeppcb
    from latentad.data.synthetic import make_synthetic

    return make_synthetic


def _check_options(fmt: str, fn: Callable[..., Split], options: dict) -> dict:
    """Refuse options the loader does not take; give each the type the loader's signature declares
    (text from `-d key=value` is parsed by that type, so `-d normal=1` stays the folder name "1")."""
    params = inspect.signature(fn).parameters
    hidden = ("root", "images_gz", "size")
    unknown = sorted(k for k in options if k not in params or k in hidden)
    if unknown:
        allowed = [k for k in params if k not in hidden]
        raise ConfigError(
            f"option {unknown[0]!r} does not apply to format {fmt} "
            f"(its options: {', '.join(allowed) if allowed else 'none'})"
        )
    hints = typing.get_type_hints(fn)
    return {k: coerce_text(v, hints.get(k, Any), k) if isinstance(v, str) else v for k, v in options.items()}


def open_dataset(path: str | Path, format: str = "auto", size: int | None = 256, **options) -> Split:
    """Open a data set as a train/test `Split`, detecting its format unless `format` names one.

    `size` is the side images are resized to (None keeps the original size). `options` go to the
    format's loader, e.g. normal_class / seed for mnist and cifar10, cell_type / partial / limit for
    elpv, normal / abnormal / test_fraction for folder.
    """
    if format != "auto" and format not in FORMATS:
        raise ConfigError(f"unknown data format {format!r} (known: auto, {', '.join(FORMATS)})")
    fmt = detect_format(path, options.get("normal", "normal")) if format == "auto" else format
    fn = _loader(fmt)
    options = _check_options(fmt, fn, options)
    p = Path(path)
    if fmt == "elpv":
        if str(path) != "elpv":
            options.setdefault("data_dir", p)
        return fn(size=size, **options)
    if fmt == "synthetic":
        root = None if str(path) == "synthetic" and not p.exists() else p
        return fn(root=root, size=size if size is not None else 64, **options)
    if fmt == "mnist":
        images = _mnist_file(p)
        if images is None:
            raise DataError(f"{p}: no MNIST idx images file (expected {MNIST_NAMES[0]}.gz)")
        return fn(images, size=size, **options)
    if not p.is_dir():
        raise DataError(f"{p}: data folder not found")
    return fn(p, size=size, **options)
