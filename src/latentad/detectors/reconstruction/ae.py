"""Convolutional auto-encoders scored by their reconstruction residual (family A baselines).

`ae_l2`: trained with and scored by the squared residual (Baur et al. 2021).
`ae_ssim`: trained with and scored by 1 - SSIM (Bergmann et al. 2019, "Improving unsupervised defect
segmentation by applying structural similarity to autoencoders"): the architecture follows their
Table 1 — 4x4 stride-2 convolutions interleaved with 3x3 ones, leaky ReLU, a dense bottleneck
(`latent_dim`, 100 in the paper) reached by a convolution covering the whole last feature map — so
the model cannot copy its input and must reconstruct from a small code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from latentad.config import AT_LEAST_ONE, Bound
from latentad.detectors.reconstruction.deconv import ConvTranspose2d
from latentad.detectors.reconstruction.trainable import TrainableDetector, TrainingConfig
from latentad.maps.ssim import ssim_anomaly_map, ssim_map


def _conv(cin: int, cout: int, k: int, s: int, p: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, s, p), nn.LeakyReLU(0.2, inplace=True)]


def _deconv(cin: int, cout: int, k: int, s: int, p: int) -> list[nn.Module]:
    return [ConvTranspose2d(cin, cout, k, s, p), nn.LeakyReLU(0.2, inplace=True)]


class ClampAtInference(nn.Module):
    """Identity while training, clip to [0, 1] in eval mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.training else x.clamp(0.0, 1.0)


class BergmannAE(nn.Module):
    """Bergmann et al.'s conv AE; `n_down` stride-2 stages take `size` to `size / 2**n_down`."""

    def __init__(self, channels: int, size: int | tuple[int, int], latent_dim: int = 100, base: int = 32,
                 n_down: int = 4, output: str = "sigmoid"):
        super().__init__()
        widths = [base, base, 2 * base, 4 * base][:n_down] + [4 * base] * max(0, n_down - 4)
        layers: list[nn.Module] = []
        cin = channels
        for i, w in enumerate(widths):
            layers += _conv(cin, w, 4, 2, 1)
            if i > 0:
                layers += _conv(w, w, 3, 1, 1)
            cin = w
        layers += _conv(cin, 2 * base, 3, 1, 1) + _conv(2 * base, base, 3, 1, 1)
        h, w = (size, size) if isinstance(size, int) else size
        self.bottom = (h // 2**n_down, w // 2**n_down)  # the dense bottleneck covers the whole (h, w) map
        layers += [nn.Conv2d(base, latent_dim, self.bottom, 1, 0)]  # whole map -> 1x1 x latent_dim
        self.encoder = nn.Sequential(*layers)
        dec: list[nn.Module] = _deconv(latent_dim, base, self.bottom, 1, 0)
        dec += _conv(base, 2 * base, 3, 1, 1) + _conv(2 * base, cin, 3, 1, 1)
        for i, w in enumerate(reversed(widths)):
            nxt = list(reversed(widths))[i + 1] if i + 1 < len(widths) else base
            if i < len(widths) - 1:
                dec += _conv(w, w, 3, 1, 1)
            dec += _deconv(w, nxt, 4, 2, 1)
        # "clamp": a linear output clipped to [0, 1] only at inference, so the loss's gradient never
        # vanishes the way a saturated sigmoid's does on mostly-black images (MNIST)
        dec += [nn.Conv2d(base, channels, 3, 1, 1), nn.Sigmoid() if output == "sigmoid" else ClampAtInference()]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


@dataclass
class AEConfig(TrainingConfig):
    image_size: int | tuple[int, int] = 128
    latent_dim: int = 100
    base_width: int = 32
    n_down: int = 4
    epochs: int = 40
    lr: float = 5e-4
    batch_size: int = 32
    max_angle: float = 15.0
    ssim_window: int = 11
    output: Literal["sigmoid", "clamp"] = "sigmoid"  # Bergmann et al.'s sigmoid | linear, clipped at inference
    bounds: ClassVar[dict[str, Bound]] = {"latent_dim": AT_LEAST_ONE, "base_width": AT_LEAST_ONE,
                                          "n_down": Bound(ge=1, le=6), "ssim_window": Bound(ge=3, odd=True)}


class _AEBase(TrainableDetector):
    family = "reconstruction"
    Config = AEConfig
    preset_notes = {
        "paper": "Bergmann et al.'s 128 px, latent 100, 10,000 augmented images a category (their schedule)",
        "demo": "the ELPV demo: one channel, 12 epochs of 512 images",
        "cpu_long": "the default model for 100 epochs (a long CPU run: docs/RESULTS.md)",
        "mnist": "MNIST one-vs-rest: 32 px, one channel, latent 32, no rotation or flips",
    }
    presets = {
        # Bergmann et al.: 128 px, latent 100, 10,000 augmented images per category.
        "paper": {"image_size": 128, "latent_dim": 100, "augment_to": 10_000, "epochs": 10, "lr": 2e-4},
        # the ELPV demo: a few minutes on 2 cores.
        "demo": {"image_size": 128, "channels": 1, "epochs": 12, "augment_to": 512},
        # Longer CPU run on one MVTec category (beside the VQ-VAE's `cpu_long`): the default model at
        # Bergmann et al.'s 128 px, 100 epochs of 1024 augmented images (its time on bottle: docs/RESULTS.md).
        "cpu_long": {"image_size": 128, "epochs": 100},
        # MNIST one-vs-rest: 32 px (digits resized from 28), 3 down-samplings to 4x4, latent 32;
        # no rotation or flips (they change a digit's identity). Linear output: with the sigmoid the
        # mostly-black digits drive it into saturation within 30 steps and the AE outputs a blank image.
        "mnist": {"image_size": 32, "channels": 1, "n_down": 3, "latent_dim": 32, "epochs": 30, "lr": 1e-3,
                  "batch_size": 32, "augment_to": None, "rotation": False, "flips": False, "ssim_window": 7,
                  "output": "clamp"},
    }
    config: AEConfig

    def build_model(self) -> nn.Module:
        c = self.config
        return BergmannAE(c.channels, self.input_shape, c.latent_dim, c.base_width, c.n_down, c.output)

    def residual_map(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def map_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual_map(x, self.model(x))

    def embed(self, images) -> dict[str, torch.Tensor]:
        self.require_fitted()
        with torch.inference_mode():
            codes = [self.model.encode(x).flatten(1).float().cpu() for x in self.iter_batches(images)]
        return {"z": torch.cat(codes)}


class AEL2(_AEBase):
    """Conv AE trained with the squared error; map = squared residual averaged over channels."""

    name = "ae_l2"

    def loss(self, model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": F.mse_loss(model(x), x)}

    def residual_map(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        return ((x - x_hat) ** 2).mean(1)


class AESSIM(_AEBase):
    """Conv AE trained with the SSIM loss; map = 1 - SSIM (Bergmann et al. 2019)."""

    name = "ae_ssim"

    def loss(self, model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": 1.0 - ssim_map(model(x), x, self.config.ssim_window).mean()}

    def residual_map(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        return ssim_anomaly_map(x, x_hat, self.config.ssim_window)
