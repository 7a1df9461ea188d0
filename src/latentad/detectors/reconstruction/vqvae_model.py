"""The VQ-VAE network of `vqvae` (Gangloff et al. 2022, after van den Oord et al. 2017): the
quantiser with its codebook options, the encoder / decoder model and the training loss. The detector,
its maps and presets are in `vqvae.py`; the design choices are documented there.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latentad.detectors.reconstruction.blocks import Decoder, Encoder
from latentad.detectors.reconstruction.losses import cb_nll_logits


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantiser with a straight-through gradient.

    forward(z_e (B,D,h,w)) -> (z_q_st, codes (B,h,w), z_q, losses). z_q_st equals z_q in value and
    carries the gradient of z_q back to z_e unchanged (d loss / d z_e = d loss / d z_q).
    """

    def __init__(
        self,
        codebook_size: int,
        code_dim: int,
        ema_decay: float = 0.0,
        dead_code_reset: bool = False,
        reset_every: int = 50,
        kmeans_init: bool = False,
    ) -> None:
        super().__init__()
        self.codebook_size, self.code_dim = codebook_size, code_dim
        self.ema_decay, self.dead_code_reset = ema_decay, dead_code_reset
        self.reset_every, self.kmeans_init = reset_every, kmeans_init
        m = codebook_size
        self.codebook = nn.Parameter(torch.empty(m, code_dim).uniform_(-1.0 / m, 1.0 / m))
        if ema_decay > 0:
            self.codebook.requires_grad_(False)
        # training-time bookkeeping; buffers, so checkpoints (and resumes) carry them
        self.register_buffer("epoch_counts", torch.zeros(m))
        self.register_buffer("reset_counts", torch.zeros(m))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.long))
        self.register_buffer("ema_size", torch.zeros(m))
        self.register_buffer("ema_sum", torch.zeros(m, code_dim))

    def _flat(self, z_e: torch.Tensor) -> torch.Tensor:
        return z_e.detach().permute(0, 2, 3, 1).reshape(-1, self.code_dim).float()

    def _codes(self, flat: torch.Tensor) -> torch.Tensor:
        cb = self.codebook.detach()
        dist = (flat * flat).sum(1, keepdim=True) - 2.0 * flat @ cb.t() + (cb * cb).sum(1)[None]
        return dist.argmin(1)

    @torch.no_grad()
    def _kmeans(self, flat: torch.Tensor, iters: int = 10) -> None:
        m = self.codebook_size
        if flat.shape[0] > 20000:
            flat = flat[torch.randperm(flat.shape[0])[:20000]]
        centres = flat[torch.randint(flat.shape[0], (m,))].clone()
        for _ in range(iters):
            d = (flat * flat).sum(1, keepdim=True) - 2.0 * flat @ centres.t() + (centres**2).sum(1)[None]
            idx = d.argmin(1)
            sums = torch.zeros_like(centres).index_add_(0, idx, flat)
            size = torch.bincount(idx, minlength=m).float()
            empty = size == 0
            refill = flat[torch.randint(flat.shape[0], (m,))]
            centres = torch.where(empty[:, None], refill, sums / size.clamp(min=1)[:, None])
        self.codebook.data.copy_(centres)
        self.ema_sum.copy_(centres)
        self.ema_size.fill_(1.0)

    @torch.no_grad()
    def _reset_dead(self, flat: torch.Tensor) -> None:
        dead = self.reset_counts == 0
        n = int(dead.sum())
        if n:
            pick = flat[torch.randint(flat.shape[0], (n,))]
            self.codebook.data[dead] = pick
            if self.ema_decay > 0:
                self.ema_sum[dead] = pick
                self.ema_size[dead] = 1.0
        self.reset_counts.zero_()

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, codes: torch.Tensor) -> None:
        d, m = self.ema_decay, self.codebook_size
        size = torch.bincount(codes, minlength=m).float()
        sums = torch.zeros(m, self.code_dim, device=flat.device).index_add_(0, codes, flat)
        self.ema_size.mul_(d).add_(size, alpha=1 - d)
        self.ema_sum.mul_(d).add_(sums, alpha=1 - d)
        n = self.ema_size.sum()
        smoothed = (self.ema_size + 1e-5) / (n + m * 1e-5) * n  # Laplace smoothing
        self.codebook.data.copy_(self.ema_sum / smoothed[:, None])

    def forward(self, z_e: torch.Tensor):
        b, _, h, w = z_e.shape
        flat = self._flat(z_e)
        if self.training:
            if self.kmeans_init and int(self.initialised) == 0:
                self._kmeans(flat)
            self.initialised.fill_(1)
            if self.dead_code_reset and int(self.steps) > 0 and int(self.steps) % self.reset_every == 0:
                self._reset_dead(flat)
        codes = self._codes(flat)
        if self.training:
            with torch.no_grad():
                counts = torch.bincount(codes, minlength=self.codebook_size).float()
                self.epoch_counts += counts
                self.reset_counts += counts
                self.steps += 1
            if self.ema_decay > 0:
                self._ema_update(flat, codes)
        z_q = self.codebook[codes].view(b, h, w, self.code_dim).permute(0, 3, 1, 2)
        codebook_loss = F.mse_loss(z_q, z_e.detach()) if self.ema_decay <= 0 else z_e.new_zeros(())
        commitment = F.mse_loss(z_e, z_q.detach())
        z_q_st = z_e + (z_q - z_e).detach()
        return z_q_st, codes.view(b, h, w), z_q, {"codebook": codebook_loss, "commitment": commitment}

    @torch.no_grad()
    def usage(self, reset: bool = True) -> dict[str, float]:
        """Codebook usage since the last call: perplexity, codes used, share of dead codes."""
        stats = code_usage(self.epoch_counts)
        if reset:
            self.epoch_counts.zero_()
        return stats


