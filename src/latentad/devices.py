"""Where a detector runs and in which precision: a runtime choice, never part of the saved model.

`auto` takes a CUDA GPU when torch sees one, then Apple's MPS, else the CPU. A model fitted on a GPU
is saved from CPU copies of its tensors and loads anywhere. Random draws that decide results (data
order, augmentation, coreset start, channel subsets) come from CPU generators seeded from the
config, so a seed means the same draws on every device.

Precision: `32` (default), `16-mixed` (float16 autocast, CUDA only, with gradient scaling in
training) or `bf16-mixed` (bfloat16 autocast, CUDA or CPU). Autocast covers network forwards;
losses and fitted statistics (covariances, distances, memory banks) stay in float32 / float64.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from latentad.errors import ConfigError

PRECISIONS = ("32", "16-mixed", "bf16-mixed")


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """`auto` | `cpu` | `cuda` | `cuda:N` | `mps` -> a torch.device torch can use here, or a one-line
    ConfigError saying what is missing."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = (spec or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ConfigError(f"--device {spec}: not a device (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {spec}: torch sees no CUDA GPU on this machine (use --device cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise ConfigError(f"--device {spec}: MPS is not available on this machine")
    elif device.type != "cpu":
        raise ConfigError(f"--device {spec}: unsupported device type (use auto, cpu, cuda, cuda:N or mps)")
    return device


def check_precision(precision: str, device: torch.device) -> str:
    """Refuse a precision the device cannot run, by name."""
    precision = str(precision)
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
    if precision == "16-mixed" and device.type != "cuda":
        raise ConfigError(f"--precision 16-mixed needs a CUDA GPU (device here: {device}); use bf16-mixed or 32")
    if precision == "bf16-mixed" and device.type == "mps":
        raise ConfigError("--precision bf16-mixed is not supported on MPS; use 32")
    return precision


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Mixed precision for network forwards; a no-op at `32`."""
    if precision == "32":
        yield
        return
    dtype = torch.float16 if precision == "16-mixed" else torch.bfloat16
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """Loss scaling for float16 training on CUDA (bfloat16 and float32 need none)."""
    if precision == "16-mixed" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None
