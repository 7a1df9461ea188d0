"""Convolutional building blocks of the reconstruction family (VQ-VAE, VAE, AE).

The layout is the one of Gangloff et al. 2022 (section 3.1), itself taken from van den Oord et al.
2017: `n_down` convolutions 4/2/1 each followed by ReLU and BatchNorm, then residual blocks
`x + conv1x1(relu(conv3x3(relu(x))))`; the decoder mirrors it (residual blocks, then transposed
convolutions 4/2/1, ReLU + BatchNorm between them, none after the last one).

    Encoder(in_ch, width, n_down, n_res):  (B, in_ch, H, W) -> (B, width, H / 2**n_down, W / 2**n_down)
    Decoder(out_ch, width, n_down, n_res): (B, width, h, w) -> (B, out_ch, h * 2**n_down, w * 2**n_down)

The decoder returns raw values (no output activation): the caller decides what they are (logits of
a continuous Bernoulli, a Gaussian mean, ...).
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))); 3x3 stride 1 padding 1, 1x1 stride 1 padding 0."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv3 = nn.Conv2d(width, width, 3, 1, 1)
        self.conv1 = nn.Conv2d(width, width, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(torch.relu(self.conv3(torch.relu(x))))


class Encoder(nn.Module):
    """`n_down` x (conv 4/2/1 -> ReLU -> BatchNorm), then `n_res` residual blocks."""

    def __init__(self, in_ch: int, width: int, n_down: int, n_res: int = 3) -> None:
        super().__init__()
        if n_down < 1:
            raise ValueError("Encoder: n_down must be >= 1")
        layers: list[nn.Module] = []
        ch = in_ch
        for _ in range(n_down):
            layers += [nn.Conv2d(ch, width, 4, 2, 1), nn.ReLU(inplace=True), nn.BatchNorm2d(width)]
            ch = width
        layers += [ResidualBlock(width) for _ in range(n_res)]
        self.net = nn.Sequential(*layers)
        self.n_down = n_down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """Mirror of `Encoder`: `n_res` residual blocks, then `n_down` transposed convolutions 4/2/1
    (ReLU -> BatchNorm after each but the last, which outputs `out_ch` raw values)."""

    def __init__(self, out_ch: int, width: int, n_down: int, n_res: int = 3) -> None:
        super().__init__()
        if n_down < 1:
            raise ValueError("Decoder: n_down must be >= 1")
        layers: list[nn.Module] = [ResidualBlock(width) for _ in range(n_res)]
        for i in range(n_down):
            last = i == n_down - 1
            layers.append(nn.ConvTranspose2d(width, out_ch if last else width, 4, 2, 1))
            if not last:
                layers += [nn.ReLU(inplace=True), nn.BatchNorm2d(width)]
        self.net = nn.Sequential(*layers)
        self.n_down = n_down

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
