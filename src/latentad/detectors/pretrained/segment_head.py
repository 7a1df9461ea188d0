"""A segmentation head trained on synthetic defects, over a Gaussian patch model's features.

Why (docs/ANALYSIS.md, magnetic tile): a per-position model of patches cannot tell a region finished
unlike the rest of its tile (the `uneven` class, most of the defect pixels) from normal texture: each
patch of it is a plausible patch. What marks it is its disagreement with the rest of the same image.
This head sees, at every grid position, the patch feature, its offset from the image's median patch,
the image's mean patch and the position's Mahalanobis distance, through dilated convolutions that
reach across the grid; it is trained (focal loss, per position) to find synthetic defects pasted on
the normal training images (`data.defects`, with exact masks). The defect kinds are a setting; which
ones, and whether the head is used at all, are chosen on a validation split (`latentad.tuning`).

The scoring path is traceable (no data-dependent control flow; the median is taken by a sort, as ONNX
has no median), so a detector using it exports like any other.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latentad.data.defects import defect_batch
from latentad.progress import track


class SegmentHead(nn.Module):
    """(B,d,h,w) patch features + (B,h,w) Mahalanobis distances -> (B,h,w) defect logits."""

    def __init__(self, d: int, width: int = 64, dilations: tuple[int, ...] = (1, 2, 4, 8)) -> None:
        super().__init__()
        self.inp = nn.Conv2d(3 * d + 1, width, 1)
        layers: list[nn.Module] = []
        for dil in dilations:
            layers += [nn.Conv2d(width, width, 3, padding=dil, dilation=dil), nn.BatchNorm2d(width), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(width, 1, 1)
        # input standardisation: features per channel, distances by the clean training images' mean, std
        self.register_buffer("feat_stats", torch.stack([torch.zeros(d), torch.ones(d)]))
        self.register_buffer("dist_stats", torch.tensor([0.0, 1.0]))

    def forward(self, g: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
        x = (g.float() - self.feat_stats[0, :, None, None]) / self.feat_stats[1, :, None, None]
        flat = x.flatten(2)
        median = flat.sort(2).values[:, :, (flat.shape[2] - 1) // 2, None, None]
        mean = x.mean((2, 3), keepdim=True).expand_as(x)
        d = (dist[:, None] - self.dist_stats[0]) / self.dist_stats[1]
        z = torch.cat([x, x - median, mean, d], 1)
        return self.out(self.body(F.relu(self.inp(z))))[:, 0]


class HeadEnsemble(nn.Module):
    """Several heads (each trained on its own draw of synthetic defects), their logits averaged: one
    head's false alarms on normal images vary with its draw (and so its pooled pixel AUROC with the
    seed), an average keeps what they agree on."""

    def __init__(self, heads: list[SegmentHead]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(heads)
        # the clean training images' distance mean, std and averaged-logit mean, std (`standardise`)
        self.register_buffer("map_stats", torch.cat([heads[0].dist_stats, torch.tensor([0.0, 1.0])]))
        # their image scores' (the smoothed Mahalanobis map's maximum) mean, std (`set_score_stats`; nan: unset)
        self.register_buffer("score_stats", torch.tensor([float("nan"), float("nan")]))

    def forward(self, g: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
        return torch.stack([h(g, dist) for h in self.heads]).mean(0)

    def fuse(self, dist: torch.Tensor, logits: torch.Tensor, weight: float,
             gate: torch.Tensor | None = None, standardized: bool = False) -> torch.Tensor:
        """Both maps standardised on the clean training images (`dist` as it is when `standardized`
        already, per position), then added (the heads' weighted, and multiplied per image by `gate`
        (B,) when given)."""
        s = self.map_stats
        head = weight * (logits - s[2]) / s[3]
        base = dist if standardized else (dist - s[0]) / s[1]
        return base + (head if gate is None else gate[:, None, None] * head)

    def gate(self, scores: torch.Tensor, offset: float) -> torch.Tensor:
        """(B,) image scores -> (B,) weights in (0, 1): Phi(z - offset), z the score standardised by the
        clean training images' scores. Why: the heads' false alarms sit on normal images (magnetic tile),
        which the Gaussian image score already tells from defective ones; gated, an image the Gaussian
        finds normal keeps little of the heads' map."""
        z = (scores - self.score_stats[0]) / self.score_stats[1]
        return 0.5 * (1 + torch.erf((z - offset) / 2**0.5))

    def set_score_stats(self, scores: torch.Tensor) -> None:
        """The clean training images' image scores (cross-fitted, as at test time) -> `score_stats`."""
        self.score_stats[0], self.score_stats[1] = scores.mean(), scores.std() + 1e-6

    def standardise(self, g: torch.Tensor, dist: torch.Tensor, clean: torch.Tensor) -> None:
        """Set the averaged logits' statistics from the clean rows of (g, dist)."""
        with torch.no_grad():
            logits = torch.cat([self(g[idx], dist[idx]) for idx in torch.nonzero(clean)[:, 0].split(64)])
        self.map_stats[2], self.map_stats[3] = logits.mean(), logits.std() + 1e-6

    @staticmethod
    def from_state(state: dict[str, torch.Tensor], d: int) -> HeadEnsemble:
        """Rebuild from `state_dict()` keys ("heads.<i>.<param>", "map_stats")."""
        count = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("heads."))
        ensemble = HeadEnsemble([SegmentHead(d) for _ in range(count)])
        state = {"score_stats": ensemble.score_stats, **state}  # files written before the gate existed
        ensemble.load_state_dict(state)
        return ensemble.eval()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): defect positions are a few percent of the grid."""
    p = torch.sigmoid(logits)
    pt = p * target + (1 - p) * (1 - target)
    return (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * (1 - pt) ** gamma).mean()


def training_grids(batches, features, kinds: tuple[str, ...], variants: int, seed: int, grid: tuple[int, int]
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features (N,d,h,w) float16, distances (N,h,w), masks (N,h,w), clean (N,) bool) of every
    training batch, once as it is and `variants` times with one synthetic defect per image (masks
    area-averaged to the grid). Held in memory: (variants + 1) x images x d x grid in float16, i.e.
    4 x 599 x 176 x 28 x 28 x 2 bytes = 0.66 GB for 599 tiles at 3 variants, 176 channels.
    `batches`: an iterable of float batches; `features(x, variant) -> (g, dist)`: the detector's
    patch features and Mahalanobis distances of a batch (variant 0: as it is; the last variant ends
    the batch)."""
    rng = np.random.default_rng([seed, 77_001])
    gs, ds, ms, cs = [], [], [], []
    for x in batches:
        for v in range(variants + 1):
            if v == 0:
                xv, mask = x, torch.zeros(x.shape[0], *x.shape[-2:], device=x.device)
            else:
                xv, mask, _ = defect_batch(x, rng, kinds)
            with torch.inference_mode():
                g, dist = features(xv, v)
            gs.append(g.half().cpu())
            ds.append(dist.float().cpu())
            ms.append(F.adaptive_avg_pool2d(mask[:, None].float(), grid)[:, 0].cpu())
            cs.append(torch.full((x.shape[0],), v == 0))
    return torch.cat(gs), torch.cat(ds), torch.cat(ms), torch.cat(cs)


