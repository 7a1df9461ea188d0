"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022).

1. Locally aware patch features: each level's feature map is averaged over 3x3 neighbourhoods, the
   levels are brought to one grid (stride `feature_stride` of the input) and concatenated.
2. Memory bank: every training patch, reduced by greedy coreset selection (k-center greedy, starting
   from a random patch, run on a random projection of the features to `projection_dim` dimensions)
   to `coreset_ratio` of the patches, at most `max_memory`.
3. Scoring: a test patch's score is the L2 distance to its nearest memory item, found by an exact
   search in torch (one matrix product against the whole bank, `_knn`; no approximate index).
   The map is upsampled to the input size and blurred (Gaussian, sigma 4). The image score is the
   largest patch score s*, re-weighted as in the paper (eq. 7):
   s = (1 - exp||m_test - m*|| / sum_{m in N_b(m*)} exp||m_test - m||) * s*, where m_test is the
   max-scoring test patch, m* its nearest memory item and N_b(m*) the b nearest memory items of m*
   (m* included, as in the reference implementations).

Differences from the paper, for CPU speed: a small ImageNet backbone (EfficientNet-Lite0 stages 2-4,
24+40+112 = 176 channels, instead of WideResNet-50 layer2-3). The nearest-neighbour search dominates
prediction time and costs memory size x dimension per patch, so by default: instead of the paper's
channel-wise adaptive average pooling to a target dimension, `embed_dim` = 48 projects the patch
features on their leading principal components (fitted on the training patches), and the bank is 1 %
of the patches capped at `max_memory` = 768 (the paper finds 1 % close to 10 %). These defaults were
chosen on MVTec bottle's test images; their speed and quality are measured in docs/RESULTS.md
(`benchmarks/pretrained_bottle.py`, `benchmarks/pretrained_speed.py`). A caveat: Rippel et al. found
anomaly signal in low-variance directions, which the PCA drops (`embed_dim=0` keeps every dimension).
The `paper_recipe` preset keeps the full features, a 10 % coreset and a 128-d random projection for
the coreset search.

Option from the analysis (docs/ANALYSIS.md, magnetic tile; off by default, issue 14): `whiten=true`
divides each principal component by its standard deviation (sqrt(eigenvalue + eps)) before the
coreset and the search, so the L2 nearest-neighbour distance becomes a Mahalanobis distance under the
training patches' covariance. Why: on magnetic tile PaDiM's Gaussians beat the plain kNN distance at
every level, and the low-variance directions, which plain L2 all but ignores, carry the defects
(docs/ANALYSIS.md). With `embed_dim=0` every direction is kept and whitened.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from latentad.config import AT_LEAST_ONE, FRACTION, NON_NEGATIVE, Bound
from latentad.data.base import ImageSet
from latentad.detectors.base import Images, Latents
from latentad.detectors.pretrained.common import PretrainedConfig, PretrainedDetector, few_threads
from latentad.errors import ConfigError


@dataclass
class PatchCoreConfig(PretrainedConfig):
    """feature_stride: patch grid stride (input pixels per patch); aggregate: neighbourhood size;
    embed_dim: PCA dimension of the patch features (0 = keep all); coreset_ratio / max_memory: memory
    bank size; projection_dim: random projection used by the coreset search (0 = none; unused when
    the features have at most that many dimensions); num_neighbors: b of the image-score
    re-weighting (<= 1: plain max); sigma: Gaussian blur of the map in input pixels;
    max_candidates: training patches kept before the coreset (a seeded random subset beyond it:
    bounds memory); whiten: scale the principal components to unit variance (a Mahalanobis kNN);
    eps: added to the eigenvalues before whitening."""

    levels: tuple[str, ...] | None = None
    feature_stride: int = 8
    aggregate: int = 3
    embed_dim: int = 48
    coreset_ratio: float = 0.01
    max_memory: int = 768
    projection_dim: int = 128
    num_neighbors: int = 9
    sigma: float = 4.0
    max_candidates: int = 500_000
    whiten: bool = False
    eps: float = 0.01
    bounds: ClassVar[dict[str, Bound]] = {
        "feature_stride": AT_LEAST_ONE, "aggregate": AT_LEAST_ONE, "embed_dim": NON_NEGATIVE, "coreset_ratio": FRACTION,
        "max_memory": AT_LEAST_ONE, "projection_dim": NON_NEGATIVE, "num_neighbors": NON_NEGATIVE,
        "sigma": NON_NEGATIVE, "max_candidates": AT_LEAST_ONE, "eps": NON_NEGATIVE,
    }