def code_usage(counts: torch.Tensor) -> dict[str, float]:
    """Perplexity (exp of the entropy of code frequencies), codes used and share of dead codes, from
    per-code counts (M,); the one definition both training statistics and `codebook_usage` use."""
    counts = counts.double()
    total = counts.sum()
    if total <= 0:
        return {"perplexity": 0.0, "codes_used": 0, "dead_share": 1.0}
    p = counts[counts > 0] / total
    used = int((counts > 0).sum())
    return {"perplexity": float((-(p * p.log()).sum()).exp()), "codes_used": used,
            "dead_share": 1.0 - used / counts.numel()}


class VQVAEModel(nn.Module):
    """Encoder -> (1x1 to D) -> quantiser -> (1x1 to width) -> decoder -> continuous-Bernoulli logits."""

    def __init__(
        self,
        channels: int,
        width: int,
        n_down: int,
        n_res: int,
        codebook_size: int,
        code_dim: int,
        ema_decay: float = 0.0,
        dead_code_reset: bool = False,
        reset_every: int = 50,
        kmeans_init: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = Encoder(channels, width, n_down, n_res)
        self.pre = nn.Conv2d(width, code_dim, 1) if code_dim != width else nn.Identity()
        self.quantizer = VectorQuantizer(codebook_size, code_dim, ema_decay, dead_code_reset, reset_every,
                                         kmeans_init)
        self.post = nn.Conv2d(code_dim, width, 1) if code_dim != width else nn.Identity()
        self.decoder = Decoder(channels, width, n_down, n_res)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.pre(self.encoder(x))

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        z_e = self.encode(x)
        z_q_st, codes, z_q, losses = self.quantizer(z_e)
        logits = self.decoder(self.post(z_q_st))
        return {"logits": logits, "z_e": z_e, "z_q": z_q, "codes": codes, **losses}


def vqvae_loss(model: VQVAEModel, x: torch.Tensor, beta: float, eps: float = 1e-6) -> dict[str, torch.Tensor]:
    """Eq. 4 of the paper: CB NLL (mean over pixels) + codebook + beta * commitment."""
    out = model(x)
    nll = cb_nll_logits(out["logits"].float(), x.float(), eps).mean()
    loss = nll + out["codebook"] + beta * out["commitment"]
    return {"loss": loss, "nll": nll.detach(), "codebook": out["codebook"].detach(),
            "commit": out["commitment"].detach()}
