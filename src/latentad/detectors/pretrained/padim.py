"""PaDiM (Defard et al., "PaDiM: a Patch Distribution Modeling Framework for Anomaly Detection and
Localization", ICPR 2021).

The backbone levels are brought to one patch grid (stride `feature_stride`) and concatenated; a fixed
random subset of `n_features` channels is kept (chosen once from config.seed). At every grid position
a Gaussian is fitted to the training patches there: mean and covariance + eps * I (the paper's
regulariser, eps = 0.01; "ledoit_wolf" shrinkage is an option, slightly worse in our bottle probe).
A test patch scores its Mahalanobis distance to its position's Gaussian; the map is upsampled to the
input size and smoothed by a Gaussian of sigma 4; the image score is the map's maximum.

Fitting streams over the batches: only per-position sums and sums of outer products are held (float64,
positions x d x d), never the features of all images. Scoring is one batched matrix product per batch.

Options from the analysis (docs/ANALYSIS.md, magnetic tile; off by default, issue 14):
- `share="covariance"`: keep a mean per position but fit one covariance to the within-position
  scatter of all positions; `share="all"`: one Gaussian for every position. Why: the analysis found
  that the low-variance components carry the defects (bottom-k 0.829 vs top-k 0.675 on magnetic
  tile), and with n training images per position in d = 176 dimensions those are the directions a
  per-position covariance estimates worst (eps = 0.01 then swamps them); pooling positions gives
  P times more samples. It also fits textures that are not aligned from image to image.
- `npca=t`: Rippel's NPCA on each Gaussian: the leading principal components explaining a fraction
  t of the variance are left out of the distance.
- `center="image"`: subtract each image's own mean patch feature (per channel) before the Gaussian:
  a per-image normalisation of texture statistics, for sets whose brightness / grain varies from
  image to image more than between a defect and its surroundings.

Differences from the paper: EfficientNet-Lite0 stages 2-4 (24+40+112 = 176 channels) instead of
ResNet-18 layers 1-3 (448, 100 kept) or WideResNet-50 (1792, 550 kept); by default the patch grid is at
stride 8 (the paper uses the stride-4 grid of layer 1: the `paper` preset).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from latentad.config import AT_LEAST_ONE, NON_NEGATIVE, Bound
from latentad.data.base import ImageSet
from latentad.detectors.base import Images, Latents
from latentad.detectors.pretrained.common import PretrainedConfig, PretrainedDetector, few_threads
from latentad.errors import ConfigError


@dataclass
class PaDiMConfig(PretrainedConfig):
    """feature_stride: patch grid stride; n_features: random channel subset size (0 = all channels);
    eps: covariance regulariser; covariance: "plain" (+ eps I) or "ledoit_wolf" (+ eps I);
    sigma: Gaussian blur of the map in input pixels; share: "none" (a Gaussian per position),
    "covariance" (per-position means, one pooled covariance) or "all" (one Gaussian); npca: drop the
    leading components explaining this variance fraction (0 = off); center: "image" subtracts each
    image's mean patch feature."""

    levels: tuple[str, ...] | None = None
    feature_stride: int = 8
    n_features: int = 0
    eps: float = 0.01
    covariance: Literal["plain", "ledoit_wolf"] = "plain"
    sigma: float = 4.0
    share: Literal["none", "covariance", "all"] = "none"
    npca: float = 0.0
    center: Literal["none", "image"] = "none"
    bounds: ClassVar[dict[str, Bound]] = {"feature_stride": AT_LEAST_ONE, "n_features": NON_NEGATIVE,
                                          "eps": NON_NEGATIVE, "sigma": NON_NEGATIVE,
                                          "npca": Bound(ge=0, lt=1)}


