"""AnomalyDINO (Damm et al., WACV 2025): nearest-neighbour distances between DINOv2 patch features,
built for the few normal images a new line has.

1. Patch features of the self-supervised DINOv2 ViT-S/14 (the weights the project carries, see
   `backbones/dinov2.py`) at 448 px: a 32 x 32 grid of 384-d tokens, L2-normalised, so that the
   distance is the paper's cosine distance. The paper reads the last block; here block 6 by default,
   chosen among blocks 6, 9 and 12 by pixel AUROC on a validation split of bottle's normal training
   images with synthetic defects (`fit --tune`; docs/RESULTS.md). These weights come from a saliency
   model, whose last blocks may lean towards saliency. `--preset paper_recipe`: the last block.
2. Memory bank: every patch of the normal images (no coreset), and with few images (fewer than
   `rotate_below`) their copies rotated by 90, 180 and 270 degrees, as the paper augments its
   reference samples. Beyond `max_candidates` patches a seeded random subset is kept (CPU memory).
3. Scores: a patch's score is its distance to the nearest memory patch (an exact search, one matrix
   product, as in PatchCore); the image score is the mean of the top 1 % patch scores (the paper's
   MSM); the map is upsampled to the input and blurred (sigma 4).

Not implemented from the paper: the zero-shot background masking by the features' first principal
component (the paper switches it per category; here every patch counts). Sizes for 2 CPU cores: 448
px (the paper's smaller resolution; 672 is an option), and a bank capped at 60,000 patches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from latentad.config import AT_LEAST_ONE, NON_NEGATIVE, Bound
from latentad.data.base import ImageSet
from latentad.detectors.pretrained.patchcore import PatchCore, PatchCoreConfig


@dataclass
class DinoKNNConfig(PatchCoreConfig):
    """top_fraction: share of the highest patch scores averaged into the image score; rotate_below:
    with fewer training images than this, rotated copies join the memory bank; augment_to / epochs:
    the bank is read from `epochs` seeded draws of `augment_to` images (None: the training set's
    size), every image past the originals turned by a seeded multiple of 90 degrees (flipped when the
    input is not square), as the paper augments its reference shots."""

    image_size: int | tuple[int, int] = 448
    backbone: str = "dinov2_vits14"
    levels: tuple[str, ...] | None = ("block6",)
    feature_stride: int = 14
    aggregate: int = 1
    embed_dim: int = 0
    coreset_ratio: float = 1.0
    max_memory: int = 60_000
    max_candidates: int = 60_000
    num_neighbors: int = 0
    top_fraction: float = 0.01
    rotate_below: int = 8
    augment_to: int | None = None
    epochs: int = 1
    bounds: ClassVar[dict[str, Bound]] = {**PatchCoreConfig.bounds, "top_fraction": Bound(gt=0, le=1),
                                          "rotate_below": NON_NEGATIVE, "feature_stride": AT_LEAST_ONE,
                                          "augment_to": AT_LEAST_ONE, "epochs": AT_LEAST_ONE}


class DinoKNN(PatchCore):
    """AnomalyDINO (Damm et al. 2025): cosine kNN over DINOv2 patch features, few-shot ready."""

    name = "dino_knn"
    family = "selfsupervised"
    Config = DinoKNNConfig
    map_statistic = "top:0.01"
    preset_notes = {"paper_recipe": "the paper's last block (block12) instead of block6",
                    "paper_672": "the paper's last block at its larger resolution, 672 px (slow on a CPU)"}
    presets: dict[str, dict[str, Any]] = {"paper_recipe": {"levels": ("block12",)},
                                          "paper_672": {"levels": ("block12",), "image_size": 672}}

    def patch_grid(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.normalize(super().patch_grid(feats), dim=1)  # unit vectors: L2 distance ~ cosine distance

    def fit(self, train: ImageSet) -> DinoKNN:
        cfg = self.config
        n = len(train) if isinstance(train, ImageSet) else int(train.shape[0])
        augment = cfg.augment_to is not None or cfg.epochs > 1
        if n < cfg.rotate_below or augment:
            x = torch.cat([b.images for b in train.with_size(self.input_shape, cfg.channels,
                                                             resize=cfg.resize).batches(16)]) \
                if isinstance(train, ImageSet) else train
            if n < cfg.rotate_below and x.shape[2] == x.shape[3]:
                x = torch.cat([torch.rot90(x, k, (2, 3)) for k in range(4)])
            train = augmented_draws(x, cfg.augment_to or x.shape[0], cfg.epochs, cfg.seed) if augment else x
        return super().fit(train)

    def _image_scores(self, patches: torch.Tensor, dist: torch.Tensor, nn_idx: torch.Tensor) -> torch.Tensor:
        """The mean of the top `top_fraction` patch scores (the paper's mean of the top 1 %)."""
        k = max(1, math.ceil(self.config.top_fraction * dist.shape[1]))
        return dist.topk(k, dim=1).values.mean(1)


def augmented_draws(x: torch.Tensor, per_draw: int, draws: int, seed: int) -> torch.Tensor:
    """`draws` x `per_draw` images from `x`: the originals as they are, then seeded orders of the set,
    each of those copies turned by 90, 180 or 270 degrees (flipped if not square)."""
    gen = torch.Generator().manual_seed(seed + 4_242)
    n = x.shape[0]
    order = torch.cat([torch.arange(n)] + [torch.randperm(n, generator=gen)
                                           for _ in range(math.ceil(per_draw * draws / n))])[: per_draw * draws]
    out = []
    for pos, i in enumerate(order.tolist()):
        img = x[i]
        if pos >= n:
            k = int(torch.randint(1, 4, (1,), generator=gen))
            img = torch.rot90(img, k, (1, 2)) if img.shape[1] == img.shape[2] else \
                img.flip([(1,), (2,), (1, 2)][k - 1])
        out.append(img)
    return torch.stack(out)
