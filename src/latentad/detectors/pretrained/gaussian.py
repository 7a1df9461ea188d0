"""Gaussian AD (Rippel, Mertens, Merhof, "Modeling the Distribution of Normal Data in Pre-Trained
Deep Features for Anomaly Detection", ICPR 2020).

Each backbone level's feature map is global-average-pooled to one vector per image; one multivariate
Gaussian per level is fitted to the training vectors with Ledoit-Wolf shrinkage
(sklearn.covariance.LedoitWolf); an image's score is the sum over levels of its Mahalanobis distances.
Image level only (localizes = False, no maps).

NPCA (the paper's section on which principal components carry the signal): with `npca` = t > 0,
the leading principal components of each level's covariance that together explain a fraction t of
its variance are dropped and the distance is measured in the remaining low-variance components only
(t = 0.99 keeps the components explaining the last 1 %). `pca` = t > 0 does the opposite (keeps the
leading components explaining t), for comparison.

Threshold: for Gaussian data the squared Mahalanobis distance in k dimensions follows chi2(k), so
`chi2_threshold(fpr)` gives the distance a normal image exceeds with probability `fpr` for one level
(exact), or for the summed score (the sum of independent chi(k_l) variables; its quantile is
computed by seeded Monte Carlo, assuming levels independent, which they are not exactly: a guide,
to be checked against held-out normal data with latentad.calibration).

Differences from the paper: EfficientNet-Lite0 instead of EfficientNet-B4 (the paper's 9 levels are
the stem, the 7 block stages and the head; here `levels` picks among stage1..stage5 and head).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from latentad.config import UNIT, Bound
from latentad.data.base import ImageSet
from latentad.detectors.base import Images, Latents
from latentad.detectors.pretrained.common import PretrainedConfig, PretrainedDetector
from latentad.errors import ConfigError


@dataclass
class GaussianADConfig(PretrainedConfig):
    """npca: drop the leading components explaining this variance fraction (0 = off, e.g. 0.99);
    pca: keep only the leading components explaining this fraction (0 = off)."""

    levels: tuple[str, ...] | None = None
    npca: float = 0.0
    pca: float = 0.0
    bounds: ClassVar[dict[str, Bound]] = {"npca": Bound(ge=0, lt=1), "pca": UNIT}


def select_components(eigvals_desc: np.ndarray, npca: float = 0.0, pca: float = 0.0) -> np.ndarray:
    """Indices (into descending eigenvalues) kept by NPCA / PCA variance thresholds; all by default."""
    total = float(eigvals_desc.sum())
    k = len(eigvals_desc)
    if npca and pca:
        raise ConfigError("gaussian: set npca or pca, not both")
    if not (0.0 <= npca < 1.0 and 0.0 <= pca <= 1.0):
        raise ConfigError("gaussian: npca must be in [0, 1) and pca in [0, 1]")
    if total <= 0 or (not npca and not pca):
        return np.arange(k)
    cum = np.cumsum(eigvals_desc) / total
    before = np.concatenate([[0.0], cum[:-1]])  # variance explained by the components before each one
    if npca:
        keep = np.nonzero(before >= npca - 1e-12)[0]
    else:
        keep = np.nonzero(before < pca - 1e-12)[0]
    return keep if len(keep) else np.array([k - 1 if npca else 0])


class GaussianAD(PretrainedDetector):
    """Gaussian AD (Rippel et al. 2020): one Gaussian per pooled level, summed Mahalanobis; image scores only."""

    name = "gaussian"
    Config = GaussianADConfig
    localizes = False
    default_levels = ("stage3", "stage4", "stage5", "head")
    vit_levels = ("block6",)  # the patchcore probe's block (not probed for pooled features)
    preset_notes = {"paper_recipe": "every stage end + the head of EfficientNet-Lite0 at 256 px, not the "
                                    "paper's 9 levels of EfficientNet-B4 at 380 px (no offline weights)",
                    "npca": "Rippel et al.'s NPCA: only the components past 99 % of the variance"}
    presets: dict[str, dict[str, Any]] = {
        # Every stage end plus the head (the paper uses all 9 levels of EfficientNet-B4 at 380 px).
        "paper_recipe": {"levels": ("stage1", "stage2", "stage3", "stage4", "stage5", "head"), "image_size": 256},
        # The paper's NPCA finding: keep the components explaining the last 1 % of variance.
        "npca": {"npca": 0.99},
    }

    def __init__(self, config: GaussianADConfig | None = None, backbone=None, **overrides: Any) -> None:
        super().__init__(config, backbone, **overrides)
        self.means: dict[str, torch.Tensor] = {}
        self.transforms: dict[str, torch.Tensor] = {}  # (C, k): x -> whitened kept components

    def pooled(self, images: Images, progress: str | None = None) -> dict[str, torch.Tensor]:
        """Global-average-pooled features of every level: {level: (N, C) float64}."""
        out: dict[str, list[torch.Tensor]] = {lv: [] for lv in self.levels}
        for _, feats in self.iter_features(images, progress):
            for lv, f in feats.items():
                out[lv].append(f.float().mean((2, 3)).cpu().double())  # small: statistics stay on the CPU
        return {lv: torch.cat(v) for lv, v in out.items()}

    def fit(self, train: ImageSet) -> GaussianAD:
        from sklearn.covariance import LedoitWolf

        cfg = self.config
        self.seed_everything()
        pooled = self.pooled(train, progress="gaussian: features")
        n = next(iter(pooled.values())).shape[0]
        if n < 2:
            raise ConfigError("gaussian: needs at least 2 training images")
        self.means, self.transforms = {}, {}
        for lv, x in pooled.items():
            lw = LedoitWolf(store_precision=False).fit(x.numpy())  # precision: our own eigh below
            vals, vecs = np.linalg.eigh(lw.covariance_)
            vals, vecs = vals[::-1], vecs[:, ::-1]  # descending
            keep = select_components(vals, cfg.npca, cfg.pca)
            w = vecs[:, keep] / np.sqrt(np.maximum(vals[keep], 1e-12))
            self.means[lv] = torch.from_numpy(lw.location_.copy())
            self.transforms[lv] = torch.from_numpy(np.ascontiguousarray(w))
        self.fitted = True
        return self

    def level_distances(self, images: Images) -> dict[str, np.ndarray]:
        """Mahalanobis distance of every image to each level's Gaussian: {level: (N,)}."""
        self.require_fitted()
        pooled = self.pooled(images)
        return {lv: self._distance(lv, x).numpy() for lv, x in pooled.items()}

    def _distance(self, level: str, x: torch.Tensor) -> torch.Tensor:
        z = (x.double() - self.means[level]) @ self.transforms[level]
        return z.pow(2).sum(1).sqrt()

    def score_features(self, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, None]:
        """The sum over levels of each pooled vector's Mahalanobis distance (float64, as fitted)."""
        total = sum(self._distance(lv, feats[lv].float().mean((2, 3)).to(self.means[lv].device)) for lv in self.means)
        return total, None

    def embed(self, images: Images) -> Latents:
        """The pooled vector of every level: {level: (N, C)} (the space the Gaussians live in)."""
        self.require_fitted()
        return {lv: x.float() for lv, x in self.pooled(images).items()}

    @property
    def degrees_of_freedom(self) -> dict[str, int]:
        return {lv: int(w.shape[1]) for lv, w in self.transforms.items()}

    def chi2_threshold(self, fpr: float = 0.01, level: str | None = None, samples: int = 200_000) -> float:
        """Score above which a Gaussian normal image falls with probability `fpr`.

        For one `level`: sqrt(chi2.ppf(1 - fpr, k)), exact. For the summed score (level None): the
        (1 - fpr) quantile of a sum of independent chi(k_l) variables, by Monte Carlo with a fixed
        seed (exact chi quantile when there is a single level).
        """
        from scipy.stats import chi2

        self.require_fitted()
        if not 0.0 < fpr < 1.0:
            raise ConfigError(f"gaussian: fpr must be in (0, 1), not {fpr}")
        dofs = self.degrees_of_freedom
        if level is not None:
            if level not in dofs:
                raise ConfigError(f"gaussian: unknown level '{level}' (fitted: {', '.join(dofs)})")
            return float(np.sqrt(chi2.ppf(1.0 - fpr, dofs[level])))
        if len(dofs) == 1:
            return float(np.sqrt(chi2.ppf(1.0 - fpr, next(iter(dofs.values())))))
        rng = np.random.default_rng(self.config.seed)
        total = np.zeros(samples)
        for k in dofs.values():
            total += np.sqrt(rng.chisquare(k, samples))
        return float(np.quantile(total, 1.0 - fpr))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for lv in self.means:
            out[f"mean.{lv}"] = self.means[lv]
            out[f"transform.{lv}"] = self.transforms[lv]
        return {**out, **self.backbone_state()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        tensors = self.take_backbone_state(tensors)
        self.means = {lv: tensors[f"mean.{lv}"].double() for lv in self.levels}
        self.transforms = {lv: tensors[f"transform.{lv}"].double() for lv in self.levels}
