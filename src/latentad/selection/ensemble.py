"""A fusion of detectors from different latent spaces: one detector whose score is a weighted sum of
its members' standardised scores (and maps), what `fit --method auto` builds when a fusion of its two
best candidates beats the best single one on validation by more than the fold noise.

Members are portfolio candidates by name (`selection.portfolio`), all at the ensemble's input size.
Each member's score (and map) is standardised by the mean and standard deviation it gives on normal
images it was not fitted on: `fit` holds out a seeded share of the training images for that, so a
memory bank that holds its own training patches (near-zero distances) cannot skew the scale. The
fusion is plain torch over the members' `score_batch`, so `latentad export` traces the ensemble
into one graph and calibration, prediction and the service treat it like any detector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from latentad.config import Bound
from latentad.data.base import ImageSet
from latentad.detectors.base import Detector, DetectorConfig, Images, Latents
from latentad.errors import ConfigError
from latentad.registry import create


@dataclass
class EnsembleConfig(DetectorConfig):
    """members: portfolio candidate names; weights: one per member (normalised to sum 1);
    holdout: share of the training images its standardisation is measured on."""

    image_size: int | tuple[int, int] = 224
    members: tuple[str, ...] = ("padim", "patchcore")
    weights: tuple[float, ...] = (0.5, 0.5)
    holdout: float = 0.2
    bounds: ClassVar = {**DetectorConfig.bounds, "holdout": Bound(gt=0, lt=1)}


class Ensemble(Detector):
    """Weighted fusion of standardised scores and maps of detectors from different latent spaces."""

    name = "ensemble"
    family = "ensemble"
    Config = EnsembleConfig

    def __init__(self, config: EnsembleConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        from latentad.selection.portfolio import by_name

        cfg = self.config
        known = by_name()
        if len(cfg.members) < 2 or len(cfg.weights) != len(cfg.members):
            raise ConfigError("ensemble: members needs at least two names and weights one number per member")
        if any(m not in known for m in cfg.members):
            bad = next(m for m in cfg.members if m not in known)
            raise ConfigError(f"ensemble: unknown member {bad!r} (known: {', '.join(known)})")
        if min(cfg.weights) < 0 or sum(cfg.weights) <= 0:
            raise ConfigError("ensemble: weights must be >= 0 with a positive sum")
        self.members = [create(known[m].method, known[m].preset, seed=cfg.seed, image_size=cfg.image_size,
                               **known[m].options) for m in cfg.members]
        self.weight = torch.tensor(cfg.weights, dtype=torch.float64) / sum(cfg.weights)
        self.localizes = any(m.localizes for m in self.members)
        self.stats = torch.zeros(len(self.members), 4, dtype=torch.float64)  # score mean, std, map mean, std

    @classmethod
    def of_fitted(cls, names: list[str], detectors: list[Detector], stats: list[list[float]],
                  image_size: Any, seed: int = 0) -> Ensemble:
        """Equal-weight fusion of members already fitted (by `fit --method auto`'s search) and their
        standardisation (score mean, std, map mean, std on normal images they were not fitted on)."""
        ens = cls(members=tuple(names), weights=(1.0,) * len(names), image_size=image_size, seed=seed)
        ens.members = list(detectors)
        ens.localizes = any(m.localizes for m in detectors)
        ens.stats = torch.tensor(stats, dtype=torch.float64)
        ens.fitted = True
        return ens

    def move_state(self, device: torch.device) -> None:
        for m in self.members:
            m.to(device, self.compute_precision)

    def fit(self, train: ImageSet) -> Ensemble:
        n = len(train)
        n_held = max(2, int(round(n * self.config.holdout)))
        if n - n_held < 2:
            raise ConfigError(f"ensemble: {n} training images are too few to hold out {self.config.holdout:.0%} "
                              "for standardising the members' scores")
        order = np.random.default_rng(self.config.seed + 31_337).permutation(n)
        fit, held = train.subset(sorted(order[n_held:].tolist())), train.subset(sorted(order[:n_held].tolist()))
        for k, m in enumerate(self.members):
            m.fit(fit)
            pred = m.predict(held)
            maps = pred.anomaly_maps
            self.stats[k] = torch.tensor([pred.image_scores.mean(), pred.image_scores.std() + 1e-12,
                                          0.0 if maps is None else float(maps.mean()),
                                          1.0 if maps is None else float(maps.std()) + 1e-12])
        self.fitted = True
        return self

    def score_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        score, fused, total = None, None, 0.0
        for k, m in enumerate(self.members):
            s, amap = m.score_batch(x)
            w = float(self.weight[k])
            mu, sd, map_mu, map_sd = (float(v) for v in self.stats[k])
            z = (s.double() - mu) / sd * w
            score = z if score is None else score + z
            if amap is not None:
                if tuple(amap.shape[-2:]) != tuple(x.shape[-2:]):
                    amap = F.interpolate(amap[:, None].float(), size=x.shape[-2:], mode="bilinear",
                                         align_corners=False)[:, 0]
                zm = (amap.float() - map_mu) / map_sd * w
                fused, total = (zm if fused is None else fused + zm), total + w
        return score, (None if fused is None else fused / total)

    def embed(self, images: Images) -> Latents:
        out: Latents = {}
        for name, m in zip(self.config.members, self.members, strict=True):
            try:
                out.update({f"{name}.{k}": v for k, v in m.embed(images).items()})
            except NotImplementedError:
                continue
        return out

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {"stats": self.stats}
        for k, m in enumerate(self.members):
            out.update({f"m{k}.{key}": v for key, v in m.state_tensors().items()})
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.stats = tensors["stats"].to(torch.float64)
        for k, m in enumerate(self.members):
            prefix = f"m{k}."
            m.load_state_tensors({key[len(prefix):]: v for key, v in tensors.items() if key.startswith(prefix)})
            m.fitted = True

    def state_json(self) -> dict[str, Any]:
        return {"members": [m.state_json() for m in self.members]}

    def load_state_json(self, state: dict[str, Any]) -> None:
        for m, s in zip(self.members, state.get("members", []), strict=False):
            m.load_state_json(s)

    def weights_sha256(self) -> str | None:
        hashes = [h for h in (m.weights_sha256() for m in self.members) if h is not None]
        return "+".join(hashes) if hashes else None
