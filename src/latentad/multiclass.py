"""One model for several products: `fit --data A --data B ...`.

Every method fits one model on the union of the categories' normal images (Dinomaly natively; the
memory-bank methods then hold one shared bank, the Gaussian ones shared statistics). Calibration
stays per category: each category's held-out normal images set its own threshold
(RUN/calibrations/<name>.json), and `evaluate --data DIR` on such a run scores DIR's category with
that threshold; without `--data` it evaluates every category and reports their mean. An image
without a product label is routed to the product of its nearest routing example; the router also
keeps each product's routing radius, so the service can answer an image that resembles no product
as routed nowhere instead of judging it by a stranger's threshold.
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
    from latentad.data.open import open_dataset

    cats = []
    for path in paths:
        name = category_name(path)
        if any(c.name == name for c in cats):
            raise ConfigError(f"--data {path}: a second category named {name!r} (each product needs its own "
                              "folder name)")
        split = open_dataset(path, format=fmt, size=None, **options)
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


THUMB = 24  # side of the thumbnails products are told apart by
PER_CATEGORY = 64  # fitting images per category kept as routing examples
ROUTE_SLACK = 3.0  # an unseen image of a category lies this much further out than its examples do at most
ROUTE_FLOOR = 0.25  # the smallest routing radius (1 - cosine): a tight product still takes its defects
ROUTE_NOISE = 0.95  # the radius stays below this share of the distance at which random thumbnails lie


def thumbnails(x):
    """(B,C,H,W) in [0,1] -> (B, 3*THUMB*THUMB) unit vectors: what an image looks like at a glance."""
    import torch.nn.functional as F

    x = x.float()
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    t = F.adaptive_avg_pool2d(x, (THUMB, THUMB)).flatten(1)
    return F.normalize(t - t.mean(1, keepdim=True), dim=1)


def fit_router(fit_sets: dict[str, ImageSet], seed: int):
    """Routing examples: up to PER_CATEGORY thumbnails of each category's fitting images, their labels,
    and each category's routing radius (`route_radius`)."""
    import numpy as np
    import torch

    feats, labels = [], []
    for k, images in enumerate(fit_sets.values()):
        pick = np.random.default_rng([seed, k]).permutation(len(images))[:PER_CATEGORY].tolist()
        batch = images.subset(sorted(pick)).with_size(64, 3).load_all().images
        feats.append(thumbnails(batch))
        labels.append(torch.full((len(pick),), k, dtype=torch.int64))
    return {"thumbs": torch.cat(feats), "labels": torch.cat(labels),
            "radius": torch.tensor([route_radius(f) for f in feats], dtype=torch.float32)}


def route_radius(thumbs) -> float:
    """How far (1 - cosine) from its nearest routing example an image of this category may lie:
    ROUTE_SLACK times the farthest leave-one-out nearest distance among the examples (at least
    ROUTE_FLOOR), but short of where structureless images fall: ROUTE_NOISE of the nearest distance
    of 512 seeded random thumbnails, so that noise, a blank frame or another product is not routed."""
    import torch
    import torch.nn.functional as F

    noise = F.normalize(torch.randn(512, thumbs.shape[1], generator=torch.Generator().manual_seed(0)), dim=1)
    ceiling = ROUTE_NOISE * float((1.0 - (noise @ thumbs.T).max(1).values).min())
    if len(thumbs) < 2:
        return ceiling
    sims = thumbs @ thumbs.T
    sims.fill_diagonal_(-2.0)
    spread = float((1.0 - sims.max(1).values).max())
    return min(max(ROUTE_SLACK * spread, ROUTE_FLOOR), ceiling)


def route(router: dict, x) -> list[int]:
    """Each image's category index: its nearest routing example's (cosine on thumbnails)."""
    sims = thumbnails(x.cpu()) @ router["thumbs"].T
    return router["labels"][sims.argmax(1)].tolist()


def route_known(router: dict, x) -> list[tuple[int, float, bool]]:
    """Each image's nearest category index, its distance (1 - cosine) to that category's nearest
    example, and whether it lies within the category's routing radius (routers fitted before the
    radius existed accept every image)."""
    sims = thumbnails(x.cpu()) @ router["thumbs"].T
    best = sims.max(1)
    labels = router["labels"][best.indices].tolist()
    dist = (1.0 - best.values).tolist()
    radius = router.get("radius")
    return [(k, d, radius is None or d <= float(radius[k])) for k, d in zip(labels, dist, strict=True)]