class GaussianAccumulator:
    """Streaming per-position moments of x (B, P, d): enough for the mean, the covariance and the
    exact Ledoit-Wolf shrinkage (which needs sum_i ||x_i - mean||^4), without keeping the samples.

    Sums are taken around a shift (the first batch's mean), in float64, to avoid cancellation.
    """

    def __init__(self, fourth_moments: bool = False) -> None:
        self.n = 0
        self.fourth = fourth_moments
        self.shift: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        x = (x.cpu() if x.device.type == "mps" else x).double()  # MPS has no float64: sums on the CPU there
        if self.shift is None:
            self.shift = x.mean(0)
            p, d = self.shift.shape
            kw = {"dtype": torch.float64, "device": x.device}
            self.s1 = torch.zeros(p, d, **kw)
            self.s2 = torch.zeros(p, d, d, **kw)
            if self.fourth:
                self.q1 = torch.zeros(p, **kw)  # sum ||a||^2
                self.q2 = torch.zeros(p, **kw)  # sum ||a||^4
                self.t = torch.zeros(p, d, **kw)  # sum ||a||^2 a
        # contiguous operands: a strided batch operand sent torch.bmm down a path ~500x slower with 2
        # threads on the loaded machines (measured)
        a = (x - self.shift).transpose(0, 1).contiguous()  # (P, B, d)
        self.s1 += a.sum(1)
        self.s2.baddbmm_(a.transpose(1, 2).contiguous(), a)
        if self.fourth:
            q = (a * a).sum(-1)  # (P, B)
            self.q1 += q.sum(1)
            self.q2 += (q * q).sum(1)
            self.t += (q[:, :, None] * a).sum(1)
        self.n += x.shape[0]

    def mean_cov(self, unbiased: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (P,d) and covariance (P,d,d), float64 (divided by n-1, or by n when not unbiased)."""
        if self.n < 2:
            raise ConfigError("padim: needs at least 2 training images")
        v = self.s1 / self.n  # mean - shift
        scatter = self.s2 - self.n * v[:, :, None] * v[:, None, :]
        return v + self.shift, scatter / (self.n - 1 if unbiased else self.n)

    def shared(self, share: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (P,d) and one covariance (1,d,d) of the within-position scatter ("covariance"), or one
        mean (1,d) and the covariance about it ("all"), pooled over the P positions."""
        mean, cov = self.mean_cov(unbiased=False)
        p, n = mean.shape[0], self.n
        within = cov.sum(0, keepdim=True) * n  # summed within-position scatter
        if share == "covariance":
            return mean, within / (p * (n - 1))
        mu = mean.mean(0, keepdim=True)
        dev = mean - mu
        return mu, (within + n * dev.T @ dev) / (p * n - 1)

    def ledoit_wolf(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and Ledoit-Wolf shrunk covariance per position, exactly as
        sklearn.covariance.LedoitWolf (biased empirical covariance, shrinkage towards mu * I)."""
        if not self.fourth:
            raise ConfigError("ledoit_wolf needs an accumulator with fourth_moments=True")
        n = self.n
        mean, emp = self.mean_cov(unbiased=False)
        d = emp.shape[-1]
        v = self.s1 / n
        # sum_i ||x_i - mean||^4 = sum (q - 2 l + c)^2 with a = x - shift, l = a.v, c = ||v||^2
        c = (v * v).sum(-1)
        sum_l = (self.s1 * v).sum(-1)
        sum_l2 = torch.einsum("pd,pde,pe->p", v, self.s2, v)
        sum_ql = (self.t * v).sum(-1)
        fourth = (self.q2 + 4 * sum_l2 + n * c**2 - 4 * sum_ql + 2 * c * self.q1 - 4 * c * sum_l)
        tr = torch.diagonal(emp, dim1=-2, dim2=-1).sum(-1)
        mu = tr / d
        delta_ = (emp * emp).sum((-2, -1))  # ||S||_F^2
        beta = (fourth / n - delta_) / (d * n)
        delta = (delta_ - 2 * mu * tr + d * mu**2) / d
        beta = torch.minimum(beta, delta)
        shrink = torch.where(beta > 0, beta / delta.clamp_min(1e-300), torch.zeros_like(beta))
        eye = torch.eye(d, dtype=emp.dtype, device=emp.device)
        cov = (1 - shrink)[:, None, None] * emp + (shrink * mu)[:, None, None] * eye
        return mean, cov


def precision_of(cov: torch.Tensor, npca: float = 0.0) -> torch.Tensor:
    """Inverse of each (d,d) covariance; with npca = t > 0, the pseudo-inverse restricted to the
    components left once the leading ones explaining a fraction t of the variance are dropped."""
    if not npca:
        return torch.cholesky_inverse(torch.linalg.cholesky(cov))
    vals, vecs = torch.linalg.eigh(cov)  # ascending
    desc = vals.flip(-1)
    before = (desc.cumsum(-1) - desc) / desc.sum(-1, keepdim=True)  # variance before each component
    keep = (before >= npca - 1e-12).flip(-1)
    keep[..., 0] = True  # at least the lowest-variance component
    w = torch.where(keep, 1.0 / vals, torch.zeros_like(vals))
    return (vecs * w[..., None, :]) @ vecs.transpose(-1, -2)


class PaDiM(PretrainedDetector):
    """PaDiM (Defard et al. 2021): one Gaussian per patch position, Mahalanobis map, max = image score."""

    name = "padim"
    Config = PaDiMConfig
    default_levels = ("stage2", "stage3", "stage4")
    preset_notes = {"paper_recipe": "the paper's layout (stride-4 grid, 100 random channels, 256 px) on "
                                    "EfficientNet-Lite0 stages 2-4, not the paper's ResNet-18 / WideResNet-50 "
                                    "(no offline weights)"}
    presets: dict[str, dict[str, Any]] = {
        # The paper's layout: stride-4 grid (first level's resolution), 100 random channels.
        "paper_recipe": {"feature_stride": 4, "n_features": 100, "image_size": 256},
    }

    map_statistic = "max"

    def __init__(self, config: PaDiMConfig | None = None, backbone=None, **overrides: Any) -> None:
        super().__init__(config, backbone, **overrides)
        if self.config.covariance == "ledoit_wolf" and self.config.share != "none":
            raise ConfigError(f"padim: covariance=ledoit_wolf works per position only (got share={self.config.share})")
        self.mean: torch.Tensor | None = None  # (P, d), or (1, d) with share="all"
        self.precision: torch.Tensor | None = None  # (P, d, d)
        self.channels: torch.Tensor | None = None  # (d,) indices into the concatenated channels

    def _grids(self, images: Images, progress: str | None = None):
        cfg = self.config
        for g in self.patch_grids(images, progress):
            if self.channels is None:
                total = g.shape[1]
                gen = torch.Generator().manual_seed(cfg.seed)
                k = cfg.n_features if 0 < cfg.n_features < total else total
                self.channels = torch.sort(torch.randperm(total, generator=gen)[:k]).values.to(g.device)
            yield self.select(g)  # (B, d, g, g)

    def select(self, g: torch.Tensor) -> torch.Tensor:
        """The kept channels of a patch grid, centred on the image's mean patch when center="image"."""
        g = g[:, self.channels]
        return g - g.mean((2, 3), keepdim=True) if self.config.center == "image" else g

    def fit(self, train: ImageSet) -> PaDiM:
        cfg = self.config
        self.seed_everything()
        self.channels = None
        acc = GaussianAccumulator(fourth_moments=cfg.covariance == "ledoit_wolf")
        for g in self._grids(train, progress="padim: features"):
            acc.update(g.flatten(2).transpose(1, 2))  # (B, P, d)
        with few_threads():  # one small LAPACK call per position
            if cfg.share != "none":
                mean, cov = acc.shared(cfg.share)
            else:
                mean, cov = acc.ledoit_wolf() if cfg.covariance == "ledoit_wolf" else acc.mean_cov()
            d = cov.shape[-1]
            cov = cov + cfg.eps * torch.eye(d, dtype=cov.dtype, device=cov.device)
            self.precision = precision_of(cov, cfg.npca).float().contiguous().to(self.device)
        self.mean = mean.float().contiguous().to(self.device)
        self.fitted = True
        return self

    def mahalanobis(self, g: torch.Tensor) -> torch.Tensor:
        """(B,d,h,w) features -> (B,h,w) Mahalanobis distances to each position's Gaussian."""
        b, d, h, w = g.shape
        delta = (g.flatten(2).permute(2, 0, 1) - self.mean[:, None, :]).contiguous()  # (P, B, d)
        if self.precision.shape[0] == 1:  # one shared covariance
            y = delta @ self.precision[0]
        else:
            y = torch.bmm(delta, self.precision)  # (P, B, d); contiguous operands: see update()
        d2 = (y * delta).sum(-1).clamp_min_(0)  # (P, B)
        return d2.sqrt().T.reshape(b, h, w)

    def score_features(self, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.smooth_maps(self.mahalanobis(self.select(self.patch_grid(feats))), self.config.sigma)
        return maps.flatten(1).amax(1), maps

    def embed(self, images: Images) -> Latents:
        """Per-level backbone features plus the selected patch features ("patches": (N,d,g,g))."""
        out = super().embed(images)
        out["patches"] = torch.cat([g.cpu().clone() for g in self._grids(images)])
        return out

    def move_fitted(self, device: torch.device) -> None:
        for name in ("mean", "precision", "channels"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).to(device))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "precision": self.precision, "channels": self.channels,
                **self.backbone_state()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        tensors = self.take_backbone_state(tensors)
        self.mean = tensors["mean"].float()
        self.precision = tensors["precision"].float()
        self.channels = tensors["channels"].long()
