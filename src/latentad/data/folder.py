"""A plain folder of classes: one folder of normal images, one folder per abnormal class.

    <root>/<normal>/*.png                       normal images (split into train and test-normal)
    <root>/<class>/*.png                        every other subfolder is an abnormal class
    <root>/<masks>/<class>/<stem>.png           optional pixel masks (or <stem>_mask.png)

The normal images are split with a seeded permutation: `test_fraction` of them go to the test set,
the rest are the training set. The test set is those held-out normal images plus every abnormal image.
Masks are used when the masks folder has a subfolder for every abnormal class; a class folder there
must then hold a mask for each of its images.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from latentad.data.base import ImageSet, Split, file_record, list_images, majority_mode
from latentad.errors import ConfigError, DataError

MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".jpg")


def split_indices(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of range(n): (the first k indices of a permutation, the other n - k), each sorted.

    The permutation is `numpy.random.default_rng(seed).permutation(n)`, so a split is reproduced by
    (n, k, seed) alone.
    """
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:k]), np.sort(perm[k:])


def load_folder(
    root: str | Path,
    normal: str = "normal",
    abnormal: Sequence[str] | str | None = None,
    masks: str = "masks",
    test_fraction: float = 0.5,
    seed: int = 0,
    size: int | None = 256,
    recursive: bool = True,
) -> Split:
    """Read a folder-of-classes data set lazily (see the module docstring for the layout).

    `abnormal` names the abnormal class folders (default: every subfolder except `normal` and
    `masks`). At least one normal image always stays in the training set. Class folders are read with
    their sub-folders (`recursive`); a mask then sits at the same relative place under masks/<class>/.
    Folder names are names, even when they are numbers (`normal="1"`).
    """
    root = Path(root)
    normal, masks = str(normal), str(masks)
    if abnormal is not None and not isinstance(abnormal, str):
        abnormal = [str(a) for a in abnormal]
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in [0, 1), got {test_fraction}")
    normal_dir = root / normal
    if not normal_dir.is_dir():
        raise DataError(f"{normal_dir}: missing normal-image folder (a folder data set needs {normal}/)")
    if abnormal is None:
        classes = sorted(
            p.name for p in root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and p.name not in (normal, masks)
        )
    else:
        classes = [abnormal] if isinstance(abnormal, str) else list(abnormal)
        for name in classes:
            if name in (normal, masks):
                raise ConfigError(f"abnormal class {name!r} is also the normal or the masks folder")
            if not (root / name).is_dir():
                raise DataError(f"{root / name}: abnormal class folder not found")
    if not classes:
        raise DataError(f"{root}: no abnormal class folder next to {normal}/ (need at least one)")

    normal_files = list_images(normal_dir, recursive)
    if not normal_files:
        raise DataError(f"{normal_dir}: no images in the normal folder")
    groups: dict[str, list[Path]] = {}
    for name in classes:
        files = list_images(root / name, recursive)
        if not files:
            raise DataError(f"{root / name}: no images in the abnormal class folder")
        groups[name] = files

    mask_root = root / masks
    mask_paths: dict[Path, Path] = {}
    with_masks = False
    if mask_root.is_dir():
        have = [c for c in classes if (mask_root / c).is_dir()]
        for name in have:
            for p in groups[name]:
                mask_paths[p] = _find_mask(mask_root / name / p.relative_to(root / name).parent, p)
        missing = [c for c in classes if c not in have]
        if have and missing:
            warnings.warn(
                f"{mask_root}: no mask folder for class {missing[0]!r} ({len(missing)} class(es)); "
                "pixel masks are not used",
                stacklevel=2,
            )
        with_masks = bool(have) and not missing

    n_test = min(int(round(test_fraction * len(normal_files))), len(normal_files) - 1)
    test_idx, train_idx = split_indices(len(normal_files), n_test, seed)
    train_files = [normal_files[i] for i in train_idx]
    test_normal = [normal_files[i] for i in test_idx]

    mode = majority_mode(normal_files + [f for files in groups.values() for f in files])
    channels = 1 if mode == "L" else 3
    train = ImageSet(
        [file_record(p, 0, "good", mode, None, False) for p in train_files],
        size, channels, False, f"{root.name}/train",
    )
    records = [file_record(p, 0, "good", mode, None, with_masks) for p in test_normal]
    for name, files in groups.items():
        records += [file_record(p, 1, name, mode, mask_paths.get(p), with_masks) for p in files]
    test = ImageSet(records, size, channels, with_masks, f"{root.name}/test")
    info = {
        "format": "folder",
        "root": str(root.resolve()),
        "normal": normal,
        "abnormal": classes,
        "masks": with_masks,
        "mode": mode,
        "test_fraction": test_fraction,
        "seed": seed,
        "recursive": recursive,
        "split": "numpy default_rng(seed).permutation over the sorted normal files; first "
                 "round(test_fraction * n) go to the test set",
        "n_train": len(train),
        "n_test": len(test),
        "n_test_normal": len(test_normal),
        "n_test_anomalous": len(test) - len(test_normal),
        "test_normal_files": [str(p.relative_to(normal_dir)) for p in test_normal],
    }
    return Split(train, test, info)


def _find_mask(folder: Path, image: Path) -> Path:
    for suffix in MASK_SUFFIXES:
        for name in (f"{image.stem}{suffix}", f"{image.stem}_mask{suffix}"):
            if (folder / name).is_file():
                return folder / name
    raise DataError(f"{image}: no mask {folder / (image.stem + '.png')} (or {image.stem}_mask.png)")
