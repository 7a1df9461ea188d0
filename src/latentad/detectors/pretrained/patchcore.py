"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022).

1. Locally aware patch features: each level's feature map is averaged over 3x3 neighbourhoods, the
   levels are brought to one grid (stride `feature_stride` of the input) and concatenated.
2. Memory bank: every training patch, reduced by greedy coreset selection (k-center greedy, run on
   a random projection of the features to `projection_dim` dimensions, starting from a random patch)
   to `coreset_ratio` of the patches, at most `max_memory`.
3. Scoring: a test patch's score is the L2 distance to its nearest memory item (faiss IndexFlatL2).
   The map is upsampled to the input size and blurred (Gaussian, sigma 4). The image score is the
   largest patch score s*, re-weighted as in the paper (eq. 7):
   s = (1 - exp||m* - m_test|| / sum_{m in N_b(m*)} exp||m - m_test||) * s*, where m_test is the
   max-scoring test patch, m* its nearest memory item and N_b(m*) the b nearest memory items of m*.

Differences from the paper, for CPU speed: a small ImageNet backbone (EfficientNet-Lite0 levels
stage2-4 instead of WideResNet-50 layer2-3), no adaptive-average-pooling of the channels to 1024 (the
features are only 176-d), and by default a 1 % coreset capped at `max_memory` (the paper reports 1 %
to be nearly as good as 10 %, Table 2). The `paper` preset uses 10 % and 128-d projection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from latentad.data.base import ImageSet
from latentad.detectors.base import Images, Latents, Prediction
from latentad.detectors.pretrained.common import PretrainedConfig, PretrainedDetector, to_grid
from latentad.errors import ConfigError


@dataclass
class PatchCoreConfig(PretrainedConfig):
    """feature_stride: patch grid stride (input pixels per patch); aggregate: neighbourhood size;
    coreset_ratio / max_memory: memory bank size; projection_dim: random projection used by the
    coreset search (0 = none); num_neighbors: b of the image-score re-weighting (0 = plain max);
    sigma: Gaussian blur of the map in input pixels; max_candidates: training patches kept before the
    coreset (a seeded random subset beyond it, bounding memory)."""

    levels: tuple[str, ...] = ("stage2", "stage3", "stage4")
    feature_stride: int = 8
    aggregate: int = 3
    coreset_ratio: float = 0.01
    max_memory: int = 4096
    projection_dim: int = 64
    num_neighbors: int = 9
    sigma: float = 4.0
    max_candidates: int = 500_000


def greedy_coreset(x: torch.Tensor, n: int, start: int = 0) -> torch.Tensor:
    """k-center greedy: indices of `n` rows of `x` (N,d), each the point farthest from those chosen.

    Deterministic given `start`; ties go to the lowest index.
    """
    total = x.shape[0]
    n = min(n, total)
    x = x.float().contiguous()
    sq = (x * x).sum(1)
    min_d = torch.full((total,), float("inf"))
    chosen = torch.empty(n, dtype=torch.long)
    j = int(start)
    dist = torch.empty(total)
    for i in range(n):
        chosen[i] = j
        if i == n - 1:
            break
        torch.addmv(sq, x, x[j], alpha=-2.0, out=dist)  # ||x||^2 - 2 x.c (+ ||c||^2 below)
        dist += sq[j]
        torch.minimum(min_d, dist, out=min_d)
        min_d[j] = -1.0  # numerically 0 anyway; never pick a chosen point again
        j = int(torch.argmax(min_d))
    return chosen


