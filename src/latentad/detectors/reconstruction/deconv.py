"""A transposed convolution that computes its weight gradient from NCHW copies while training on the CPU.

Training runs channels-last (`TrainSchedule.channels_last`): the forward and input-gradient kernels
of oneDNN are faster there. Its AVX2 weight-gradient kernel for a channels-last transposed convolution
with few channels (the AE's 32) over a large map is not: the same gradient from NCHW copies of the
input and of the output gradient costs less, the copies included, and the AE's largest up-sampling
dominates its training step. Only that gradient moves; the forward pass and the input gradient are
the usual ones, and the module is an `nn.ConvTranspose2d` with the same parameters and state dict.

The weight gradient is the same sum taken in another order, so it differs from the channels-last one
in the last bits of float32, and training carries that rounding on: an AE trained with this layer
scores slightly differently from one trained with the plain module (the RESULTS page gives by how
much). For a given seed, training stays deterministic and resumable. The VQ-VAE and VAE decoders
(64 channels) keep the plain module: there the channels-last weight gradient is not the slow one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _NCHWWeightGrad(torch.autograd.Function):
    """`conv_transpose2d` with the weight and bias gradients taken from NCHW copies."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                layer: nn.ConvTranspose2d) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.layer = layer
        return F.conv_transpose2d(x, weight, bias, layer.stride, layer.padding, layer.output_padding, layer.groups,
                                  layer.dilation)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        layer = ctx.layer
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        args = (list(layer.stride), list(layer.padding), list(layer.dilation), True, list(layer.output_padding),
                layer.groups)
        bias_sizes = [weight.shape[1] * layer.groups]
        grad_x = torch.ops.aten.convolution_backward(grad, x, weight, bias_sizes, *args, [need_x, False, False])[0]
        grad_w = grad_b = None
        if need_w or need_b:
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad.contiguous(), x.contiguous(), weight.contiguous(), bias_sizes, *args, [False, need_w, need_b])
            if grad_w is not None:
                grad_w = torch.empty_like(weight).copy_(grad_w)  # the parameter's own strides
        return grad_x, grad_w, grad_b, None


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


class ConvTranspose2d(nn.ConvTranspose2d):
    """`nn.ConvTranspose2d`; when it trains in float32 on channels-last CPU input, the weight gradient
    comes from NCHW copies (see the module docstring). Evaluation, export, mixed precision and other
    devices take the usual path."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if self._nchw_weight_grad(x) and output_size is None:
            return _NCHWWeightGrad.apply(x, self.weight, self.bias, self)
        return super().forward(x, output_size)

    def _nchw_weight_grad(self, x: torch.Tensor) -> bool:
        return (self.training and torch.is_grad_enabled() and x.device.type == "cpu" and x.dim() == 4
                and x.dtype == self.weight.dtype == torch.float32 and not _cpu_autocast()
                and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
                and self.padding_mode == "zeros")
