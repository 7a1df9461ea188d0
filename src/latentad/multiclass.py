"""One model for several products: `fit --data A --data B ...`.

Every method fits one model on the union of the categories' normal images (Dinomaly natively; the
memory-bank methods then hold one shared bank, the Gaussian ones shared statistics). Calibration
stays per category: each category's held-out normal images set its own threshold
(RUN/calibrations/<name>.json), and `evaluate --data DIR` on such a run scores DIR's category with
that threshold; without `--data` it evaluates every category and reports their mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from latentad.data.base import ImageSet, Split
from latentad.errors import ConfigError, DataError


@dataclass
class Category:
    name: str
    path: str
    split: Split


def category_name(path: str) -> str:
    return Path(path).resolve().name if Path(path).exists() else str(path)


def open_categories(paths: list[str], fmt: str, options: dict) -> list[Category]:
    """Each data set as a category named by its folder; two of the same name, or one without normal
    training images, refused in one line."""
    from latentad.runs import open_split

    cats = []
    for path in paths:
        name = category_name(path)
        if any(c.name == name for c in cats):
            raise ConfigError(f"--data {path}: a second category named {name!r} (each product needs its own "
                              "folder name)")
        split = open_split(path, fmt, options)
        if len(split.train) == 0:
            raise DataError(f"--data {path}: category {name!r} has no normal training images")
        cats.append(Category(name, path, split))
    return cats


def union(sets: list[ImageSet], name: str) -> ImageSet:
    """One image set over the records of `sets` (colour when any of them is)."""
    first = sets[0]
    return ImageSet([r for s in sets for r in s.records], first.size, max(s.channels for s in sets), False, name,
                    resize=first.resize)


def find_category(config: dict, data: str) -> str:
    """The category of a multi-class run that `data` names (its path, or its folder name)."""
    cats = config.get("categories", [])
    for c in cats:
        if str(Path(c["path"]).resolve()) == str(Path(data).resolve()) or c["name"] == data:
            return c["name"]
    known = ", ".join(c["name"] for c in cats)
    raise ConfigError(f"--data {data}: not a category of this multi-class run (its categories: {known})")
