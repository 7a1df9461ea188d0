"""VAE baselines of the reconstruction family, with a spatial (convolutional) latent.

Both methods share one model: the encoder/decoder blocks of the VQ-VAE (`blocks.py`), a 1x1
convolution to a per-position Gaussian posterior N(mu, diag(exp(logvar))) with `latent_ch` channels
at 1 / 2**n_down of the input size, a standard normal prior, and a decoder whose sigmoid output is
the reconstruction. Training loss per image (both means over pixels):

    sum_pixels (x - x_hat)^2 / n_pixels + kl_weight * sum_latent KL(q(z|x) || N(0, I)) / n_pixels

- `vae_l2` (Baur et al. 2021, "Autoencoders for unsupervised anomaly segmentation in brain MR
  images: a comparative study"): map = squared residual (x - x_hat)^2 averaged over channels,
  x_hat decoded from the posterior mean.
- `vae_kl` (Zimmerer et al. 2019, "Unsupervised anomaly localization using variational
  auto-encoders"): map = the KL term of each latent position (summed over latent channels),
  upsampled bilinearly to the input size. (Zimmerer et al. also combine it with the gradient of the
  ELBO; only the KL map is implemented here, as the VQ-VAE paper's comparison uses it.)

Image score: mean of the map (or max).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from latentad.config import AT_LEAST_ONE, NON_NEGATIVE, Bound
from latentad.detectors.base import DetectorConfig, Images, Latents
from latentad.detectors.reconstruction.blocks import Decoder, Encoder
from latentad.detectors.reconstruction.losses import gaussian_kl
from latentad.detectors.reconstruction.trainable import TrainableDetector, TrainingConfig
from latentad.maps.fusion import upsample_map


class SpatialVAE(nn.Module):
    """Encoder -> 1x1 conv to (mu, logvar) per latent position -> sample -> 1x1 conv -> decoder."""

    def __init__(self, channels: int, width: int, n_down: int, n_res: int, latent_ch: int) -> None:
        super().__init__()
        self.encoder = Encoder(channels, width, n_down, n_res)
        self.to_posterior = nn.Conv2d(width, 2 * latent_ch, 1)
        self.from_latent = nn.Conv2d(latent_ch, width, 1)
        self.decoder = Decoder(channels, width, n_down, n_res)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_posterior(self.encoder(x)).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(self.from_latent(z)))

    def forward(self, x: torch.Tensor, sample: bool | None = None) -> dict[str, torch.Tensor]:
        mu, logvar = self.posterior(x)
        sample = self.training if sample is None else sample
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
        return {"x_hat": self.decode(z), "mu": mu, "logvar": logvar, "z": z}


@dataclass
class VAEConfig(TrainingConfig):
    image_size: int | tuple[int, int] = 128
    channels: Literal[1, 3] = 3
    batch_size: int = 16
    seed: int = 0
    width: int = 64
    n_down: int = 3
    n_res: int = 2
    latent_ch: int = 16
    kl_weight: float = 1.0
    epochs: int = 20  # other schedule fields: TrainingConfig's defaults
    kl_upsample: Literal["bilinear", "nearest"] = "bilinear"
    bounds: ClassVar[dict[str, Bound]] = {"width": AT_LEAST_ONE, "n_down": Bound(ge=1, le=6), "n_res": NON_NEGATIVE,
                                          "latent_ch": AT_LEAST_ONE, "kl_weight": NON_NEGATIVE}




class _VAEBase(TrainableDetector):
    family: ClassVar[str] = "reconstruction"
    Config: ClassVar[type[DetectorConfig]] = VAEConfig
    config: VAEConfig
    preset_notes: ClassVar[dict[str, str]] = {
        "paper_mvtec": "the VQ-VAE paper's MVTec sizes (256 px, latent 32x32, width 256), sized for a GPU",
        "paper_ucsd": "the VQ-VAE paper's UCSD sizes (grey 128 px, latent 32x32), sized for a GPU",
        "cpu_long": "the default model for 80 epochs (a long CPU run: docs/RESULTS.md)",
        "mnist": "MNIST one-vs-rest: 32 px, one channel, latent 4x4x16",
    }
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # The VQ-VAE paper's MVTec setting for comparison: 256 px, latent 32x32, width 256.
        "paper_mvtec": dict(image_size=256, n_down=3, width=256, n_res=3, latent_ch=64, epochs=100,
                            lr=2e-4, augment_to=1024),
        # UCSD Ped1 comparison (Table 2 of the VQ-VAE paper): grayscale 128 px, latent 32x32.
        "paper_ucsd": dict(image_size=128, channels=1, n_down=2, width=256, n_res=3, latent_ch=64,
                           epochs=30, lr=2e-4, batch_size=32, augment_to=None, rotation=False,
                           flips=False),
        # Longer CPU run on one MVTec category (beside the VQ-VAE's `cpu_long`): the default model,
        # 80 epochs of 1024 augmented images (its time on bottle: docs/RESULTS.md).
        "cpu_long": dict(image_size=128, epochs=80),
        # MNIST one-vs-rest: 32 px (digits resized from 28), latent 4x4x16, no rotation or flips.
        "mnist": dict(image_size=32, channels=1, n_down=3, width=64, n_res=2, latent_ch=16, epochs=30,
                      lr=1e-3, batch_size=32, augment_to=None, rotation=False, flips=False),
    }

    def __init__(self, config: DetectorConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.model = self.build_model()

    def build_model(self) -> SpatialVAE:
        c = self.config
        return SpatialVAE(c.channels, c.width, c.n_down, c.n_res, c.latent_ch)

    def loss(self, model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = model(x)
        n_pix = x[0].numel()
        rec = F.mse_loss(out["x_hat"].float(), x.float(), reduction="sum") / (x.shape[0] * n_pix)
        kl = gaussian_kl(out["mu"].float(), out["logvar"].float()).sum() / (x.shape[0] * n_pix)
        return {"loss": rec + self.config.kl_weight * kl, "rec": rec.detach(), "kl": kl.detach()}

    def anomaly_map(self, x: torch.Tensor, out: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    @torch.inference_mode()
    def _forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.model.eval()
        out = self.model(x, sample=False)
        out["kl"] = gaussian_kl(out["mu"], out["logvar"]).sum(1)
        return out

    def map_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self.anomaly_map(x, self._forward(x))

    def embed(self, images: Images) -> Latents:
        """mu, logvar (N,latent_ch,h,w) and the per-position KL map kl (N,h,w)."""
        self.require_fitted()
        parts: dict[str, list[torch.Tensor]] = {"mu": [], "logvar": [], "kl": []}
        for x in self.iter_batches(images):
            out = self._forward(x)
            for k in parts:
                parts[k].append(out[k].float().contiguous().cpu())
        return {k: torch.cat(v) for k, v in parts.items()}


class VAEL2(_VAEBase):
    """VAE, map = squared residual (Baur et al. 2021)."""

    name: ClassVar[str] = "vae_l2"

    def anomaly_map(self, x: torch.Tensor, out: dict[str, torch.Tensor]) -> torch.Tensor:
        return ((x - out["x_hat"]) ** 2).mean(1)


class VAEKL(_VAEBase):
    """VAE, map = per-latent-position KL term upsampled (Zimmerer et al. 2019)."""

    name: ClassVar[str] = "vae_kl"

    def anomaly_map(self, x: torch.Tensor, out: dict[str, torch.Tensor]) -> torch.Tensor:
        return upsample_map(out["kl"], tuple(x.shape[-2:]), self.config.kl_upsample)


__all__ = ["SpatialVAE", "VAEConfig", "VAEKL", "VAEL2"]
