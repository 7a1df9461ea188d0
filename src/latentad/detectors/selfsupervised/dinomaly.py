"""Dinomaly (Guo et al., CVPR 2025): reconstruction in a self-supervised latent space. A frozen DINOv2
encoder, a noisy bottleneck, a linear-attention decoder that reconstructs the encoder's middle layers,
compared in groups by cosine distance; the paper trains one model for all categories at once.

1. Encoder: the DINOv2 ViT-S/14 the project carries (`backbones/dinov2.py`), frozen; the patch tokens
   of blocks 3-10 (the paper takes the middle 8 of 12 blocks of ViT-B), 224 px (16 x 16 tokens).
   Because it is frozen, its features are computed once per training image and cached: training
   touches only the bottleneck and the decoder.
2. Noisy bottleneck: the mean of the 8 layers through an MLP with dropout 0.2 (the paper's "noise").
3. Decoder: `depth` transformer blocks with linear attention (ELU + 1 kernel, which cannot focus on
   one token and so cannot copy an anomaly through); its outputs reversed and grouped like the
   encoder's layers (2 groups: the mean of the first and of the last half).
4. Loss ("loose" reconstruction): per token, 1 - cos(encoder group, decoder group), the points the
   decoder already restores well (all but the hardest `hard_fraction`) with their gradient scaled
   by 0.1 (the paper's hard mining), averaged over groups.
5. Map: the per-token cosine distance, mean over groups, upsampled and blurred (sigma 4); image score:
   the mean of the top 1 % of the map.

CPU sizing (not the paper's): 224 px instead of 448 crop 392, a decoder of 4 blocks instead of 8, and a
schedule of `epochs` epochs of at most `epoch_images` images each instead of 10,000 iterations (like
the paper's fixed iterations, the cap keeps a fit on several categories at once, or on a large one,
at the cost of a 500-image category: the training steps dominate a fit on 2 cores); AdamW instead of
StableAdamW. Not implemented: the paper's global (flattened) cosine loss; the per-token one is used.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from latentad.config import AT_LEAST_ONE, Bound
from latentad.data.base import ImageSet, require_nonempty
from latentad.detectors.pretrained.common import gaussian_blur
from latentad.detectors.reconstruction.trainable import TrainableDetector, TrainingConfig
from latentad.errors import ConfigError
from latentad.training import train_model

WIDTH = 384


@dataclass
class DinomalyConfig(TrainingConfig):
    """layers: encoder blocks reconstructed (split into `groups` equal groups); depth: decoder blocks;
    dropout: the bottleneck's noise; hard_fraction: share of hardest tokens keeping their full gradient;
    top_fraction: share of the map's highest pixels averaged into the image score."""

    image_size: int | tuple[int, int] = 224
    channels: Literal[3] = 3
    batch_size: int = 16
    layers: tuple[int, ...] = (3, 4, 5, 6, 7, 8, 9, 10)
    groups: int = 2
    depth: int = 4
    heads: int = 6
    dropout: float = 0.2
    hard_fraction: float = 0.1
    top_fraction: float = 0.01
    sigma: float = 4.0
    epochs: int = 10  # sized by time on 2 CPU cores (a bottle fit in minutes), not by a score
    epoch_images: int | None = 512  # images drawn per epoch at most (a seeded draw); sized by time likewise
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    augment_to: int | None = None
    rotation: bool = False
    flips: bool = False
    channels_last: bool = False
    bounds: ClassVar[dict[str, Bound]] = {**TrainingConfig.bounds, "groups": AT_LEAST_ONE, "depth": AT_LEAST_ONE,
                                          "heads": AT_LEAST_ONE, "dropout": Bound(ge=0, lt=1),
                                          "epoch_images": AT_LEAST_ONE,
                                          "hard_fraction": Bound(gt=0, le=1), "top_fraction": Bound(gt=0, le=1)}


class LinearAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k = F.elu(q) + 1, F.elu(k) + 1
        kv = k.transpose(-2, -1) @ v  # (b, h, d, d): linear in the number of tokens
        norm = q @ k.sum(2, keepdim=True).transpose(-2, -1)  # (b, h, n, 1)
        out = (q @ kv) / (norm + 1e-6)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = LinearAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Decoder(nn.Module):
    """Encoder layers (B, L*C, h, w) -> decoder outputs, one (B, h*w, C) per decoder block, reversed."""

    def __init__(self, n_layers: int, depth: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.bottleneck = nn.Sequential(nn.Dropout(dropout), nn.Linear(WIDTH, 4 * WIDTH), nn.GELU(),
                                        nn.Dropout(dropout), nn.Linear(4 * WIDTH, WIDTH), nn.Dropout(dropout))
        self.blocks = nn.ModuleList(Block(WIDTH, heads) for _ in range(depth))

    def forward(self, feats: torch.Tensor) -> list[torch.Tensor]:
        b = feats.shape[0]
        tokens = feats.view(b, self.n_layers, WIDTH, -1).transpose(2, 3)  # (B, L, n, C)
        x = self.bottleneck(tokens.mean(1))
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return outs[::-1]


def groups_of(items: list[torch.Tensor], groups: int) -> list[torch.Tensor]:
    """The mean of each of `groups` consecutive equal parts of `items`."""
    size = len(items) // groups
    return [torch.stack(items[g * size:(g + 1) * size]).mean(0) for g in range(groups)]


class Dinomaly(TrainableDetector):
    """Dinomaly (Guo et al. 2025): a linear-attention decoder reconstructs frozen DINOv2 layers."""

    name = "dinomaly"
    family = "selfsupervised"
    Config = DinomalyConfig
    map_scored = False
    preset_notes = {"paper_recipe": "the paper's decoder of 8 blocks (slow on a CPU)"}
    presets: dict[str, dict[str, Any]] = {"paper_recipe": {"depth": 8}}

    def __init__(self, config: DinomalyConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        c = self.config
        if len(c.layers) % c.groups or c.depth % c.groups:
            raise ConfigError(f"dinomaly: {len(c.layers)} layers and depth {c.depth} must both divide into "
                              f"groups={c.groups}")
        if any(not 1 <= layer <= 12 for layer in c.layers):
            raise ConfigError(f"dinomaly: layers {c.layers} must be DINOv2 blocks 1-12")
        if c.heads and WIDTH % c.heads:
            raise ConfigError(f"dinomaly: heads={c.heads} must divide the width {WIDTH}")
        self._encoder = None

    @property
    def encoder(self):
        if self._encoder is None:
            from latentad.backbones import load_backbone

            self._encoder = load_backbone("dinov2_vits14", [f"block{k}" for k in self.config.layers],
                                          channels_last=False)
            self._encoder.to(self.device)
        return self._encoder

    def weights_sha256(self) -> str | None:
        from latentad.backbones import weights_sha256

        return weights_sha256("dinov2_vits14", None)

    def move_state(self, device: torch.device) -> None:
        super().move_state(device)
        if self._encoder is not None:
            self._encoder.to(device)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L*C, h, w): the chosen layers' patch tokens, stacked on the channel axis."""
        with torch.no_grad():
            feats = self.encoder(x)
        return torch.cat([feats[f"block{k}"].float() for k in self.config.layers], 1)

    def build_model(self) -> nn.Module:
        c = self.config
        return Decoder(len(c.layers), c.depth, c.heads, c.dropout)

    def _distance(self, model: nn.Module, feats: torch.Tensor) -> list[torch.Tensor]:
        """Per group, 1 - cos(encoder, decoder) per token: (B, n) each."""
        c = self.config
        b = feats.shape[0]
        enc = list(feats.view(b, len(c.layers), WIDTH, -1).transpose(2, 3).unbind(1))
        dec = model(feats)
        return [1 - F.cosine_similarity(e, d, dim=-1) for e, d in zip(groups_of(enc, c.groups),
                                                                       groups_of(dec, c.groups), strict=True)]

    def loss(self, model: nn.Module, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = []
        for d in self._distance(model, feats):
            cut = torch.quantile(d.detach().flatten().float(), 1 - self.config.hard_fraction)
            easy = d.detach() < cut
            terms.append(torch.where(easy, 0.1 * d + 0.9 * d.detach(), d).mean())  # easy points: 0.1 x gradient
        return {"loss": torch.stack(terms).mean()}

    def fit(self, train: ImageSet) -> Dinomaly:
        require_nonempty(train, train.name)
        self.seed_everything()
        sized = train.with_size(self.input_shape, 3, resize=self.config.resize)
        feats = torch.cat([self.encode(b.images.to(self.device)).cpu()
                           for b in sized.batches(self.config.batch_size, progress="dinomaly: encoder features")])
        self.model = self.build_model().to(self.device)
        schedule = self.schedule()
        cap = self.config.epoch_images
        if schedule.augment_to is None and cap is not None and len(feats) > cap:
            schedule = dataclasses.replace(schedule, augment_to=cap)  # each epoch a seeded draw of `cap` images
        self.history = train_model(
            self.model, feats, self.loss, schedule, self.config.seed,
            checkpoint_dir=self.checkpoint_dir, resume=self.resume, description="dinomaly fit",
            settings=self.training_settings(), precision=self.compute_precision,
        )
        self.model.eval()
        self.fitted = True
        return self

    def map_batch(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encode(x)
        h, w = feats.shape[-2:]
        d = torch.stack(self._distance(self.model, feats)).mean(0).view(-1, 1, h, w)
        amap = F.interpolate(d, size=self.input_shape, mode="bilinear", align_corners=False)[:, 0]
        return gaussian_blur(amap, self.config.sigma) if self.config.sigma > 0 else amap

    def embed(self, images) -> dict[str, torch.Tensor]:
        """"patches": the encoder layers' mean (N, C, h, w), the space the decoder reconstructs (what
        `latentad analyze` reads); "bottleneck": the noisy bottleneck's output grid (dropout off)."""
        self.require_fitted()
        patches, neck = [], []
        with torch.inference_mode():
            for x in self.iter_batches(images):
                feats = self.encode(x)
                b, (h, w) = feats.shape[0], feats.shape[-2:]
                tokens = feats.view(b, len(self.config.layers), WIDTH, -1)
                patches.append(tokens.mean(1).view(b, WIDTH, h, w).cpu())
                z = self.model.bottleneck(tokens.transpose(2, 3).mean(1))
                neck.append(z.transpose(1, 2).reshape(b, WIDTH, h, w).cpu())
        return {"patches": torch.cat(patches), "bottleneck": torch.cat(neck)}

    def image_score(self, amap: torch.Tensor) -> torch.Tensor:
        flat = amap.flatten(1)
        k = max(1, int(self.config.top_fraction * flat.shape[1]))
        return flat.topk(k, dim=1).values.mean(1)