def train_head(g: torch.Tensor, dist: torch.Tensor, masks: torch.Tensor, epochs: int, seed: int,
               clean: torch.Tensor, lr: float = 1e-3, batch_size: int = 32) -> SegmentHead:
    """Fit a SegmentHead on precomputed grids (`clean`: which rows carry no defect, for the
    distance statistics its input is standardised with)."""
    torch.manual_seed(seed)
    head = SegmentHead(g.shape[1])
    gf = g.float()
    head.feat_stats.copy_(torch.stack([gf.mean((0, 2, 3)), gf.std((0, 2, 3)) + 1e-6]))
    del gf
    head.dist_stats[0], head.dist_stats[1] = dist[clean].mean(), dist[clean].std() + 1e-6
    target = (masks > 0.5).float()
    opt = torch.optim.Adam(head.parameters(), lr, weight_decay=1e-4)
    with torch.inference_mode(False), torch.enable_grad():  # fit may be called under no_grad
        _fit(head, opt, g, dist, target, epochs, batch_size)
    return head.eval()


def _fit(head: SegmentHead, opt: torch.optim.Optimizer, g: torch.Tensor, dist: torch.Tensor, target: torch.Tensor,
         epochs: int, batch_size: int) -> None:
    n = len(g)
    for _ in track(range(epochs), description="padim: segmentation head", total=epochs):
        head.train()
        for idx in torch.randperm(n).split(batch_size):
            loss = focal_loss(head(g[idx], dist[idx]), target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
