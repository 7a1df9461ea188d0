"""The candidates `fit --method auto` chooses among: one method with fixed options each, from all
three families, listed cheapest first.

Why a fixed list: on the real data sets this project has been measured on, five different methods
won and every fixed choice lost heavily on some set; a small portfolio covering the latent spaces
(ImageNet features read as Gaussians or memory banks, a discriminator on them, self-supervised
features, DINOv2 features, a VQ-VAE's latent) and the options that earned a place in
docs/ANALYSIS.md, chosen per data set on its own normal images, is what generalises.

`cost` is a prior: seconds per image fitted or scored relative to `gaussian`, as measured on bottle
on 2 CPU cores (times, not scores; the VQ-VAE's training is a fixed schedule of augmented images, so
its cost is set from its training minutes). It orders the candidates and lets a budget skip one
before it is started; after the first rung the measured seconds replace it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from latentad.errors import ConfigError


@dataclass(frozen=True)
class Candidate:
    """A name users type in `--candidates`, the registered method, its preset and options."""

    name: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None
    cost: float = 1.0
    fused: bool = True  # False: too costly for the default fusion's budget; it competes under --fusion best

    @property
    def family(self) -> str:
        from latentad.registry import get_method

        return get_method(self.method).family

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "method": self.method, "preset": self.preset or "default",
                "options": self.options, "family": self.family}


PORTFOLIO: tuple[Candidate, ...] = (
    Candidate("gaussian", "gaussian", cost=1.0),
    Candidate("padim", "padim", cost=1.0),
    Candidate("padim_npca", "padim", {"npca": 0.99}, cost=1.0),
    Candidate("patchcore", "patchcore", cost=1.0),
    Candidate("patchcore_whiten", "patchcore", {"whiten": True, "embed_dim": 0}, cost=1.0),
    Candidate("simplenet", "simplenet", cost=1.5),
    Candidate("patchcore_dinov2", "patchcore", {"backbone": "dinov2_vits14"}, cost=2.2),
    # the same ImageNet statistics from a wider backbone (Lite2's own input size)
    Candidate("padim_lite2", "padim", {"backbone": "efficientnet_lite2", "image_size": 256}, cost=1.6, fused=False),
    # small defects vanish at 224 px: the memory bank at twice the side
    Candidate("patchcore_448", "patchcore", {"image_size": 448}, cost=3.5, fused=False),
    # AnomalyDINO: DINOv2 patch tokens at 448 px in a memory bank
    Candidate("dino_knn", "dino_knn", cost=4.0, fused=False),
    # one contrastive epoch: the self-supervised latent space at a cost a 10-minute search can hold
    Candidate("ssl_gaussian", "ssl_gaussian", {"objective": "contrastive", "epochs": 1}, cost=1.5),
    # the paper's model with the latent-Gaussian AM (docs/ANALYSIS.md); only large budgets reach it
    Candidate("vqvae_ssim_am", "vqvae_ssim_am", {"am": "gaussian"}, cost=40.0, fused=False),
)


def by_name() -> dict[str, Candidate]:
    return {c.name: c for c in PORTFOLIO}


def parse_candidates(text: str | list[str] | None) -> list[Candidate]:
    """`--candidates a,b,c` (or a list of names, from a --config file) -> those candidates in portfolio
    order (all when None); an unknown name is refused naming the known ones."""
    if text is None:
        return list(PORTFOLIO)
    if isinstance(text, list | tuple):
        if not all(isinstance(n, str) for n in text):
            raise ConfigError(f"--candidates {text!r}: expected candidate names")
        text = ",".join(text)
    if not isinstance(text, str):
        raise ConfigError(f"--candidates {text!r}: expected names separated by commas")
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError("--candidates: empty list (known: " + ", ".join(by_name()) + ")")
    known = by_name()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"--candidates: unknown candidate {unknown[0]!r} (known: {', '.join(known)})")
    return [c for c in PORTFOLIO if c.name in set(names)]
