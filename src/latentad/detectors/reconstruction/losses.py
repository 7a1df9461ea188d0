"""Likelihoods and divergences of the reconstruction family.

Continuous Bernoulli (Loaiza-Ganem & Cunningham, NeurIPS 2019), the decoder likelihood of the
VQ-VAE paper (Gangloff et al. 2022, section 3.1). For x in [0, 1] and lambda in (0, 1):

    p(x | lambda) = C(lambda) lambda^x (1 - lambda)^(1 - x)
    C(lambda) = 2 artanh(1 - 2 lambda) / (1 - 2 lambda)   (lambda != 1/2),   C(1/2) = 2

Everything here works on the logit eta = log(lambda / (1 - lambda)), where the closed forms become

    C = eta / tanh(eta / 2)                (even in eta; 2 at eta = 0)
    E[x] = 1 / (1 - exp(-eta)) - 1 / eta   (1/2 at eta = 0)

and both are evaluated by their Taylor series for |eta| < 0.1, where the closed forms lose precision
(0 / 0 at lambda = 1/2). lambda is kept in [eps, 1 - eps] by clamping the logit.

Note the mean: the continuous Bernoulli's mean is not lambda (a pixel of value 0.8 is best
explained by lambda ~ 0.99), so a reconstruction to compare with the input is E[x], not lambda.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG2 = math.log(2.0)
_SERIES_BELOW = 0.1  # |eta| under which the Taylor series are used


def logit_bound(eps: float) -> float:
    """The logit of 1 - eps: clamping eta to +-this keeps lambda in [eps, 1 - eps]."""
    return math.log((1.0 - eps) / eps)


def cb_log_norm_logits(eta: torch.Tensor) -> torch.Tensor:
    """log C(lambda) from the logit: log(eta / tanh(eta / 2)), series near 0 (even function)."""
    a = eta.abs()
    small = a < _SERIES_BELOW
    safe = torch.where(small, torch.ones_like(a), a)  # keeps the unused branch (and its grad) finite
    exact = torch.log(safe) - torch.log(torch.tanh(safe / 2))
    e2 = eta * eta
    # log 2 + log(u / tanh u), u = eta/2:  u^2/3 - 7 u^4/90 + 62 u^6/2835
    series = LOG2 + e2 / 12.0 - 7.0 * e2 * e2 / 1440.0 + 62.0 * e2 * e2 * e2 / 181440.0
    return torch.where(small, series, exact)


def cb_log_norm(lam: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """log C(lambda) of the continuous Bernoulli, lambda clamped to [eps, 1 - eps]."""
    lam = lam.clamp(eps, 1.0 - eps)
    return cb_log_norm_logits(torch.log(lam) - torch.log1p(-lam))


def expm1(x: torch.Tensor) -> torch.Tensor:
    """exp(x) - 1 to float precision from operators ONNX has (it has no Expm1): 2t / (1 - t) with
    t = tanh(x / 2) where |x| < 1/2 (no cancellation), exp(x) - 1 elsewhere (none to fear there)."""
    t = torch.tanh(0.5 * x)
    return torch.where(x.abs() < 0.5, 2.0 * t / (1.0 - t), torch.exp(x) - 1.0)


def cb_mean_logits(eta: torch.Tensor) -> torch.Tensor:
    """E[x] under the continuous Bernoulli of logit eta (1/2 at eta = 0, series near 0)."""
    small = eta.abs() < _SERIES_BELOW
    safe = torch.where(small, torch.ones_like(eta), eta)
    exact = -1.0 / expm1(-safe) - 1.0 / safe
    e2 = eta * eta
    series = 0.5 + eta / 12.0 - eta * e2 / 720.0 + eta * e2 * e2 / 30240.0
    return torch.where(small, series, exact)


def cb_nll_logits(eta: torch.Tensor, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Element-wise negative log-density -log p(x | lambda = sigmoid(eta)), lambda in [eps, 1-eps].

    = BCE(eta, x) - log C(lambda). It can be negative (a density, not a probability).
    """
    bound = logit_bound(eps)
    eta = eta.clamp(-bound, bound)
    return F.binary_cross_entropy_with_logits(eta, x, reduction="none") - cb_log_norm_logits(eta)


def cb_nll(lam: torch.Tensor, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Element-wise negative log-density from lambda itself (clamped to [eps, 1 - eps])."""
    lam = lam.clamp(eps, 1.0 - eps)
    return cb_nll_logits(torch.log(lam) - torch.log1p(-lam), x, eps)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) element-wise."""
    return 0.5 * (mu * mu + logvar.exp() - 1.0 - logvar)
