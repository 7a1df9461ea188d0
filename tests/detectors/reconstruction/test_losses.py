"""Continuous Bernoulli: log-normaliser against closed form and an independent series, its
continuity at lambda = 1/2, normalisation of the density and its mean, finite gradients."""

import math

import numpy as np
import pytest
import torch

from latentad.detectors.reconstruction.losses import (
    cb_log_norm,
    cb_log_norm_logits,
    cb_mean_logits,
    cb_nll,
    cb_nll_logits,
    gaussian_kl,
)


def closed_form(lam: float) -> float:
    t = 1.0 - 2.0 * lam
    return math.log(2.0 * math.atanh(t) / t)


def series_form(lam: float, terms: int = 60) -> float:
    """log C from artanh(t)/t = sum_k t^(2k) / (2k+1), t = 1 - 2 lambda (exact for |t| < 1)."""
    t = 1.0 - 2.0 * lam
    return math.log(2.0) + math.log(sum(t ** (2 * k) / (2 * k + 1) for k in range(terms)))


@pytest.mark.parametrize("lam", [1e-4, 0.01, 0.1, 0.3, 0.45, 0.49, 0.51, 0.6, 0.9, 0.999])
def test_log_norm_matches_closed_form(lam):
    got = float(cb_log_norm(torch.tensor(lam, dtype=torch.float64)))
    assert got == pytest.approx(closed_form(lam), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("delta", [0.0, 1e-12, 1e-9, 1e-6, 1e-4, 1e-3, 0.01, 0.024, 0.026, 0.05, 0.2])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_log_norm_near_half_matches_series(delta, sign):
    lam = 0.5 + sign * delta
    got = float(cb_log_norm(torch.tensor(lam, dtype=torch.float64)))
    assert got == pytest.approx(series_form(lam), rel=1e-12, abs=1e-13)
    got32 = float(cb_log_norm(torch.tensor(lam, dtype=torch.float32)))
    assert got32 == pytest.approx(series_form(lam), abs=2e-6)


def test_log_norm_exactly_log2_at_half_and_continuous_at_series_switch():
    assert float(cb_log_norm(torch.tensor(0.5))) == pytest.approx(math.log(2.0), abs=1e-7)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 2e-6)):
        for edge in (0.1, -0.1):  # the logit where the series hands over to the closed form
            etas = [edge - 1e-7, edge, edge + 1e-7]
            v = cb_log_norm_logits(torch.tensor(etas, dtype=dtype))
            want = [series_form(1.0 / (1.0 + math.exp(-e))) for e in etas]
            assert np.allclose(v.double().numpy(), want, rtol=0, atol=tol)
    # dense sweep through lambda = 1/2: no jump anywhere
    eta = torch.linspace(-0.5, 0.5, 20001, dtype=torch.float64)
    v = cb_log_norm_logits(eta)
    assert torch.diff(v).abs().max() < 1e-5
    assert torch.allclose(v, v.flip(0))  # even in the logit


@pytest.mark.parametrize("lam", [0.02, 0.3, 0.5, 0.5 + 1e-5, 0.7, 0.97])
def test_density_integrates_to_one_and_mean(lam):
    x = torch.linspace(0.0, 1.0, 40001, dtype=torch.float64)
    lam_t = torch.full_like(x, lam)
    dens = torch.exp(-cb_nll(lam_t, x))
    assert float(torch.trapezoid(dens, x)) == pytest.approx(1.0, abs=1e-7)
    eta = torch.tensor(math.log(lam / (1 - lam)), dtype=torch.float64)
    assert float(cb_mean_logits(eta)) == pytest.approx(float(torch.trapezoid(x * dens, x)), abs=1e-7)


def test_mean_is_not_lambda_and_continuous_at_half():
    eta = torch.linspace(-0.3, 0.3, 6001, dtype=torch.float32)
    m = cb_mean_logits(eta)
    assert torch.diff(m).min() > 0 and torch.diff(m).abs().max() < 1e-4
    assert float(cb_mean_logits(torch.tensor(0.0))) == 0.5
    # lambda = 0.99 has a mean of 99/98 - 1/log(99) ~ 0.79, far from 0.99
    want = 99 / 98 - 1 / math.log(99.0)
    assert float(cb_mean_logits(torch.tensor(math.log(99.0)))) == pytest.approx(want, abs=1e-6)


def test_nll_matches_formula_and_has_finite_gradients_everywhere():
    rng = np.random.default_rng(0)
    lam = torch.tensor(rng.uniform(0.01, 0.99, 50), dtype=torch.float64)
    x = torch.tensor(rng.uniform(0, 1, 50), dtype=torch.float64)
    want = [-(xi * math.log(li) + (1 - xi) * math.log(1 - li) + closed_form(li))
            for li, xi in zip(lam.tolist(), x.tolist(), strict=True)]
    assert torch.allclose(cb_nll(lam, x), torch.tensor(want, dtype=torch.float64), atol=1e-10)
    eta = torch.tensor([0.0, 1e-8, -1e-4, 0.1, 5.0, -40.0, 40.0], requires_grad=True)
    cb_nll_logits(eta, torch.full_like(eta, 0.3)).sum().backward()
    assert torch.isfinite(eta.grad).all()
    assert float(eta.grad[0]) == pytest.approx(0.5 - 0.3, abs=1e-6)  # d/deta at 0 = sigmoid(0)-x - 0


def test_gaussian_kl_zero_at_prior():
    assert float(gaussian_kl(torch.zeros(3), torch.zeros(3)).abs().max()) == 0.0
    assert float(gaussian_kl(torch.tensor([1.0]), torch.tensor([0.0]))) == pytest.approx(0.5)