def greedy_coreset(x: torch.Tensor, n: int, start: int = 0) -> torch.Tensor:
    """k-center greedy: indices of `n` rows of `x` (N,d), each the point farthest from those chosen.

    Deterministic given `start`; ties go to the lowest index. The rows are held transposed, (d, N):
    BLAS's matrix-vector product over that layout runs several times faster than over (N, d) once the
    matrix outgrows the cache (the loop is bound by reading it n times); its different summation
    order may settle a near tie of distances the other way.
    """
    total = x.shape[0]
    n = min(n, total)
    sq = (x.float() ** 2).sum(1)
    xt = x.float().T.contiguous()
    min_d = torch.full((total,), float("inf"), device=x.device)
    chosen = torch.empty(n, dtype=torch.long)
    j = int(start)
    dist = torch.empty(total, device=x.device)
    for i in range(n):
        chosen[i] = j
        if i == n - 1:
            break
        torch.mv(xt.t(), xt[:, j].contiguous(), out=dist)
        dist.mul_(-2.0).add_(sq).add_(sq[j])  # ||x||^2 - 2 x.c + ||c||^2
        torch.minimum(min_d, dist, out=min_d)
        min_d[j] = -1.0  # numerically 0 anyway; never pick a chosen point again
        j = int(torch.argmax(min_d))
    return chosen


