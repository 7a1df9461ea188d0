"""PaDiM (Defard et al., "PaDiM: a Patch Distribution Modeling Framework for Anomaly Detection and
Localization", ICPR 2021).

The backbone levels are brought to one patch grid (stride `feature_stride`) and concatenated; a fixed
random subset of `n_features` channels is kept (chosen once from config.seed). At every grid position
a Gaussian is fitted to the training patches there: mean and covariance + eps * I (the paper's
regulariser, eps = 0.01; "ledoit_wolf" shrinkage is an option).
A test patch scores its Mahalanobis distance to its position's Gaussian; the map is upsampled to the
input size and smoothed by a Gaussian of sigma 4; the image score is the map's maximum.

Fitting streams over the batches: only per-position sums and sums of outer products are held (float64,
positions x d x d), never the features of all images. Scoring is one batched matrix product per batch.

Options from the analysis (docs/ANALYSIS.md, magnetic tile; off by default, issue 14):
- `share="covariance"`: keep a mean per position but fit one covariance to the within-position
  scatter of all positions; `share="all"`: one Gaussian for every position. Why: the analysis found
  that the low-variance components carry the defects on magnetic tile (docs/ANALYSIS.md), and with n
  training images per position in d = 176 dimensions those are the directions a
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
- `head_epochs=n`: a segmentation head (`segment_head.py`) trained n epochs on synthetic defects
  (`head_kinds`, `head_variants` copies of each training image) pasted on the training images, over
  the patch features and the Mahalanobis map; the map is then the sum of both maps, each
  standardised on the clean training images (the head's weighted by `head_weight`); the image score
  is the fused map's maximum, or with `head_score="gaussian"` the Mahalanobis map's. Why: the
  `uneven` tiles' band is normal texture patch by patch; only its disagreement with the rest of the
  tile marks it, which a per-position Gaussian cannot see.

- `standardize="position"`: each position's distance standardised by the mean and std, at that
  position, of the training images' out-of-fold distances (`standardize_folds` folds, each image's
  distance to the Gaussians of the other folds, as a test image's; the training grids are cached
  in float32 for it). Why: the normal spread of the distance differs from position to position
  (docs/ANALYSIS.md), so the raw map's maximum is decided by the positions that vary most on normal
  images; standardised, every position raises its alarm at the same normal rate. The default of 10
  folds was chosen on magnetic tile's validation splits (the header of
  benchmarks/specs/improve_pretrained_standardize.toml says how). With the segmentation head, the
  standardised map is the fusion's Gaussian part (the heads still read raw distances).
- `score_top=f`: the image score is the mean of the map's highest fraction f of pixels instead of its
  maximum (`maps.statistics.top_mean`): one noisy peak no longer decides a tile's score, and a change
  spread over many pixels counts; on magnetic tile the map away from the defects already separates
  the tiles (docs/ANALYSIS.md).

Differences from the paper: EfficientNet-Lite0 stages 2-4 (24+40+112 = 176 channels) instead of
ResNet-18 layers 1-3 (448, 100 kept) or WideResNet-50 (1792, 550 kept); by default the patch grid is at
stride 8 (the paper uses the stride-4 grid of layer 1: the `paper_recipe` preset).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from latentad.config import AT_LEAST_ONE, NON_NEGATIVE, Bound
from latentad.data.base import ImageSet
from latentad.data.defects import ALL_KINDS
from latentad.detectors.base import Images, Latents
from latentad.detectors.gaussians import GaussianAccumulator, check_covariance_memory, precision_of
from latentad.detectors.pretrained.common import PretrainedConfig, PretrainedDetector, few_threads
from latentad.detectors.pretrained.segment_head import HeadEnsemble, train_head, training_grids
from latentad.errors import ConfigError
from latentad.maps.statistics import statistic_name, top_mean


@dataclass
class PaDiMConfig(PretrainedConfig):
    """feature_stride: patch grid stride; n_features: random channel subset size (0 = all channels);
    eps: covariance regulariser; covariance: "plain" (+ eps I) or "ledoit_wolf" (+ eps I);
    sigma: Gaussian blur of the map in input pixels; share: "none" (a Gaussian per position),
    "covariance" (per-position means, one pooled covariance) or "all" (one Gaussian); npca: drop the
    leading components explaining this variance fraction (0 = off); center: "image" subtracts each
    image's mean patch feature, "median" its median patch feature; head_epochs: train a segmentation
    head on synthetic defects for this many epochs (0 = off), head_variants: defect copies of each
    training image, head_kinds: the synthetic kinds (`data.defects`), head_weight: its weight in the
    map; head_score: the image score as the fused map's maximum, or ("gaussian") the Mahalanobis
    map's alone (the head then only localises); head_count: heads averaged, each on its own defects;
    head_gate: multiply the head's map per image by Phi(z - head_gate), z the Mahalanobis image score
    standardised on the (cross-fitted) clean training images (None = no gate);
    score_top: the image score is the mean of the map's highest fraction of pixels (0 = its maximum);
    standardize: "position" standardises each position's distance by the training images'
    out-of-fold distances there ("none": raw distances), standardize_folds: the folds for those."""

    levels: tuple[str, ...] | None = None
    feature_stride: int = 8
    n_features: int = 0
    eps: float = 0.01
    covariance: Literal["plain", "ledoit_wolf"] = "plain"
    sigma: float = 4.0
    share: Literal["none", "covariance", "all"] = "none"
    npca: float = 0.0
    center: Literal["none", "image", "median"] = "none"
    head_epochs: int = 0
    head_variants: int = 3
    head_kinds: tuple[str, ...] = ("cutpaste", "scar", "blend", "band")
    head_weight: float = 1.0
    head_score: Literal["fused", "gaussian"] = "fused"
    head_count: int = 1
    head_gate: float | None = None
    score_top: float = 0.0
    standardize: Literal["none", "position"] = "none"
    standardize_folds: int = 10
    bounds: ClassVar[dict[str, Bound]] = {"feature_stride": AT_LEAST_ONE, "n_features": NON_NEGATIVE,
                                          "eps": NON_NEGATIVE, "sigma": NON_NEGATIVE,
                                          "npca": Bound(ge=0, lt=1), "head_epochs": NON_NEGATIVE,
                                          "head_variants": AT_LEAST_ONE, "head_weight": NON_NEGATIVE,
                                          "head_count": AT_LEAST_ONE, "score_top": Bound(ge=0, lt=1),
                                          "standardize_folds": Bound(ge=2)}


HEAD_SETTINGS = ("head_variants", "head_kinds", "head_weight", "head_score", "head_count", "head_gate")


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

    @property
    def map_statistic(self) -> str | None:  # type: ignore[override]
        """"max" (or "top:f"), unless the image score is taken from the Mahalanobis map while the map is fused."""
        if self.config.head_epochs > 0 and self.config.head_score == "gaussian":
            return None
        return statistic_name(self.config.score_top)

    def __init__(self, config: PaDiMConfig | None = None, backbone=None, **overrides: Any) -> None:
        super().__init__(config, backbone, **overrides)
        if self.config.covariance == "ledoit_wolf" and self.config.share != "none":
            raise ConfigError(f"padim: covariance=ledoit_wolf works per position only (got share={self.config.share})")
        if self.config.head_epochs == 0:  # the head's settings without a head would be silently unused
            defaults = PaDiMConfig()
            unused = [k for k in HEAD_SETTINGS if getattr(self.config, k) != getattr(defaults, k)]
            if unused:
                raise ConfigError(f"padim: {unused[0]} is a setting of the segmentation head, which is off "
                                  "(set head_epochs > 0)")
        if self.config.standardize == "none" and self.config.standardize_folds != PaDiMConfig.standardize_folds:
            raise ConfigError("padim: standardize_folds is a setting of standardize=position, which is off")
        if self.config.head_gate is not None and self.config.standardize != "none":
            raise ConfigError("padim: head_gate is not combined with standardize=position (the gate's statistics "
                              "are of raw distances)")
        bad = [k for k in self.config.head_kinds if k not in ALL_KINDS]
        if bad or not self.config.head_kinds:
            raise ConfigError(f"padim: head_kinds = {list(self.config.head_kinds)!r} must be a non-empty list of "
                              f"{', '.join(ALL_KINDS)}")
        self.mean: torch.Tensor | None = None  # (P, d), or (1, d) with share="all"
        self.precision: torch.Tensor | None = None  # (P, d, d)
        self.channels: torch.Tensor | None = None  # (d,) indices into the concatenated channels
        self.head: HeadEnsemble | None = None
        self.position_stats: torch.Tensor | None = None  # (2, h, w): cross-fitted distances' mean, std

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
        moments = cfg.covariance == "ledoit_wolf"
        acc = GaussianAccumulator(fourth_moments=moments)
        # with the head: two more Gaussians, each of every other image, so that the head learns from
        # distances of images the Gaussian did not see (as at test time), not the shrunken ones of its own
        folds = [GaussianAccumulator(moments), GaussianAccumulator(moments)] if cfg.head_epochs > 0 else []
        cache: list[torch.Tensor] | None = [] if cfg.standardize == "position" else None
        for g in self._grids(train, progress="padim: features"):
            flat = g.flatten(2).transpose(1, 2)  # (B, P, d)
            if acc.n == 0:  # accumulators, then the covariance, its eigenvectors and the precision
                grids = 0 if cache is None else len(train) * flat.shape[1] * flat.shape[2] * 4  # float32
                # with the cache, the fold's accumulator and the total minus it are two more copies
                check_covariance_memory("padim", flat.shape[1], flat.shape[2],
                                        1 + len(folds) + 3 + 2 * (cache is not None), extra=grids)
            acc.update(flat)
            for k, fold in enumerate(folds):  # fold k: the images of even (k=0) / odd global index
                rows = flat[(k + acc.n - len(flat)) % 2::2]
                if len(rows):
                    fold.update(rows)
            if cache is not None:
                cache.append(flat.float().cpu())
        if (folds or cache is not None) and acc.n < 4:
            what = "the segmentation head" if cfg.head_epochs > 0 else "standardize=position"
            raise ConfigError(f"padim: {what} needs at least 4 training images (got {acc.n})")
        self.mean, self.precision = self._gaussian(acc)
        self.head = self._train_head(train, [self._gaussian(f) for f in folds]) if folds else None
        self.position_stats = None if cache is None else self._position_stats(acc, torch.cat(cache))
        self.fitted = True
        return self

    def _gaussian(self, acc: GaussianAccumulator) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, precision) of the accumulated moments, by the configured estimator."""
        cfg = self.config
        with few_threads():  # one small LAPACK call per position
            if cfg.share != "none":
                mean, cov = acc.shared(cfg.share)
            else:
                mean, cov = acc.ledoit_wolf() if cfg.covariance == "ledoit_wolf" else acc.mean_cov()
            d = cov.shape[-1]
            cov = cov + cfg.eps * torch.eye(d, dtype=cov.dtype, device=cov.device)
            precision = precision_of(cov, cfg.npca).float().contiguous().to(self.device)
        return mean.float().contiguous().to(self.device), precision

    def _train_head(self, train: ImageSet, folds: list[tuple[torch.Tensor, torch.Tensor]]) -> HeadEnsemble:
        """`head_count` segmentation heads, each on its own draw of synthetic defects on the training
        images (a pass over them per head); each image's distances are taken to the Gaussian of the
        other fold (cross-fitting)."""
        cfg = self.config

        def grid_and_distance_fn():
            seen = 0

            def grid_and_distance(x: torch.Tensor, variant: int) -> tuple[torch.Tensor, torch.Tensor]:
                nonlocal seen
                g = self.select(self.patch_grid(self.features(x)))
                parity = (torch.arange(len(g), device=g.device) + seen) % 2  # the image's fold
                if variant == cfg.head_variants:  # the batch's last pass: the next batch starts further on
                    seen += len(g)
                other = [self.mahalanobis(g, *folds[1 - k]) for k in (0, 1)]  # distances to the other fold
                return g, torch.where(parity[:, None, None] == 0, other[0], other[1])

            return grid_and_distance

        heads = []
        for j in range(cfg.head_count):
            g, dist, masks, clean = training_grids(self.iter_batches(train, f"padim: synthetic defects {j + 1}"),
                                                   grid_and_distance_fn(), tuple(cfg.head_kinds), cfg.head_variants,
                                                   cfg.seed + 1000 * j, self.grid_size(cfg.feature_stride))
            heads.append(train_head(g, dist, masks, cfg.head_epochs, cfg.seed + 1000 * j, clean))
        ensemble = HeadEnsemble(heads)
        ensemble.standardise(g, dist, clean)
        rows = dist[clean]
        ensemble.set_score_stats(torch.cat([self.smooth_maps(r, cfg.sigma).amax((1, 2)) for r in rows.split(64)]))
        return ensemble.to(self.device)

    def _position_stats(self, acc: GaussianAccumulator, flats: torch.Tensor) -> torch.Tensor:
        """(2, h, w): per position, the mean and std of the training images' out-of-fold distances:
        image i is in fold i % K (K = `standardize_folds`, at most half the images) and scored by the
        Gaussians of the other folds (the total moments minus its fold's, so one pass over the cached
        grids). More folds: fold models nearer the full one whose distances are standardised."""
        cfg = self.config
        n, (h, w) = len(flats), self.grid_size(cfg.feature_stride)
        k_folds = min(cfg.standardize_folds, n // 2)
        dist = torch.empty(n, h, w)
        for k in range(k_folds):
            idx = torch.arange(k, n, k_folds)
            part = GaussianAccumulator(acc.fourth, acc.shift)
            for chunk in idx.split(64):
                part.update(flats[chunk].float().to(self.device))
            mean, precision = self._gaussian(acc.minus(part))
            for chunk in idx.split(64):
                g = flats[chunk].float().to(self.device).transpose(1, 2).reshape(len(chunk), -1, h, w)
                dist[chunk] = self.mahalanobis(g, mean, precision).cpu()
        dist = dist.double()
        return torch.stack([dist.mean(0), dist.std(0).clamp_min(1e-6)]).float().to(self.device)

    def mahalanobis(self, g: torch.Tensor, mean: torch.Tensor | None = None, precision: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """(B,d,h,w) features -> (B,h,w) Mahalanobis distances to each position's Gaussian (the fitted
        ones, or `mean` / `precision` given)."""
        mean = self.mean if mean is None else mean
        precision = self.precision if precision is None else precision
        b, d, h, w = g.shape
        delta = (g.flatten(2).permute(2, 0, 1) - mean[:, None, :]).contiguous()  # (P, B, d)
        if precision.shape[0] == 1:  # one shared covariance
            y = delta @ precision[0]
        else:
            y = torch.bmm(delta, precision)  # (P, B, d); contiguous operands: see update()
        d2 = (y * delta).sum(-1).clamp_min_(0)  # (P, B)
        return d2.sqrt().T.reshape(b, h, w)

    def score_features(self, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.select(self.patch_grid(feats))
        raw = self.mahalanobis(g)
        standardized = self.position_stats is not None
        dist = (raw - self.position_stats[0]) / self.position_stats[1] if standardized else raw
        top = self.config.score_top
        if self.head is None:
            maps = self.smooth_maps(dist, self.config.sigma)
            return top_mean(maps, top), maps
        cfg = self.config
        gaussian = self.smooth_maps(dist, cfg.sigma) if cfg.head_score == "gaussian" or cfg.head_gate is not None \
            else None
        gate = None if cfg.head_gate is None else self.head.gate(gaussian.amax((1, 2)), cfg.head_gate)
        # the heads learnt from raw distances; the fusion takes the (standardised) map as the Gaussian part
        fused = self.head.fuse(dist, self.head(g, raw), cfg.head_weight, gate, standardized)
        maps = self.smooth_maps(fused, cfg.sigma)
        return top_mean(maps if cfg.head_score == "fused" else gaussian, top), maps

    def embed(self, images: Images) -> Latents:
        """Per-level backbone features plus the selected patch features ("patches": (N,d,g,g))."""
        out = super().embed(images)
        out["patches"] = torch.cat([g.cpu().clone() for g in self._grids(images)])
        return out

    def move_fitted(self, device: torch.device) -> None:
        for name in ("mean", "precision", "channels", "head", "position_stats"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).to(device))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        head = {} if self.head is None else {f"head.{k}": v for k, v in self.head.state_dict().items()}
        norm = {} if self.position_stats is None else {"position_stats": self.position_stats}
        return {"mean": self.mean, "precision": self.precision, "channels": self.channels, **head, **norm,
                **self.backbone_state()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        tensors = self.take_backbone_state(tensors)
        self.mean = tensors["mean"].float()
        self.precision = tensors["precision"].float()
        self.channels = tensors["channels"].long()
        self.position_stats = tensors.get("position_stats")
        if (self.position_stats is None) != (self.config.standardize == "none"):
            raise ConfigError(f"padim: the model file's tensors do not match standardize={self.config.standardize}")
        head = {k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")}
        self.head = None
        if head:
            self.head = HeadEnsemble.from_state(head, self.mean.shape[-1])
            if self.config.head_gate is not None and torch.isnan(self.head.score_stats).any():
                raise ConfigError("padim: head_gate needs the training images' score statistics, which this "
                                  "model file predates (refit it)")
