"""ELPV solar-cell electroluminescence images (the `elpv-dataset` PyPI package) as an anomaly split.

The package ships `elpv_dataset/data/labels.csv` (whitespace-separated: image path, defect
probability 0 / 0.333 / 0.667 / 1, cell type mono / poly) and `images/cell*.png` (300x300 grayscale).
Only the file names are read here; images are decoded lazily.

Labels: probability 0 is normal, probability 1 is anomalous. The uncertain cells (0.33 and 0.67,
rated "possibly defective" by the annotators) are controlled by `partial`:

- "exclude" (default): left out of both train and test, so the task is "clearly fine vs clearly
  defective" and no uncertain cell counts either way;
- "anomalous": counted as anomalous test images (defect types "defective_p0.33" / "defective_p0.67",
  so per-type results stay separable).

Normal cells are split with a seeded permutation: `train_fraction` of them train, the rest are test
normals; the test set is the test normals plus the anomalous cells. No pixel masks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from latentad.data.base import ImageSet, Split, file_record
from latentad.data.folder import split_indices
from latentad.errors import ConfigError, DataError
from latentad.extras import require

CELL_TYPES = ("mono", "poly", "all")
PARTIAL_CHOICES = ("exclude", "anomalous")
LIMIT_KEYS = ("train", "test_normal", "test_anomalous")


def elpv_data_dir() -> Path:
    """The installed package's data folder (holding labels.csv and images/)."""
    elpv_dataset = require("elpv_dataset", "data", "the ELPV data set")
    return Path(elpv_dataset.__file__).resolve().parent / "data"


def read_elpv_labels(csv_path: Path) -> list[tuple[str, float, str]]:
    """Rows (relative image path, defect probability, cell type) of an ELPV labels.csv."""
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: ELPV labels file not found")
    rows = []
    for lineno, line in enumerate(csv_path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.replace(",", " ").split()
        if not parts:
            continue
        if len(parts) != 3:
            raise DataError(f"{csv_path}:{lineno}: expected 'path probability type', got {line.strip()!r}")
        try:
            prob = float(parts[1])
        except ValueError:
            raise DataError(f"{csv_path}:{lineno}: defect probability {parts[1]!r} is not a number") from None
        if not 0.0 <= prob <= 1.0:
            raise DataError(f"{csv_path}:{lineno}: defect probability {prob} outside [0, 1]")
        if parts[2] not in ("mono", "poly"):
            raise DataError(f"{csv_path}:{lineno}: cell type {parts[2]!r} is not mono or poly")
        rows.append((parts[0], prob, parts[2]))
    if not rows:
        raise DataError(f"{csv_path}: no rows")
    return rows


def _limits(limit: int | dict | None) -> dict[str, int | None]:
    if limit is None:
        return dict.fromkeys(LIMIT_KEYS)
    if isinstance(limit, bool):
        raise ConfigError(f"limit must be an int or a dict, got {limit!r}")
    if isinstance(limit, int):
        if limit < 1:
            raise ConfigError(f"limit must be >= 1, got {limit}")
        return dict.fromkeys(LIMIT_KEYS, limit)
    if isinstance(limit, dict):
        out: dict[str, int | None] = dict.fromkeys(LIMIT_KEYS)
        for key, value in limit.items():
            keys = ("test_normal", "test_anomalous") if key == "test" else (key,)
            if keys[0] not in LIMIT_KEYS:
                raise ConfigError(f"limit key {key!r} unknown (use {', '.join(LIMIT_KEYS)} or test)")
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"limit[{key!r}] must be a positive int, got {value!r}")
            for k in keys:
                out[k] = value
        return out
    raise ConfigError(f"limit must be an int or a dict, got {type(limit).__name__}")


def _cap(items: list, n: int | None, rng: np.random.Generator) -> list:
    if n is None or len(items) <= n:
        return items
    keep = np.sort(rng.choice(len(items), size=n, replace=False))
    return [items[i] for i in keep]


def load_elpv(
    cell_type: str = "mono",
    seed: int = 0,
    train_fraction: float = 0.7,
    partial: str = "exclude",
    limit: int | dict | None = None,
    size: int | None = None,
    data_dir: str | Path | None = None,
) -> Split:
    """ELPV anomaly split (see the module docstring for labels and the `partial` choices).

    `cell_type` is "mono", "poly" or "all". `limit` caps the number of training images and of test
    images per class (normal, anomalous) with a seeded choice, for quick demos: an int caps all
    three, a dict may give "train", "test_normal", "test_anomalous" (or "test" for both).
    `data_dir` points at another copy of the package's data folder (labels.csv + images/).
    `size` None keeps 300x300.
    """
    if cell_type not in CELL_TYPES:
        raise ConfigError(f"cell_type must be one of {', '.join(CELL_TYPES)}, got {cell_type!r}")
    if partial not in PARTIAL_CHOICES:
        raise ConfigError(f"partial must be one of {', '.join(PARTIAL_CHOICES)}, got {partial!r}")
    if not 0.0 < train_fraction < 1.0:
        raise ConfigError(f"train_fraction must be in (0, 1), got {train_fraction}")
    caps = _limits(limit)
    root = Path(data_dir) if data_dir is not None else elpv_data_dir()
    csv_path = root / "labels.csv"
    rows = [r for r in read_elpv_labels(csv_path) if cell_type == "all" or r[2] == cell_type]

    normal, anomalous = [], []
    n_partial = 0
    for rel, prob, _ in rows:
        if prob == 0.0:
            normal.append((rel, "good"))
        elif abs(prob - 1.0) < 1e-6:
            anomalous.append((rel, "defective"))
        else:
            n_partial += 1
            if partial == "anomalous":
                anomalous.append((rel, f"defective_p{prob:.2f}"))
    if not normal:
        raise DataError(f"{csv_path}: no normal ({cell_type}) cells with defect probability 0")

    n_train = min(max(1, int(round(train_fraction * len(normal)))), len(normal))
    train_pos, test_pos = split_indices(len(normal), n_train, seed)
    rng = np.random.default_rng([seed, 1])  # a stream separate from the split permutation
    train_items = _cap([normal[i] for i in train_pos], caps["train"], rng)
    test_normal = _cap([normal[i] for i in test_pos], caps["test_normal"], rng)
    test_anomalous = _cap(anomalous, caps["test_anomalous"], rng)

    def record(rel: str, label: int, kind: str):
        path = root / rel
        return file_record(path, label, kind, "L", None, False)

    train = ImageSet([record(r, 0, k) for r, k in train_items], size, 1, False, f"elpv/{cell_type}/train")
    test = ImageSet(
        [record(r, 0, k) for r, k in test_normal] + [record(r, 1, k) for r, k in test_anomalous],
        size, 1, False, f"elpv/{cell_type}/test",
    )
    info = {
        "format": "elpv",
        "root": str(root),
        "cell_type": cell_type,
        "seed": seed,
        "train_fraction": train_fraction,
        "partial": partial,
        "limit": caps if limit is not None else None,
        "split": "normal = probability 0, anomalous = probability 1 (0.33/0.67 per `partial`); numpy "
                 "default_rng(seed).permutation over the normal cells in labels.csv order, the first "
                 "round(train_fraction * n) train; limit picks with default_rng([seed, 1])",
        "n_normal_cells": len(normal),
        "n_partial_cells": n_partial,
        "n_train": len(train),
        "n_test": len(test),
        "n_test_normal": len(test_normal),
        "n_test_anomalous": len(test_anomalous),
    }
    return Split(train, test, info)