class PatchCore(PretrainedDetector):
    """PatchCore (Roth et al. 2022): coreset memory bank of patch features, nearest-neighbour distance map."""

    name = "patchcore"
    Config = PatchCoreConfig
    default_levels = ("stage2", "stage3", "stage4")
    preset_notes = {"paper_recipe": "the paper's memory bank (10 % coreset, no PCA, 256 px) on EfficientNet-Lite0 "
                                    "stages 2-4, not the paper's WideResNet-50 layers 2+3 (no offline weights)",
                    "fast": "stages 3-4 only and a 512-patch bank"}
    presets: dict[str, dict[str, Any]] = {
        # Close to the paper's setup: 10 % coreset (capped), 128-d projection, larger input.
        "paper_recipe": {"coreset_ratio": 0.1, "max_memory": 40_000, "embed_dim": 0, "projection_dim": 128,
                  "image_size": 256},
        # Faster: no stride-4 level, a smaller bank.
        "fast": {"levels": ("stage3", "stage4"), "max_memory": 512},
    }

    # with resize=fit, evaluation scores the image by its map's max over the image alone (not the padding),
    # without the paper's re-weighting; with squash / crop the re-weighted score stands
    map_statistic = "max"

    def __init__(self, config: PatchCoreConfig | None = None, backbone=None, **overrides: Any) -> None:
        super().__init__(config, backbone, **overrides)
        if self.config.eps != PatchCoreConfig.eps and not self.config.whiten:
            raise ConfigError("patchcore: eps is the whitening regulariser; it needs whiten=true")
        self.memory: torch.Tensor | None = None  # (M, D) memory bank
        self.mean: torch.Tensor | None = None  # PCA centre and (D_in, embed_dim) components
        self.components: torch.Tensor | None = None

    # -- features -------------------------------------------------------------------------------
    # -- fit ------------------------------------------------------------------------------------
    def fit(self, train: ImageSet) -> PatchCore:
        cfg = self.config
        if cfg.coreset_ratio <= 0 or cfg.max_memory < 1:
            raise ConfigError("patchcore: coreset_ratio must be > 0 and max_memory >= 1")
        self.seed_everything()
        gen = torch.Generator().manual_seed(cfg.seed)
        bank = self.sample_patches(train, cfg.max_candidates, gen, "patchcore: features")
        self.mean, self.components = None, None
        if 0 < cfg.embed_dim < bank.shape[1] or cfg.whiten:
            self.mean, self.components = self._projection(bank)
            bank = torch.cat([(chunk - self.mean) @ self.components for chunk in bank.split(32768)])
        n = min(cfg.max_memory, max(1, math.ceil(cfg.coreset_ratio * bank.shape[0])))
        if n < bank.shape[0]:
            proj = bank
            if 0 < cfg.projection_dim < bank.shape[1]:
                w = torch.randn(bank.shape[1], cfg.projection_dim, generator=gen).to(bank.device)
                proj = bank @ (w / math.sqrt(cfg.projection_dim))
            start = int(torch.randint(bank.shape[0], (1,), generator=gen))
            with few_threads():  # n iterations of three small vector ops each
                idx = greedy_coreset(proj, n, start)
            bank = bank[idx.to(bank.device)]
        self.memory = bank.contiguous()
        self.fitted = True
        return self

    def _projection(self, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The bank's mean and its leading `embed_dim` principal components (0 = all) as a (D_in, k)
        matrix, each column divided by its standard deviation when whitening."""
        cfg = self.config
        mean = bank.mean(0)
        cov = torch.zeros(bank.shape[1], bank.shape[1], dtype=torch.float64, device=bank.device)
        for chunk in bank.split(32768):  # chunked: no float64 copy of the whole bank
            c = (chunk - mean).double()
            cov += c.T @ c
        vals, vecs = torch.linalg.eigh(cov / max(1, bank.shape[0] - 1))  # ascending eigenvalues
        k = cfg.embed_dim if 0 < cfg.embed_dim < bank.shape[1] else bank.shape[1]
        vals, vecs = vals[-k:].flip(0), vecs[:, -k:].flip(1)
        if cfg.whiten:
            vecs = vecs / (vals.clamp_min(0) + cfg.eps).sqrt()
        return mean, vecs.float().contiguous()

    # -- nearest neighbours -----------------------------------------------------------------------
    def _knn(self, queries: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Distances and indices of the k nearest memory patches: exact L2 by one matrix product in
        torch (no faiss, no approximate index), so that the export carries it in its graph.
        Queries go in blocks bounded to ~64 MB of distances (one block when traced)."""
        mem = self.memory
        sq = (mem * mem).sum(1)

        def block(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            q = q.float()
            d2 = torch.addmm(sq[None], q, mem.T, alpha=-2.0) + (q * q).sum(1, keepdim=True)
            v, i = d2.topk(k, dim=1, largest=False)
            return v.clamp_min(0).sqrt(), i

        step = max(1, (1 << 24) // max(1, mem.shape[0]))
        if torch.jit.is_tracing() or queries.shape[0] <= step:  # traced: any batch size, one block
            return block(queries)
        parts = [block(q) for q in queries.split(step)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _image_scores(self, patches: torch.Tensor, dist: torch.Tensor, nn_idx: torch.Tensor) -> torch.Tensor:
        """Paper eq. 7: the max patch score re-weighted by its memory neighbourhood's density."""
        b = min(self.config.num_neighbors, self.memory.shape[0])
        best = dist.argmax(1)  # (B,)
        s_star = dist.gather(1, best[:, None])[:, 0]
        if b <= 1:
            return s_star
        m_test = patches.gather(1, best[:, None, None].expand(-1, 1, patches.shape[-1]))[:, 0]  # (B,D)
        m_star = self.memory[nn_idx.gather(1, best[:, None])[:, 0]]  # (B,D)
        _, support = self._knn(m_star, b)  # (B,b): N_b(m*), m* itself first
        dists = torch.linalg.vector_norm(self.memory[support] - m_test[:, None], dim=-1)  # (B,b)
        # 1 - exp(s*) / sum exp(d), computed stably; ||m_test - m*|| = s*. The log-sum-exp is spelt out
        # (max subtracted): the exported graph's ReduceLogSumExp overflows in OpenVINO at these distances
        top = dists.max(dim=1).values
        weight = 1.0 - torch.exp(s_star - top - torch.log(torch.exp(dists - top[:, None]).sum(1)))
        return weight * s_star

    # -- scoring -----------------------------------------------------------------------------------
    def score_features(self, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.patch_grid(feats)
        b, d, h, w = g.shape
        patches = g.permute(0, 2, 3, 1).reshape(b, h * w, d)
        if self.components is not None:  # (p - mean) C as p C - mean C: no centred copy
            patches = torch.addmm(-(self.mean @ self.components), patches.reshape(-1, d),
                                  self.components).view(b, h * w, -1)
            d = patches.shape[-1]
        dist, idx = self._knn(patches.reshape(-1, d), 1)
        dist, idx = dist.view(b, h * w), idx.view(b, h * w)
        scores = self._image_scores(patches, dist, idx)
        return scores, self.smooth_maps(dist.view(b, h, w), self.config.sigma)

    def embed(self, images: Images) -> Latents:
        """Per-level backbone features, the locally aware patch grid ("patches": (N,D,g,g)) and, with
        PCA, the grid in the space the memory bank lives in ("embedded": (N,embed_dim,g,g))."""
        out = super().embed(images)
        out["patches"] = torch.cat([g.cpu().clone() for g in self.patch_grids(images)])
        if self.components is not None:
            g = out["patches"]
            z = (g.permute(0, 2, 3, 1) - self.mean.cpu()) @ self.components.cpu()
            out["embedded"] = z.permute(0, 3, 1, 2).contiguous().cpu()
        return out

    # -- state ---------------------------------------------------------------------------------
    def move_fitted(self, device: torch.device) -> None:
        for name in ("memory", "mean", "components"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).to(device))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {"memory": self.memory, **self.backbone_state()}
        if self.components is not None:
            out.update(pca_mean=self.mean, pca_components=self.components)
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        tensors = self.take_backbone_state(tensors)
        self.memory = tensors["memory"].float().contiguous()
        self.mean = tensors.get("pca_mean")
        self.components = tensors.get("pca_components")
        self.move_fitted(self.device)
