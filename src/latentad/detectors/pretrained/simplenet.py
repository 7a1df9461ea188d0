"""SimpleNet (Liu, Zhou, Xia, Cao, "SimpleNet: A Simple Network for Image Anomaly Detection and
Localization", CVPR 2023).

1. Frozen backbone patch features, locally aware as in PatchCore (3x3 neighbourhood average, levels
   brought to one grid and concatenated).
2. A feature adaptor (one linear layer, as the paper's default) maps them to the target space.
3. Synthetic anomalous features: adapted normal features + i.i.d. Gaussian noise (std `noise_std`).
4. A discriminator (Linear -> BatchNorm1d -> LeakyReLU(0.2) -> Linear, no bias on the last layer, as
   the paper's 2-layer default) is trained jointly with the adaptor with the truncated L1 loss
   max(0, th - D(normal)) + max(0, th + D(anomalous)), th = 0.5.
5. Patch score = -D(adaptor(feature)); the map is upsampled to the input size and smoothed by a
   Gaussian of sigma 4; the image score is the maximum of the map.

CPU adaptations (the paper trains 160 epochs over images on a GPU): the backbone features of the
training set are extracted once and cached (at most `max_cached` patches, a seeded random subset),
then the adaptor and discriminator are trained for `steps` minibatches of `train_batch` patches drawn
from the cache. Features are standardised per channel (training mean / std) before the adaptor, so
`noise_std` is in units of the features' spread (the paper's 0.015 is in WideResNet-50 feature units).
Optimisers follow the paper's code: Adam (lr 2e-4, weight decay 1e-5) with cosine decay to 0.4 x for
the discriminator, AdamW (lr 1e-4) for the adaptor. Deterministic under config.seed (single process).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn

from latentad.config import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Bound
from latentad.data.base import ImageSet
from latentad.detectors.base import Images, Latents
from latentad.detectors.pretrained.common import PretrainedConfig, PretrainedDetector, few_threads
from latentad.errors import ConfigError
from latentad.progress import tick


@dataclass
class SimpleNetConfig(PretrainedConfig):
    """feature_stride / aggregate: patch grid as PatchCore; hidden: discriminator width; noise_std:
    synthetic-anomaly noise (standardised feature units); margin: truncated-L1 threshold th;
    steps / train_batch: optimisation length; lr_disc / lr_adaptor: learning rates; max_cached:
    training patches cached; sigma: map smoothing."""

    levels: tuple[str, ...] | None = None
    feature_stride: int = 8
    aggregate: int = 3
    hidden: int = 256
    noise_std: float = 0.25
    margin: float = 0.5
    steps: int = 400
    train_batch: int = 1024
    lr_disc: float = 2e-4
    lr_adaptor: float = 1e-4
    max_cached: int = 300_000
    sigma: float = 4.0
    bounds: ClassVar[dict[str, Bound]] = {
        "feature_stride": AT_LEAST_ONE, "aggregate": AT_LEAST_ONE, "hidden": AT_LEAST_ONE, "noise_std": POSITIVE,
        "margin": NON_NEGATIVE, "steps": AT_LEAST_ONE, "train_batch": Bound(ge=2), "lr_disc": POSITIVE,
        "lr_adaptor": POSITIVE, "max_cached": AT_LEAST_ONE, "sigma": NON_NEGATIVE,
    }


class Discriminator(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2))
        self.tail = nn.Linear(hidden, 1, bias=False)
        for m in self.modules():  # the paper's init: xavier normal for linear layers
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.body(x))[:, 0]


class SimpleNet(PretrainedDetector):
    """SimpleNet (Liu et al. 2023): adapted patch features, a discriminator trained against Gaussian-noise fakes."""

    name = "simplenet"
    Config = SimpleNetConfig
    default_levels = ("stage2", "stage3", "stage4")
    preset_notes = {"paper_recipe": "the paper's discriminator and schedule (1024 wide, 4000 steps, 256 px) on "
                                    "EfficientNet-Lite0, not the paper's WideResNet-50 (no offline weights)"}
    presets: dict[str, dict[str, Any]] = {
        # Closer to the paper: wider discriminator, longer training, larger input (slow on CPU).
        "paper_recipe": {"hidden": 1024, "steps": 4000, "train_batch": 4096, "image_size": 256},
    }

    map_statistic = "max"

    def __init__(self, config: SimpleNetConfig | None = None, backbone=None, **overrides: Any) -> None:
        super().__init__(config, backbone, **overrides)
        self.adaptor: nn.Linear | None = None
        self.discriminator: Discriminator | None = None
        self.feat_mean: torch.Tensor | None = None
        self.feat_std: torch.Tensor | None = None
        self.loss_history: list[float] = []

    def _build(self, dim: int) -> None:
        self.adaptor = nn.Linear(dim, dim)
        nn.init.xavier_normal_(self.adaptor.weight)
        nn.init.zeros_(self.adaptor.bias)
        self.discriminator = Discriminator(dim, self.config.hidden).to(self.device)
        self.adaptor.to(self.device)

    def fit(self, train: ImageSet) -> SimpleNet:
        cfg = self.config
        if cfg.steps < 1 or cfg.train_batch < 2:
            raise ConfigError("simplenet: steps must be >= 1 and train_batch >= 2")
        self.seed_everything()
        gen = torch.Generator().manual_seed(cfg.seed)
        cache = self.sample_patches(train, cfg.max_cached, gen, "simplenet: features")
        self.feat_mean = cache.mean(0)
        self.feat_std = cache.std(0).clamp_min(1e-6)
        cache = (cache - self.feat_mean) / self.feat_std
        self._build(cache.shape[1])
        self._train(cache, gen)
        self.fitted = True
        return self

    def _train(self, cache: torch.Tensor, gen: torch.Generator) -> None:
        cfg = self.config
        adaptor, disc = self.adaptor, self.discriminator
        opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr_disc, weight_decay=1e-5)
        opt_a = torch.optim.AdamW(adaptor.parameters(), lr=cfg.lr_adaptor)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt_d, cfg.steps, cfg.lr_disc * 0.4)
        adaptor.train()
        disc.train()
        self.loss_history = []
        n = cache.shape[0]
        bs = min(cfg.train_batch, n)
        with torch.enable_grad(), few_threads():  # many small steps: see few_threads
            for _ in range(cfg.steps):
                tick()
                idx = torch.randint(n, (bs,), generator=gen).to(cache.device)  # CPU draws: same on every device
                true = adaptor(cache[idx])
                fake = true + torch.randn(true.shape, generator=gen).to(true.device) * cfg.noise_std
                scores = disc(torch.cat([true, fake]))
                loss = (torch.clamp(cfg.margin - scores[:bs], min=0).mean()
                        + torch.clamp(cfg.margin + scores[bs:], min=0).mean())
                opt_d.zero_grad(set_to_none=True)
                opt_a.zero_grad(set_to_none=True)
                loss.backward()
                opt_a.step()
                opt_d.step()
                sched.step()
                self.loss_history.append(float(loss.detach()))
        adaptor.eval()
        disc.eval()

    def _patch_scores(self, g: torch.Tensor) -> torch.Tensor:
        """(B,D,h,w) features -> (B,h,w) scores = -D(adaptor(standardised features))."""
        b, d, h, w = g.shape
        p = (g.permute(0, 2, 3, 1).reshape(-1, d) - self.feat_mean) / self.feat_std
        return -self.discriminator(self.adaptor(p)).view(b, h, w)

    def score_features(self, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.smooth_maps(self._patch_scores(self.patch_grid(feats)), self.config.sigma)
        return maps.flatten(1).amax(1), maps

    @torch.no_grad()  # not inference_mode: callers get ordinary tensors
    def embed(self, images: Images) -> Latents:
        """Per-level backbone features, the patch features and the adapted ones ("adapted": (N,D,g,g))."""
        out = super().embed(images)
        patches, adapted = [], []
        for g in self.patch_grids(images):
            b, d, h, w = g.shape
            patches.append(g.cpu().clone())
            p = (g.permute(0, 2, 3, 1).reshape(-1, d) - self.feat_mean) / self.feat_std
            adapted.append(self.adaptor(p).view(b, h, w, d).permute(0, 3, 1, 2).cpu().clone())
        out["patches"] = torch.cat(patches)
        out["adapted"] = torch.cat(adapted)
        return out

    def move_fitted(self, device: torch.device) -> None:
        for name in ("feat_mean", "feat_std"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).to(device))
        for module in (self.adaptor, self.discriminator):
            if module is not None:
                module.to(device)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {"feat_mean": self.feat_mean, "feat_std": self.feat_std}
        out.update({f"adaptor.{k}": v for k, v in self.adaptor.state_dict().items()})
        out.update({f"discriminator.{k}": v for k, v in self.discriminator.state_dict().items()})
        return {**out, **self.backbone_state()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        tensors = self.take_backbone_state(tensors)
        self.feat_mean, self.feat_std = tensors["feat_mean"].to(self.device), tensors["feat_std"].to(self.device)
        self._build(self.feat_mean.shape[0])
        self.adaptor.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("adaptor.")})
        self.discriminator.load_state_dict(
            {k[14:]: v for k, v in tensors.items() if k.startswith("discriminator.")}
        )
        self.adaptor.eval()
        self.discriminator.eval()
