"""VQ-VAE SSIM and VQ-VAE SSIM+AM (Gangloff, Pham, Courtrai, Lefèvre, RFIAP 2022).

Model (paper section 3.1, after van den Oord et al. 2017): encoder of `n_down` convolutions 4/2/1,
each + ReLU + BatchNorm, then 3 residual blocks; a codebook of M vectors of dimension D, each latent
position takes its nearest vector (L2) and gradients cross the quantiser by the straight-through
copy; a mirrored decoder whose output is the logit of a continuous Bernoulli (lambda = sigmoid).
Loss (eq. 4): continuous-Bernoulli NLL + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2.

Maps (sections 2.2-2.3): "VQ-VAE SSIM" = 1 - SSIM(x, x_hat); "VQ-VAE SSIM+AM" = that map times the
alignment map AM_k = ||z_e_k - e_{z_k}||^2, upsampled to the input size and grey-dilated. The image
score is the mean of the final map (the paper's CIFAR-10 protocol), or its max.

Choices the paper leaves open, made here and documented:
- Reconstruction x_hat for the SSIM map = the continuous Bernoulli's mean E[x], not lambda (lambda is
  far more extreme than the pixel value it explains); `reconstruction="lambda"` gives the other one.
- Scale of the loss terms: the NLL is averaged over pixels and the two codebook terms over latent
  positions and channels (as in van den Oord's reference code, where both are means).
- When `code_dim != width` a 1x1 convolution maps to and from the code dimension (the paper has
  width = D = 256 and needs none).
- Codebook init: uniform(-1/M, 1/M) as in van den Oord's code. Options off in the paper presets:
  k-means init on the first training batch, EMA codebook updates, dead-code reset (codes unused for
  `reset_every` steps are re-drawn from the current batch's encoder outputs).
  With EMA updates the codebook term is dropped (the EMA moves the codes) and the codebook is not a
  trained parameter.
- Training schedule (epochs, learning rate, batch size) and dilation sizes are not in the paper; the
  paper presets use Adam with the values below.
- The continuous Bernoulli's mean never reaches 0 or 1 (it is 1 - 1/eta for a large logit eta, about
  0.93 with lambda <= 1 - 1e-6), so a pure-white background is reconstructed as light grey; SSIM's
  luminance term barely notices it, but it is a property of the likelihood the paper chose.

Option from the analysis (issue 14, off by default): `am="gaussian"` replaces the distance to the
nearest code by the Mahalanobis distance (squared) of z_e to a Ledoit-Wolf Gaussian of the normal
training latents at its position, fitted after training. Why (docs/ANALYSIS.md): the low-variance
components of the VQ-VAE's latent carry the defect (bottom-k components separate better than top-k
ones) and the normal latents are thin (few intrinsic dimensions of the 64), while ||z_e - e||^2
weighs every direction alike; a whitened distance to the normal latents reads those directions.

CPU default (the config defaults; how they were chosen: docs/reconstruction.md): 128 px, width = D = 64,
M = 512, n_down 4 (latent 8x8: the paper's 8x down-sampling reconstructs the defects back and the AM
stays weak within a CPU budget), k-means codebook init + dead-code reset (without them the codebook
collapses to a few codes and the AM lowers the AUROC), 30 epochs of 1024 augmented images, AM
dilation 9. Its figures on bottle: docs/RESULTS.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from latentad.config import AT_LEAST_ONE, NON_NEGATIVE, Bound
from latentad.data.base import ImageSet
from latentad.data.color import luma
from latentad.detectors.base import DetectorConfig, Images, Latents
from latentad.detectors.gaussians import GaussianAccumulator, precision_of
from latentad.detectors.reconstruction.losses import cb_mean_logits
from latentad.detectors.reconstruction.trainable import TrainableDetector, TrainingConfig
from latentad.detectors.reconstruction.vqvae_model import VectorQuantizer, VQVAEModel, code_usage, vqvae_loss
from latentad.errors import ConfigError
from latentad.maps.alignment import alignment_map
from latentad.maps.fusion import fuse_am_ssim
from latentad.maps.morphology import grey_dilation
from latentad.maps.ssim import ssim_anomaly_map


# -- the detector ------------------------------------------------------------------------------------
@dataclass
class VQVAEConfig(TrainingConfig):
    """Defaults = the CPU recipe (module docstring); the paper's settings are the
    `paper_*` presets of `VQVAE.presets`."""

    image_size: int | tuple[int, int] = 128
    channels: Literal[1, 3] = 3
    batch_size: int = 16
    seed: int = 0
    # model (paper: width = code_dim = 256, M = 512; n_down 3 at 256 px)
    width: int = 64
    n_down: int = 4  # 128 px -> latent 8x8: the compression that made the AM useful on CPU budgets
    n_res: int = 3
    codebook_size: int = 512
    code_dim: int = 64
    beta: float = 0.25
    cb_eps: float = 1e-6
    # codebook training (all off in the paper presets)
    kmeans_init: bool = True  # k-means of the first batch's encoder outputs
    ema_decay: float = 0.0  # > 0: EMA codebook updates instead of the codebook loss term
    dead_code_reset: bool = True  # codes unused for `reset_every` steps re-drawn from encoder outputs
    reset_every: int = 50
    # training schedule (latentad.training.TrainSchedule)
    epochs: int = 30  # other schedule fields: TrainingConfig's defaults
    # maps and scores
    reconstruction: Literal["mean", "lambda"] = "mean"  # E[x] of the CB | lambda
    ssim_window: int = 11
    ssim_gray: bool = False  # SSIM on the luminance instead of per channel
    ssim_dilation: int = 0  # grey dilation of the SSIM map (the paper's UCSD variant); 0/1 = off
    am_dilation: int = 9  # grey dilation of the upsampled AM (side of the square, input pixels)
    am_upsample: Literal["bilinear", "nearest"] = "bilinear"
    score: Literal["mean", "max"] = "mean"  # "mean" (paper, CIFAR-10 protocol) | "max"
    am: Literal["code", "gaussian"] = "code"  # the paper's AM | Mahalanobis to the normal latents (above)
    bounds: ClassVar[dict[str, Bound]] = {
        "width": AT_LEAST_ONE, "n_down": Bound(ge=1, le=6), "n_res": NON_NEGATIVE, "codebook_size": Bound(ge=2),
        "code_dim": AT_LEAST_ONE, "beta": NON_NEGATIVE, "cb_eps": Bound(gt=0, lt=0.5), "ema_decay": Bound(ge=0, lt=1),
        "reset_every": AT_LEAST_ONE, "ssim_window": Bound(ge=3, odd=True), "ssim_dilation": NON_NEGATIVE,
        "am_dilation": NON_NEGATIVE,
    }




class VQVAE(TrainableDetector):
    """Shared by both VQ-VAE methods; subclasses only choose the map."""

    family: ClassVar[str] = "reconstruction"
    Config: ClassVar[type[DetectorConfig]] = VQVAEConfig
    config: VQVAEConfig
    use_am: ClassVar[bool] = False
    preset_notes: ClassVar[dict[str, str]] = {
        "paper_mvtec": "the paper's MVTec model (256 px, latent 32x32, width = D = 256, M = 512), sized for a GPU; "
                       "optimiser schedule and dilations are ours (the paper gives none)",
        "paper_ucsd": "the paper's UCSD model (grey 128 px, latent 32x32, SSIM map dilated), sized for a GPU",
        "paper_cifar": "the paper's CIFAR-10 model (32 px, latent 8x8, flips), image score = mean of the map",
        "cpu_long": "the CPU recipe at 256 px, latent 8x8, 100 epochs (a long CPU run: docs/RESULTS.md)",
        "mnist": "MNIST one-vs-rest: 32 px, one channel, latent 4x4",
    }
    # The paper gives the architecture, M, D, beta, the augmentation (MVTec: 1024 images per epoch by
    # random rotation + flips) and the input sizes; it gives neither the optimiser schedule nor the
    # dilation sizes, so those below are our choices (dilations of about one latent cell).
    _paper = dict(width=256, code_dim=256, codebook_size=512, n_res=3, beta=0.25, kmeans_init=False,
                  dead_code_reset=False, ema_decay=0.0, score="mean")
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # MVTec AD: 256 px RGB, 3 down-samplings (latent 32x32).
        "paper_mvtec": dict(_paper, image_size=256, channels=3, n_down=3, epochs=100, lr=2e-4,
                            batch_size=16, augment_to=1024, am_dilation=7, ssim_dilation=0),
        # UCSD Ped1: grayscale 128 px, 2 down-samplings (latent 32x32), grey dilation of the SSIM map.
        "paper_ucsd": dict(_paper, image_size=128, channels=1, n_down=2, epochs=30, lr=2e-4,
                           batch_size=32, augment_to=None, rotation=False, flips=False, am_dilation=5,
                           ssim_dilation=5),
        # CIFAR-10 one-vs-rest: 32 px, 2 down-samplings (latent 8x8); image score = mean of the map.
        "paper_cifar": dict(_paper, image_size=32, channels=3, n_down=2, epochs=50, lr=2e-4,
                            batch_size=128, augment_to=None, rotation=False, flips=True, am_dilation=3,
                            ssim_window=7),
        # Longer CPU run aimed at the paper's bottle figures at the paper's 256 px: latent 8x8 as in the
        # CPU default (n_down 5), 100 epochs; its figures and learning curve: docs/RESULTS.md.
        "cpu_long": dict(image_size=256, n_down=5, width=64, code_dim=64, epochs=100, lr=1e-3,
                         am_dilation=17),
        # MNIST one-vs-rest (no paper figure): 28 px digits resized to 32, latent 4x4 (with 8x8 the
        # VQ-VAE reconstructs the other digits too),
        # the CPU recipe's codebook fixes; no rotation or flips (they change a digit's identity: 6 / 9).
        "mnist": dict(image_size=32, channels=1, n_down=3, width=64, code_dim=64, epochs=30, lr=1e-3,
                      batch_size=32, augment_to=None, rotation=False, flips=False, am_dilation=3,
                      ssim_window=7),
    }
    del _paper

    def __init__(self, config: DetectorConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        if self.config.am != "code" and not self.use_am and type(self) is not VQVAE:
            raise ConfigError(f"{self.name}: am={self.config.am} needs the alignment map (use vqvae_ssim_am)")
        self.model = self.build_model()
        self.latent_mean: torch.Tensor | None = None  # am="gaussian": (P, D) per latent position
        self.latent_precision: torch.Tensor | None = None  # (P, D, D)

    def fit(self, train: ImageSet) -> VQVAE:
        super().fit(train)
        self.latent_mean = self.latent_precision = None
        if self.config.am == "gaussian":
            self.fit_latent_gaussian(train)
        return self

    @torch.inference_mode()
    def fit_latent_gaussian(self, train: ImageSet) -> None:
        """Per-position Ledoit-Wolf Gaussians of the training images' z_e (streamed, PaDiM's moments)."""
        acc = GaussianAccumulator(fourth_moments=True)
        self.model.eval()
        for x in self.iter_batches(train, f"{self.name}: latent Gaussian"):
            z = self.model(x)["z_e"].float()
            acc.update(z.flatten(2).transpose(1, 2))  # (B, P, D)
        mean, cov = acc.ledoit_wolf()
        eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
        # on the model's device (the accumulator sums on the CPU for MPS, which has no float64)
        self.latent_precision = precision_of(cov + 1e-6 * eye).float().contiguous().to(self.device)
        self.latent_mean = mean.float().contiguous().to(self.device)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        extra = {} if self.latent_mean is None else {"latent_gaussian.mean": self.latent_mean,
                                                     "latent_gaussian.precision": self.latent_precision}
        return {**super().state_tensors(), **extra}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        tensors = dict(tensors)
        mean, precision = tensors.pop("latent_gaussian.mean", None), tensors.pop("latent_gaussian.precision", None)
        super().load_state_tensors(tensors)
        self.latent_mean = None if mean is None else mean.float().to(self.device)
        self.latent_precision = None if precision is None else precision.float().to(self.device)

    def move_state(self, device: torch.device) -> None:
        super().move_state(device)
        if self.latent_mean is not None:
            self.latent_mean, self.latent_precision = self.latent_mean.to(device), self.latent_precision.to(device)

    def latent_mahalanobis(self, z_e: torch.Tensor) -> torch.Tensor:
        """(B,D,h,w) -> (B,h,w) squared Mahalanobis distances to each position's normal Gaussian."""
        b, _, h, w = z_e.shape
        delta = (z_e.flatten(2).permute(2, 0, 1) - self.latent_mean[:, None, :]).contiguous()  # (P, B, D)
        d2 = (torch.bmm(delta, self.latent_precision) * delta).sum(-1).clamp_min(0)
        return d2.T.reshape(b, h, w)

    # -- training (through latentad.training.train_model, see TrainableDetector.fit) -------------
    def build_model(self) -> VQVAEModel:
        c = self.config
        return VQVAEModel(c.channels, c.width, c.n_down, c.n_res, c.codebook_size, c.code_dim,
                          c.ema_decay, c.dead_code_reset, c.reset_every, c.kmeans_init)

    def loss(self, model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return vqvae_loss(model, x, self.config.beta, self.config.cb_eps)  # type: ignore[arg-type]

    def epoch_end(self, epoch: int, entry: dict) -> dict:
        """Codebook usage over the epoch: perplexity, codes used, share of dead codes."""
        return self.model.quantizer.usage(reset=True)

    # -- inference ------------------------------------------------------------------------------
    @torch.inference_mode()
    def _forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.config
        self.model.eval()
        out = self.model(x)
        logits = out["logits"].float()
        x_hat = cb_mean_logits(logits) if c.reconstruction == "mean" else torch.sigmoid(logits)
        if c.am == "gaussian":
            if self.latent_mean is None:
                raise ConfigError(f"{self.name}: am=gaussian, but the latent Gaussian was not fitted (fit again)")
            am = self.latent_mahalanobis(out["z_e"].float())
        else:
            am = alignment_map(out["z_e"].float(), out["z_q"].float())
        return {"x_hat": x_hat, "am": am, **out}

    def anomaly_maps(self, x: torch.Tensor, out: dict[str, torch.Tensor]) -> torch.Tensor:
        c = self.config
        xs, xh = x, out["x_hat"]
        if c.ssim_gray and xs.shape[1] == 3:
            xs, xh = luma(xs), luma(xh)
        smap = ssim_anomaly_map(xs, xh, c.ssim_window)
        smap = grey_dilation(smap, c.ssim_dilation)
        if not self.use_am:
            return smap
        return fuse_am_ssim(smap, out["am"], c.am_dilation, c.am_upsample)

    def map_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self.anomaly_maps(x, self._forward(x))

    def embed(self, images: Images) -> Latents:
        """z_e, z_q (B,D,h,w), codes (B,h,w) long, am (B,h,w)."""
        self.require_fitted()
        keys = ("z_e", "z_q", "codes", "am")
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        for x in self.iter_batches(images):
            out = self._forward(x)
            for k in keys:
                parts[k].append(out[k].contiguous().cpu())
        return {k: torch.cat(v) for k, v in parts.items()}

    def reconstruct(self, images: Images) -> torch.Tensor:
        """x_hat (N,C,H,W) in [0,1]."""
        self.require_fitted()
        return torch.cat([self._forward(x)["x_hat"].cpu() for x in self.iter_batches(images)])

    def scored_as(self, method: str) -> VQVAE:
        """The same trained VQ-VAE scored with the other map: `vqvae_ssim` and `vqvae_ssim_am` differ
        only in the map, so one training serves both (the model is shared, not copied)."""
        self.require_fitted()
        cls = {"vqvae_ssim": VQVAESSIM, "vqvae_ssim_am": VQVAESSIMAM}.get(method)
        if cls is None:
            raise ConfigError(f"{self.name}: can be scored as vqvae_ssim or vqvae_ssim_am, not {method!r}")
        other = cls(self.config if cls.use_am else replace(self.config, am="code"))
        other.model, other.history, other.fitted = self.model, self.history, True
        other.latent_mean, other.latent_precision = self.latent_mean, self.latent_precision
        return other

    def codebook_usage(self, images: Images) -> dict[str, float]:
        """Perplexity and used-code share of the codes `images` are quantised to."""
        codes = self.embed(images)["codes"].flatten()
        return code_usage(torch.bincount(codes, minlength=self.config.codebook_size))


class VQVAESSIM(VQVAE):
    """VQ-VAE SSIM: map = 1 - SSIM(x, x_hat)."""

    name: ClassVar[str] = "vqvae_ssim"
    use_am: ClassVar[bool] = False


class VQVAESSIMAM(VQVAE):
    """VQ-VAE SSIM+AM: map = (1 - SSIM) x dilate(upsample(AM))."""

    name: ClassVar[str] = "vqvae_ssim_am"
    use_am: ClassVar[bool] = True


__all__ = ["VQVAE", "VQVAEConfig", "VQVAEModel", "VQVAESSIM", "VQVAESSIMAM", "VectorQuantizer", "code_usage",
           "vqvae_loss"]
