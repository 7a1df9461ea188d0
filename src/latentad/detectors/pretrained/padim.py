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
  image to image more than between a defect and its surroundings. `center="median"`: the image's
  per-channel median patch instead, which a defect covering less than half of the image does not move:
  the Gaussians then model how far a patch may sit from its own image's typical patch, so a large
  region finished unlike the rest of its image (magnetic tile's `uneven`, docs/ANALYSIS.md) stands out
  even where its texture alone is a normal one.

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
from latentad.detectors.gaussians import GaussianAccumulator, precision_of
from latentad.detectors.pretrained.common import PretrainedConfig, PretrainedDetector, few_threads
from latentad.errors import ConfigError


@dataclass
class PaDiMConfig(PretrainedConfig):
    """feature_stride: patch grid stride; n_features: random channel subset size (0 = all channels);
    eps: covariance regulariser; covariance: "plain" (+ eps I) or "ledoit_wolf" (+ eps I);
    sigma: Gaussian blur of the map in input pixels; share: "none" (a Gaussian per position),
    "covariance" (per-position means, one pooled covariance) or "all" (one Gaussian); npca: drop the
    leading components explaining this variance fraction (0 = off); center: "image" subtracts each
    image's mean patch feature, "median" its median patch feature."""

    levels: tuple[str, ...] | None = None
    feature_stride: int = 8
    n_features: int = 0
    eps: float = 0.01
    covariance: Literal["plain", "ledoit_wolf"] = "plain"
    sigma: float = 4.0
    share: Literal["none", "covariance", "all"] = "none"
    npca: float = 0.0
    center: Literal["none", "image", "median"] = "none"
    bounds: ClassVar[dict[str, Bound]] = {"feature_stride": AT_LEAST_ONE, "n_features": NON_NEGATIVE,
                                          "eps": NON_NEGATIVE, "sigma": NON_NEGATIVE,
                                          "npca": Bound(ge=0, lt=1)}


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
        """The kept channels of a patch grid, centred on the image's mean (center="image") or median
        (center="median") patch."""
        g = g[:, self.channels]
        if self.config.center == "image":
            return g - g.mean((2, 3), keepdim=True)
        if self.config.center == "median":
            flat = g.flatten(2)  # the lower median, as torch.median, by a sort (ONNX has no median)
            return g - flat.sort(2).values[:, :, (flat.shape[2] - 1) // 2, None, None]
        return g

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
