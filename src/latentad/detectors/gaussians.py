"""Streamed Gaussian statistics shared by the detectors that model normal features with Gaussians
(PaDiM's per-position Gaussians, the VQ-VAE's latent Gaussian): moments accumulated batch by batch,
then a regularised or Ledoit-Wolf covariance and its (optionally NPCA-restricted) inverse.
"""

from __future__ import annotations

import torch

from latentad.errors import ConfigError


class GaussianAccumulator:
    """Streaming per-position moments of x (B, P, d): enough for the mean, the covariance and the
    exact Ledoit-Wolf shrinkage (which needs sum_i ||x_i - mean||^4), without keeping the samples.

    Sums are taken around a shift (the first batch's mean), in float64, to avoid cancellation.
    """

    def __init__(self, fourth_moments: bool = False, shift: torch.Tensor | None = None) -> None:
        """`shift`: the shift to take sums around (another accumulator's, so that `minus` applies)."""
        self.n = 0
        self.fourth = fourth_moments
        self.shift: torch.Tensor | None = shift

    def update(self, x: torch.Tensor) -> None:
        x = (x.cpu() if x.device.type == "mps" else x).double()  # MPS has no float64: sums on the CPU there
        if self.n == 0:
            self.shift = x.mean(0) if self.shift is None else self.shift.to(x)
            p, d = self.shift.shape
            kw = {"dtype": torch.float64, "device": x.device}
            self.s1 = torch.zeros(p, d, **kw)
            self.s2 = torch.zeros(p, d, d, **kw)
            if self.fourth:
                self.q1 = torch.zeros(p, **kw)  # sum ||a||^2
                self.q2 = torch.zeros(p, **kw)  # sum ||a||^4
                self.t = torch.zeros(p, d, **kw)  # sum ||a||^2 a
        # contiguous operands: a strided batch operand sent torch.bmm down a path ~500x slower with 2
        # threads on the loaded machines (measured)
        a = (x - self.shift).transpose(0, 1).contiguous()  # (P, B, d)
        self.s1 += a.sum(1)
        self.s2.baddbmm_(a.transpose(1, 2).contiguous(), a)
        if self.fourth:
            q = (a * a).sum(-1)  # (P, B)
            self.q1 += q.sum(1)
            self.q2 += (q * q).sum(1)
            self.t += (q[:, :, None] * a).sum(1)
        self.n += x.shape[0]

    def minus(self, part: GaussianAccumulator) -> GaussianAccumulator:
        """The moments of the samples in self but not in `part` (a subset of them, summed around the
        same shift): a leave-one-fold-out Gaussian without a second pass over the other folds."""
        if part.n == 0:
            return self
        if not torch.equal(part.shift, self.shift) or part.fourth != self.fourth:
            raise ValueError("minus: the part must be summed around the same shift, with the same moments")
        out = GaussianAccumulator(self.fourth, self.shift)
        out.n = self.n - part.n
        names = ("s1", "s2", "q1", "q2", "t") if self.fourth else ("s1", "s2")
        for name in names:
            setattr(out, name, getattr(self, name) - getattr(part, name))
        return out

    def mean_cov(self, unbiased: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (P,d) and covariance (P,d,d), float64 (divided by n-1, or by n when not unbiased)."""
        if self.n < 2:
            raise ConfigError("a Gaussian needs at least 2 training images")
        v = self.s1 / self.n  # mean - shift
        scatter = self.s2 - self.n * v[:, :, None] * v[:, None, :]
        return v + self.shift, scatter / (self.n - 1 if unbiased else self.n)

    def shared(self, share: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (P,d) and one covariance (1,d,d) of the within-position scatter ("covariance"), or one
        mean (1,d) and the covariance about it ("all"), pooled over the P positions."""
        mean, cov = self.mean_cov(unbiased=False)
        p, n = mean.shape[0], self.n
        within = cov.sum(0, keepdim=True) * n  # summed within-position scatter
        if share == "covariance":
            return mean, within / (p * (n - 1))
        mu = mean.mean(0, keepdim=True)
        dev = mean - mu
        return mu, (within + n * dev.T @ dev) / (p * n - 1)

    def ledoit_wolf(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and Ledoit-Wolf shrunk covariance per position, exactly as
        sklearn.covariance.LedoitWolf (biased empirical covariance, shrinkage towards mu * I)."""
        if not self.fourth:
            raise ConfigError("ledoit_wolf needs an accumulator with fourth_moments=True")
        n = self.n
        mean, emp = self.mean_cov(unbiased=False)
        d = emp.shape[-1]
        v = self.s1 / n
        # sum_i ||x_i - mean||^4 = sum (q - 2 l + c)^2 with a = x - shift, l = a.v, c = ||v||^2
        c = (v * v).sum(-1)
        sum_l = (self.s1 * v).sum(-1)
        sum_l2 = torch.einsum("pd,pde,pe->p", v, self.s2, v)
        sum_ql = (self.t * v).sum(-1)
        fourth = (self.q2 + 4 * sum_l2 + n * c**2 - 4 * sum_ql + 2 * c * self.q1 - 4 * c * sum_l)
        tr = torch.diagonal(emp, dim1=-2, dim2=-1).sum(-1)
        mu = tr / d
        delta_ = (emp * emp).sum((-2, -1))  # ||S||_F^2
        beta = (fourth / n - delta_) / (d * n)
        delta = (delta_ - 2 * mu * tr + d * mu**2) / d
        beta = torch.minimum(beta, delta)
        shrink = torch.where(beta > 0, beta / delta.clamp_min(1e-300), torch.zeros_like(beta))
        eye = torch.eye(d, dtype=emp.dtype, device=emp.device)
        cov = (1 - shrink)[:, None, None] * emp + (shrink * mu)[:, None, None] * eye
        return mean, cov


def precision_of(cov: torch.Tensor, npca: float = 0.0) -> torch.Tensor:
    """Inverse of each (d,d) covariance; with npca = t > 0, the pseudo-inverse restricted to the
    components left once the leading ones explaining a fraction t of the variance are dropped."""
    if not npca:
        return torch.cholesky_inverse(torch.linalg.cholesky(cov))
    vals, vecs = torch.linalg.eigh(cov)  # ascending
    desc = vals.flip(-1)
    before = (desc.cumsum(-1) - desc) / desc.sum(-1, keepdim=True)  # variance before each component
    keep = (before >= npca - 1e-12).flip(-1)
    keep[..., 0] = True  # at least the lowest-variance component
    w = torch.where(keep, 1.0 / vals, torch.zeros_like(vals))
    return (vecs * w[..., None, :]) @ vecs.transpose(-1, -2)


def available_memory() -> int | None:
    """Bytes the kernel says can still be allocated (Linux MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_covariance_memory(who: str, positions: int, dim: int, copies: int, available: int | None = None,
                            extra: int = 0) -> None:
    """Refuse, before any work, per-position covariances that cannot fit: `copies` float64 (P, d, d)
    arrays (accumulators, the covariance, its eigenvectors), plus `extra` bytes (e.g. cached training
    grids). Without this the kernel's OOM killer ends the process silently an hour in (a PaDiM on
    1152 ViT channels at stride 8 needs ~40 GiB)."""
    need = copies * positions * dim * dim * 8 + extra
    free = available_memory() if available is None else available
    if free is not None and need > free:
        cached = f" plus {extra / 2**30:.1f} GiB of cached training grids" if extra else ""
        raise ConfigError(
            f"{who}: per-position Gaussians need about {need / 2**30:.1f} GiB ({positions} positions x {dim}^2 "
            f"float64, {copies} copies{cached}), more than the {free / 2**30:.1f} GiB available: lower n_features, "
            "raise feature_stride, or lower image_size"
        )
