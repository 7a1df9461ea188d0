"""A fusion of detectors from different latent spaces: one detector whose score is a weighted sum of
its members' standardised scores (and maps), what `fit --method auto` builds from the candidates its
search fitted.

Members describe themselves: `specs` holds each member's name, method, preset and full config, saved
with the run, so a saved ensemble rebuilds exactly the members it was fitted with whatever the
portfolio says today. A config with member names only (runs saved before specs, or
`create("ensemble", members=("padim", "patchcore"))`) resolves the names once, at construction,
through the portfolio, and records the specs from then on.

Each member's score (and map) is standardised by the mean and standard deviation it gives on normal
images it was not fitted on: `fit` holds out a seeded share of the training images for that, so a
memory bank that holds its own training patches (near-zero distances) cannot skew the scale.

Scoring (`score_batch`, which `predict`, `evaluate`, `calibrate`, the service and `latentad export`
all run) makes one backbone pass per batch for the members that read the same backbone at the same
input size (`detectors.pretrained.shared.SharedPass`); `LATENTAD_SHARED_PASS=0` gives each member its
own pass. Members may have different input sizes: the ensemble takes the largest, each member gets
the batch resized to its own size with antialiasing, and its map is brought back to the ensemble's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from latentad.backbones import feature_cache
from latentad.config import Bound
from latentad.data.base import ImageSet
from latentad.data.geometry import as_shape
from latentad.detectors.base import Detector, DetectorConfig, Images, Latents, replace_config
from latentad.detectors.pretrained.shared import SharedPass, resize_batch
from latentad.errors import ConfigError
from latentad.registry import build, create, get_method


@dataclass
class EnsembleConfig(DetectorConfig):
    """members: member names; weights: one per member (normalised to sum 1); holdout: share of the
    training images its standardisation is measured on; specs: each member's {name, method, preset,
    config} (filled at construction; names alone are resolved through the portfolio); top: 0 fuses
    every member's standardised score by the weights, m > 0 each image's m highest standardised
    scores, equally (a defect that only a few members see is not averaged away by the others; maps
    stay the weighted mean)."""

    image_size: int | tuple[int, int] = 224
    members: tuple[str, ...] = ("padim", "patchcore")
    weights: tuple[float, ...] = (0.5, 0.5)
    holdout: float = 0.2
    specs: tuple[dict[str, Any], ...] = ()
    top: int = 0
    bounds: ClassVar = {**DetectorConfig.bounds, "holdout": Bound(gt=0, lt=1), "top": Bound(ge=0)}


def describe_member(name: str, det: Detector, preset: str | None = None) -> dict[str, Any]:
    """What a saved ensemble records of a member: enough to rebuild it without the portfolio."""
    return {"name": name, "method": det.name, "preset": preset, "config": dataclasses.asdict(det.config)}


def build_member(spec: dict[str, Any]) -> Detector:
    """A member from its recorded spec (full `config`, or `preset` + `options`), refused by name."""
    try:
        name, method = str(spec["name"]), str(spec["method"])
    except (KeyError, TypeError):
        raise ConfigError(f"ensemble: a member spec needs a name and a method, got {spec!r}") from None
    cls = get_method(method)
    if "config" in spec:
        return build(cls, replace_config(cls.Config(), dict(spec["config"]), f"ensemble member {name}"))
    return create(method, spec.get("preset"), **dict(spec.get("options", {})))


def _by_names(names: tuple[str, ...], size: Any, seed: int) -> list[dict[str, Any]]:
    """Specs of members given by portfolio names (a run saved before specs, or names typed by a user)."""
    from latentad.selection.portfolio import by_name

    known = by_name()
    bad = [m for m in names if m not in known]
    if bad:
        raise ConfigError(f"ensemble: unknown member {bad[0]!r} (known: {', '.join(known)})")
    out = []
    for m in names:
        c = known[m]
        det = create(c.method, c.preset, **{"seed": seed, "image_size": size, **c.options})
        out.append(describe_member(m, det, c.preset))
    return out


class Ensemble(Detector):
    """Weighted fusion of standardised scores and maps of detectors from different latent spaces."""

    name = "ensemble"
    family = "ensemble"
    Config = EnsembleConfig

    def __init__(self, config: EnsembleConfig | None = None, fitted_members: list[Detector] | None = None,
                 **overrides: Any) -> None:
        super().__init__(config, **overrides)
        cfg = self.config
        if len(cfg.members) < 2 or len(cfg.weights) != len(cfg.members):
            raise ConfigError("ensemble: members needs at least two names and weights one number per member")
        if min(cfg.weights) < 0 or sum(cfg.weights) <= 0:
            raise ConfigError("ensemble: weights must be >= 0 with a positive sum")
        if cfg.top > len(cfg.members):
            raise ConfigError(f"ensemble: option top={cfg.top} is out of range (allowed: 0 to the {len(cfg.members)} "
                              "members)")
        specs = list(cfg.specs) or _by_names(cfg.members, cfg.image_size, cfg.seed)
        if [str(s.get("name")) for s in specs] != list(cfg.members):
            raise ConfigError(f"ensemble: the member specs ({', '.join(str(s.get('name')) for s in specs)}) do not "
                              f"match members ({', '.join(cfg.members)})")
        self.members = list(fitted_members) if fitted_members is not None else [build_member(s) for s in specs]
        self.config = dataclasses.replace(cfg, specs=tuple(specs))
        self.weight = torch.tensor(cfg.weights, dtype=torch.float64) / sum(cfg.weights)
        self.localizes = any(m.localizes for m in self.members)
        self.stats = torch.zeros(len(self.members), 4, dtype=torch.float64)  # score mean, std, map mean, std
        self.offset = torch.zeros(1, dtype=torch.float64)  # added to the fused score: see `score_offset`
        self._shared: SharedPass | None = None

    @classmethod
    def of_fitted(cls, names: list[str], detectors: list[Detector], stats: list[list[float]],
                  image_size: Any = None, seed: int = 0, presets: list[str | None] | None = None,
                  top: int = 0) -> Ensemble:
        """Equal-weight fusion of members already fitted (by `fit --method auto`'s search) and their
        standardisation (score mean, std, map mean, std on normal images they were not fitted on).
        Members may have different input sizes: the ensemble's is the largest of theirs (and of
        `image_size`, when given)."""
        specs = tuple(describe_member(n, d, p) for n, d, p in
                      zip(names, detectors, presets or [None] * len(names), strict=True))
        size = largest([d.input_shape for d in detectors] + ([] if image_size is None else [as_shape(image_size)]))
        ens = cls(members=tuple(names), weights=(1.0,) * len(names), image_size=size, seed=seed, specs=specs,
                  fitted_members=list(detectors), top=top)
        ens.stats = torch.tensor(stats, dtype=torch.float64)
        ens.offset = ens.score_offset()
        ens.fitted = True
        return ens

    @property
    def shared(self) -> SharedPass:
        """The members' shared backbone passes (built on first use, after members and device are set)."""
        if self._shared is None or self._shared.members is not self.members:
            self._shared = SharedPass(self.members)
        return self._shared

    def move_state(self, device: torch.device) -> None:
        for m in self.members:
            m.to(device, self.compute_precision)
        self._shared = None

    def fit(self, train: ImageSet) -> Ensemble:
        n = len(train)
        n_held = max(2, int(round(n * self.config.holdout)))
        if n - n_held < 2:
            raise ConfigError(f"ensemble: {n} training images are too few to hold out {self.config.holdout:.0%} "
                              "for standardising the members' scores")
        order = np.random.default_rng(self.config.seed + 31_337).permutation(n)
        fit, held = train.subset(sorted(order[n_held:].tolist())), train.subset(sorted(order[:n_held].tolist()))
        with feature_cache():  # members reading one backbone extract each image once
            for m in self.members:
                m.fit(fit)
        self._shared = None
        self.standardise_on(held)
        self.fitted = True
        return self

    def standardise_on(self, normal: Images) -> Ensemble:
        """Each member's score and map mean and standard deviation on `normal` images it was not fitted
        on, measured as the ensemble scores (each member fed the batch resized from the ensemble's input
        size), so that a member at another size is standardised on what it will see."""
        scores: list[list[torch.Tensor]] = [[] for _ in self.members]
        maps: list[list[torch.Tensor]] = [[] for _ in self.members]
        with torch.inference_mode():
            for x in self.iter_batches(normal):
                for k, (s, amap) in enumerate(self.shared.score(self.member_inputs(x), None)):
                    scores[k].append(s.double().cpu())
                    if amap is not None:
                        maps[k].append(amap.double().cpu())
        for k in range(len(self.members)):
            s = torch.cat(scores[k])
            m = torch.cat(maps[k]) if maps[k] else None
            self.stats[k] = torch.tensor([float(s.mean()), float(s.std(unbiased=False)) + 1e-12,
                                          0.0 if m is None else float(m.mean()),
                                          1.0 if m is None else float(m.std(unbiased=False)) + 1e-12])
        self.offset = self.score_offset()
        return self

    def score_offset(self) -> torch.Tensor:
        """sum_k w_k |mean_k| / std_k, added to the fused score so that it reads sum_k w_k s_k / std_k for
        members scoring >= 0. The standardised sum alone sits near 0 on normal images, where a member's
        tiny relative rounding (an exported graph, another device) becomes a large relative difference;
        a constant shift changes no ranking, AUROC or calibrated verdict. Runs saved without it keep 0."""
        return (self.weight * self.stats[:, 0].abs() / self.stats[:, 1]).sum().reshape(1)

    def member_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The batch at each member's input size (one resized tensor per distinct size)."""
        sized: dict[tuple[int, int], torch.Tensor] = {}
        out = []
        for m in self.members:
            shape = tuple(m.input_shape)
            if shape not in sized:
                sized[shape] = resize_batch(x, shape)
            out.append(sized[shape])
        return out

    def score_batch(self, x: torch.Tensor, share: bool | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weighted sum of the members' standardised scores and maps; `share=False` (or
        `LATENTAD_SHARED_PASS=0`): every member runs its own backbone pass."""
        zs, fused, total = [], None, 0.0
        scored = self.shared.score(self.member_inputs(x), share)
        for k, (s, amap) in enumerate(scored):
            w = float(self.weight[k])
            mu, sd, map_mu, map_sd = (float(v) for v in self.stats[k])
            zs.append((s.double() - mu) / sd)
            if amap is not None:
                if tuple(amap.shape[-2:]) != tuple(x.shape[-2:]):
                    amap = F.interpolate(amap[:, None].float(), size=x.shape[-2:], mode="bilinear",
                                         align_corners=False)[:, 0]
                zm = (amap.float() - map_mu) / map_sd * w
                fused, total = (zm if fused is None else fused + zm), total + w
        fused_scores = self.fuse_scores(torch.stack(zs, 1)) + self.offset.to(x.device)
        return fused_scores, (None if fused is None else fused / total)

    def fuse_scores(self, z: torch.Tensor) -> torch.Tensor:
        """(B, members) standardised scores -> (B,): weighted sum, or the mean of each row's `top` highest."""
        if self.config.top:
            return z.topk(self.config.top, dim=1).values.mean(1)
        return z @ self.weight.to(z.device)

    def embed(self, images: Images) -> Latents:
        out: Latents = {}
        for name, m in zip(self.config.members, self.members, strict=True):
            try:
                out.update({f"{name}.{k}": v for k, v in m.embed(images).items()})
            except NotImplementedError:
                continue
        return out

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {"stats": self.stats, "offset": self.offset}
        for k, m in enumerate(self.members):
            out.update({f"m{k}.{key}": v for key, v in m.state_tensors().items()})
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.stats = tensors["stats"].to(torch.float64)
        self.offset = tensors.get("offset", torch.zeros(1)).to(torch.float64)
        for k, m in enumerate(self.members):
            prefix = f"m{k}."
            m.load_state_tensors({key[len(prefix):]: v for key, v in tensors.items() if key.startswith(prefix)})
            m.fitted = True
        self._shared = None

    def state_json(self) -> dict[str, Any]:
        return {"members": [m.state_json() for m in self.members]}

    def load_state_json(self, state: dict[str, Any]) -> None:
        for m, s in zip(self.members, state.get("members", []), strict=False):
            m.load_state_json(s)

    def weights_sha256(self) -> str | None:
        hashes = [h for h in (m.weights_sha256() for m in self.members) if h is not None]
        return "+".join(hashes) if hashes else None


def largest(shapes: list[tuple[int, int]]) -> tuple[int, int] | int:
    """The largest input shape (by area), as an int when square (the form configs usually hold)."""
    h, w = max(shapes, key=lambda s: (s[0] * s[1], s))
    return h if h == w else (h, w)
