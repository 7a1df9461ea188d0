"""Deep SVDD (Ruff et al., "Deep One-Class Classification", ICML 2018).

A network phi maps normal images close to a centre c fixed before training (the mean of phi over the
training images after an initial forward, entries below eps pushed to +-eps so none is trivially 0).

- `objective="one-class"`: minimise the mean of ||phi(x) - c||^2 (plus weight decay);
  score = ||phi(x) - c||^2.
- `objective="soft-boundary"`: minimise R^2 + 1/nu mean(max(0, ||phi(x) - c||^2 - R^2)); R is set
  after each epoch (once `warmup_epochs` have passed) to the (1 - nu) quantile of the distances;
  score = ||phi(x) - c||^2 - R^2.

The networks are the paper's: no bias terms and BatchNorm without affine parameters (a bias or a
learnt shift would let phi collapse onto c for every input). `net="lenet_mnist"` (28 px, one
channel: conv 8 / conv 4 (5x5, pool 2) -> dense `rep_dim` = 32), `net="lenet_cifar"` (32 px, RGB:
conv 32 / 64 / 128 -> dense 128) and `net="conv"` (the same pattern with four stages, for larger
images). Preprocessing as in the paper: global contrast normalisation (l1) per image, then min-max
scaling with the training class's extremes (stored with the model). Optional auto-encoder
pretraining (`pretrain_epochs`): a mirrored decoder is trained with the squared error and phi keeps
the encoder's weights, as in the paper. No pixel maps: image scores only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latentad.config import AT_LEAST_ONE, NON_NEGATIVE, Bound
from latentad.detectors.base import DetectorConfig, Images, Latents
from latentad.detectors.reconstruction.trainable import TrainableDetector, TrainingConfig
from latentad.errors import ConfigError
from latentad.training import TrainSchedule, train_model

NETS = {"lenet_mnist": ((8, 4), 32), "lenet_cifar": ((32, 64, 128), 128), "conv": ((32, 64, 128, 128), 128)}


def gcn_l1(x: torch.Tensor) -> torch.Tensor:
    """Global contrast normalisation per image: zero mean, unit mean absolute deviation."""
    x = x - x.mean((1, 2, 3), keepdim=True)
    return x / x.abs().mean((1, 2, 3), keepdim=True).clamp_min(1e-8)


class Encoder(nn.Module):
    """phi: conv (5x5, no bias) -> BN (no affine) -> leaky ReLU -> max-pool 2, per stage; dense to rep_dim."""

    def __init__(self, channels: int, shape: tuple[int, int], widths: tuple[int, ...], rep_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = channels
        for w in widths:
            layers += [nn.Conv2d(cin, w, 5, padding=2, bias=False), nn.BatchNorm2d(w, eps=1e-4, affine=False),
                       nn.LeakyReLU(0.1), nn.MaxPool2d(2)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.bottom = (shape[0] // 2 ** len(widths), shape[1] // 2 ** len(widths))
        self.fc = nn.Linear(cin * self.bottom[0] * self.bottom[1], rep_dim, bias=False)
        self.register_buffer("lo", torch.zeros(()))  # min-max scaling after GCN (training class extremes)
        self.register_buffer("hi", torch.ones(()))
        self.register_buffer("center", torch.zeros(rep_dim))
        self.register_buffer("radius", torch.zeros(()))

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        return (gcn_l1(x) - self.lo) / (self.hi - self.lo).clamp_min(1e-8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(self.scale(x)).flatten(1))


class Decoder(nn.Module):
    """The mirrored decoder of the pretraining auto-encoder (interpolation + 5x5 conv, no bias)."""

    def __init__(self, channels: int, bottom: tuple[int, int], widths: tuple[int, ...], rep_dim: int) -> None:
        super().__init__()
        self.bottom, self.first = bottom, widths[-1]
        self.fc = nn.Linear(rep_dim, widths[-1] * bottom[0] * bottom[1], bias=False)
        layers: list[nn.Module] = []
        outs = list(reversed(widths[:-1])) + [channels]
        cin = widths[-1]
        for k, w in enumerate(outs):
            layers += [nn.BatchNorm2d(cin, eps=1e-4, affine=False), nn.LeakyReLU(0.1),
                       nn.Upsample(scale_factor=2), nn.Conv2d(cin, w, 5, padding=2, bias=False)]
            if k == len(outs) - 1:
                layers.append(nn.Sigmoid())
            cin = w
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.fc(z).view(z.shape[0], self.first, *self.bottom))


@dataclass
class DSVDDConfig(TrainingConfig):
    image_size: int | tuple[int, int] = 64
    net: Literal["lenet_mnist", "lenet_cifar", "conv"] = "conv"
    rep_dim: int = 0  # 0: the net's own (32 for lenet_mnist, 128 otherwise)
    objective: Literal["one-class", "soft-boundary"] = "one-class"
    nu: float = 0.1
    eps: float = 0.1  # centre entries closer to 0 than this are set to +-eps
    warmup_epochs_radius: int = 10
    pretrain_epochs: int = 0  # > 0: auto-encoder pretraining of phi, as in the paper
    pretrain_lr: float = 1e-4
    epochs: int = 50
    lr: float = 1e-4
    weight_decay: float = 5e-7
    batch_size: int = 128
    augment_to: int | None = None
    rotation: bool = False
    flips: bool = False
    bounds: ClassVar[dict[str, Bound]] = {"rep_dim": NON_NEGATIVE, "nu": Bound(gt=0, le=1), "eps": NON_NEGATIVE,
                                          "warmup_epochs_radius": NON_NEGATIVE, "pretrain_epochs": NON_NEGATIVE,
                                          "pretrain_lr": Bound(gt=0), "batch_size": AT_LEAST_ONE}


class DSVDD(TrainableDetector):
    """Deep SVDD (Ruff et al. 2018): a one-class network around a fixed centre; image scores only."""

    name: ClassVar[str] = "dsvdd"
    family: ClassVar[str] = "selfsupervised"
    Config: ClassVar[type[DetectorConfig]] = DSVDDConfig
    config: DSVDDConfig
    localizes: ClassVar[bool] = False
    map_scored: ClassVar[bool] = False
    preset_notes: ClassVar[dict[str, str]] = {
        "mnist": "the paper's MNIST setting: LeNet (8/4 filters, rep 32), one channel at 28 px, AE pretraining, "
                 "Adam 1e-4, weight decay 5e-7, batch 200",
        "paper_cifar": "the paper's CIFAR-10 setting: LeNet (32/64/128, rep 128) at 32 px, AE pretraining",
    }
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "mnist": dict(net="lenet_mnist", image_size=28, channels=1, epochs=150, pretrain_epochs=150, lr=1e-4,
                      pretrain_lr=1e-4, batch_size=200, weight_decay=5e-7),
        "paper_cifar": dict(net="lenet_cifar", image_size=32, channels=3, epochs=150, pretrain_epochs=150, lr=1e-4,
                            pretrain_lr=1e-4, batch_size=200, weight_decay=5e-7),
    }

    @property
    def widths(self) -> tuple[int, ...]:
        return NETS[self.config.net][0]

    @property
    def rep_dim(self) -> int:
        return self.config.rep_dim or NETS[self.config.net][1]

    def __init__(self, config=None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        if any(side % 2 ** len(self.widths) for side in self.input_shape):
            raise ConfigError(f"dsvdd: image_size {self.config.image_size} is not divisible by "
                              f"{2 ** len(self.widths)} (net {self.config.net})")
        self.model = self.build_model()

    def build_model(self) -> Encoder:
        return Encoder(self.config.channels, self.input_shape, self.widths, self.rep_dim)

    # -- before training: scaling extremes, optional pretraining, the centre --------------------
    def prepare(self, images: torch.Tensor) -> None:
        model = self.model
        self._train_images = images  # for the soft-boundary radius after each epoch
        with torch.no_grad():
            g = gcn_l1(images)
            model.lo.fill_(float(g.min()))
            model.hi.fill_(float(g.max()))
        if self.resume and self.checkpoint_dir is not None and (self.checkpoint_dir / "checkpoint.json").is_file():
            return  # the checkpoint holds the centre, the extremes and the radius
        if self.config.pretrain_epochs:
            self._pretrain(images)
        model.eval()
        with torch.no_grad():
            z = torch.cat([model(b.to(self.device)) for b in images.split(256)])
            c = z.mean(0)
            eps = self.config.eps
            c[(c.abs() < eps) & (c < 0)] = -eps
            c[(c.abs() < eps) & (c >= 0)] = eps
            model.center.copy_(c)

    def _pretrain(self, images: torch.Tensor) -> None:
        c = self.config
        decoder = Decoder(c.channels, self.model.bottom, self.widths, self.rep_dim).to(self.device)
        ae = nn.ModuleDict({"encoder": self.model, "decoder": decoder})

        def loss(m: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
            target = m["encoder"].scale(x)
            return {"loss": F.mse_loss(m["decoder"](m["encoder"](x)), target)}

        schedule = TrainSchedule(epochs=c.pretrain_epochs, lr=c.pretrain_lr, batch_size=c.batch_size,
                                 augment_to=c.augment_to, rotation=c.rotation, flips=c.flips,
                                 weight_decay=c.weight_decay, channels_last=False)
        self.pretrain_history = train_model(ae, images, loss, schedule, c.seed + 1, description="dsvdd pretrain",
                                            precision=self.compute_precision)

    # -- training -------------------------------------------------------------------------------
    def loss(self, model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        dist = ((model(x).float() - model.center) ** 2).sum(1)
        if self.config.objective == "one-class":
            return {"loss": dist.mean()}
        r2 = model.radius**2
        return {"loss": r2 + dist.sub(r2).clamp_min(0).mean() / self.config.nu, "r": model.radius.detach()}

    def epoch_end(self, epoch: int, entry: dict) -> dict:
        if self.config.objective == "soft-boundary" and epoch + 1 >= self.config.warmup_epochs_radius:
            self.model.eval()
            with torch.no_grad():
                z = torch.cat([self.model(b.to(self.device)) for b in self._train_images.split(256)])
                dist = ((z - self.model.center) ** 2).sum(1).sqrt()
            self.model.radius.fill_(float(np.quantile(dist.cpu().numpy(), 1 - self.config.nu)))
            self.model.train()
        return {"radius": float(self.model.radius)}

    # -- scoring --------------------------------------------------------------------------------
    def score_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """||phi(x) - c||^2, less R^2 with the soft boundary (the paper's score)."""
        self.model.eval()
        with self.autocast():
            z = self.model(x).float()
        d = ((z - self.model.center) ** 2).sum(1)
        if self.config.objective == "soft-boundary":
            d = d - self.model.radius ** 2
        return d, None

    def embed(self, images: Images) -> Latents:
        """phi(x) (N, rep_dim) and the centre c (rep_dim,)."""
        self.require_fitted()
        with torch.inference_mode():
            z = torch.cat([self.model(x).float().cpu() for x in self.iter_batches(images)])
        return {"z": z, "center": self.model.center.cpu().clone()}