class PatchCore(PretrainedDetector):
    name = "patchcore"
    Config = PatchCoreConfig
    presets: dict[str, dict[str, Any]] = {
        # Close to the paper's setup: 10 % coreset (capped), 128-d projection, larger input.
        "paper": {"coreset_ratio": 0.1, "max_memory": 40_000, "projection_dim": 128, "image_size": 256},
        # Faster: no stride-4 level, small bank.
        "fast": {"levels": ("stage3", "stage4"), "max_memory": 1024},
    }

    def __init__(self, config: PatchCoreConfig | None = None, backbone=None, **overrides: Any) -> None:
        super().__init__(config, backbone, **overrides)
        self.memory: torch.Tensor | None = None
        self._index = None

    # -- features -------------------------------------------------------------------------------
    def _patch_grids(self, images: Images, progress: str | None = None):
        cfg = self.config
        grid = self.grid_size(cfg.feature_stride)
        for _, feats in self.iter_features(images, progress):
            yield to_grid(feats, cfg.levels, grid, cfg.aggregate)  # (B,D,g,g)

    # -- fit ------------------------------------------------------------------------------------
    def fit(self, train: ImageSet) -> PatchCore:
        cfg = self.config
        if cfg.coreset_ratio <= 0 or cfg.max_memory < 1:
            raise ConfigError("patchcore: coreset_ratio must be > 0 and max_memory >= 1")
        self.seed_everything()
        gen = torch.Generator().manual_seed(cfg.seed)
        n_images = len(train) if isinstance(train, ImageSet) else int(train.shape[0])
        grid = self.grid_size(cfg.feature_stride)
        keep = min(1.0, cfg.max_candidates / max(1, n_images * grid * grid))
        chunks = []
        for g in self._patch_grids(train, progress="patchcore: features"):
            p = g.permute(0, 2, 3, 1).reshape(-1, g.shape[1])
            if keep < 1.0:
                p = p[torch.rand(p.shape[0], generator=gen) < keep]
            chunks.append(p.clone())
        bank = torch.cat(chunks)
        del chunks
        n = min(cfg.max_memory, max(1, math.ceil(cfg.coreset_ratio * bank.shape[0])))
        if n < bank.shape[0]:
            proj = bank
            if 0 < cfg.projection_dim < bank.shape[1]:
                w = torch.randn(bank.shape[1], cfg.projection_dim, generator=gen) / math.sqrt(cfg.projection_dim)
                proj = bank @ w
            start = int(torch.randint(bank.shape[0], (1,), generator=gen))
            idx = greedy_coreset(proj, n, start)
            bank = bank[idx]
        self.memory = bank.contiguous()
        self._index = None
        self.fitted = True
        return self

    # -- nearest neighbours -----------------------------------------------------------------------
    @property
    def index(self):
        if self._index is None:
            import faiss

            index = faiss.IndexFlatL2(self.memory.shape[1])
            index.add(np.ascontiguousarray(self.memory.numpy(), dtype=np.float32))
            self._index = index
        return self._index

    def _knn(self, queries: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        d2, idx = self.index.search(np.ascontiguousarray(queries.numpy(), dtype=np.float32), k)
        return torch.from_numpy(np.sqrt(np.maximum(d2, 0.0))), torch.from_numpy(idx)

    def _image_scores(self, patches: torch.Tensor, dist: torch.Tensor, nn_idx: torch.Tensor) -> torch.Tensor:
        """Paper eq. 7: the max patch score re-weighted by its memory neighbourhood's density."""
        b = min(self.config.num_neighbors, self.memory.shape[0])
        best = dist.argmax(1)  # (B,)
        rows = torch.arange(dist.shape[0])
        s_star = dist[rows, best]
        if b <= 1:
            return s_star
        m_test = patches[rows, best]  # (B,D)
        m_star = self.memory[nn_idx[rows, best]]  # (B,D)
        _, support = self._knn(m_star, b)  # (B,b), first is m* itself
        dists = torch.linalg.vector_norm(self.memory[support] - m_test[:, None], dim=-1)  # (B,b)
        weight = 1.0 - torch.softmax(dists.double(), dim=1)[:, 0].float()
        return weight * s_star

    # -- predict -----------------------------------------------------------------------------------
    def predict(self, images: Images) -> Prediction:
        self.require_fitted()
        parts = []
        for g in self._patch_grids(images):
            b, d, h, w = g.shape
            patches = g.permute(0, 2, 3, 1).reshape(b, h * w, d)
            dist, idx = self._knn(patches.reshape(-1, d), 1)
            dist, idx = dist.view(b, h * w), idx.view(b, h * w)
            scores = self._image_scores(patches, dist, idx)
            maps = self.smooth_maps(dist.view(b, h, w), self.config.sigma)
            parts.append(Prediction(scores.numpy(), maps.numpy()))
        return Prediction.concat(parts)

    def embed(self, images: Images) -> Latents:
        """Per-level backbone features plus the locally aware patch grid ("patches": (N,D,g,g))."""
        out = super().embed(images)
        out["patches"] = torch.cat([g.clone() for g in self._patch_grids(images)])
        return out

    # -- state ---------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"memory": self.memory, **self.backbone_state()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        tensors = self.take_backbone_state(tensors)
        self.memory = tensors["memory"].float().contiguous()
        self._index = None
