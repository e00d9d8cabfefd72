"""A small DDPM U-Net (Ho et al., 2020, Appendix B; the authors' ``diffusion_tf/models/unet.py``) for ε-prediction.

The network of the paper at a configurable size: a sinusoidal embedding of the timestep through a
two-layer MLP, residual blocks (GroupNorm, SiLU, 3×3 convolution, the timestep embedding added between
the two convolutions, dropout), self-attention at the chosen resolutions and in the middle, strided-
convolution downsampling and nearest-neighbour upsampling, skip connections from every block of the
way down to the way up. As in the paper's code, the last convolution of every residual block, of every
attention block and of the output starts at zero, so the untrained network predicts ε̂ = 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """The Transformer's sinusoidal position embedding of the integer timesteps ``t``: ``(len(t), dim)``."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10_000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * frequencies[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def _zero(module: nn.Conv2d) -> nn.Conv2d:
    nn.init.zeros_(module.weight)
    nn.init.zeros_(module.bias)
    return module


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, plus the projected timestep embedding, then GroupNorm-SiLU-dropout-conv; a residual."""

    def __init__(self, channels_in: int, channels_out: int, embedding: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels_in)
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.time = nn.Linear(embedding, channels_out)
        self.norm2 = nn.GroupNorm(groups, channels_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(channels_out, channels_out, 3, padding=1))
        self.skip = nn.Conv2d(channels_in, channels_out, 1) if channels_in != channels_out else nn.Identity()

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(F.silu(embedding))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over the pixels of a feature map, as a residual."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).transpose(2, 3).unbind(1)  # each (n, hw, c)
        attended = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(attended.transpose(1, 2).reshape(n, c, h, w))


class UNet(nn.Module):
    """ε̂(x_t, t) for images ``(n, channels, size, size)``; ``size`` must be divisible by 2^(levels − 1).

    ``base`` channels at full resolution, ``base × multipliers[i]`` at level ``i``; ``blocks`` residual
    blocks per level on the way down (one more on the way up, as in the paper); attention after the
    blocks of every level whose resolution is in ``attention``, and in the middle.
    """

    def __init__(
        self,
        channels: int,
        size: int,
        *,
        base: int = 16,
        multipliers: Sequence[int] = (1, 2, 2),
        blocks: int = 1,
        attention: Sequence[int] = (),
        dropout: float = 0.0,
        groups: int = 8,
    ) -> None:
        super().__init__()
        if size % 2 ** (len(multipliers) - 1):
            raise ValueError(f"Invalid size: {size} is not divisible by 2^{len(multipliers) - 1}")
        embedding = 4 * base
        self.base = base
        self.time = nn.Sequential(nn.Linear(base, embedding), nn.SiLU(), nn.Linear(embedding, embedding))
        self.input = nn.Conv2d(channels, base, 3, padding=1)
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        skips, width, resolution = [base], base, size
        for level, multiplier in enumerate(multipliers):
            for _ in range(blocks):
                self.down.append(ResBlock(width, base * multiplier, embedding, groups, dropout))
                width = base * multiplier
                skips.append(width)
                if resolution in attention:
                    self.down.append(Attention(width, groups))
            if level < len(multipliers) - 1:
                self.down.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
                skips.append(width)
                resolution //= 2
        middle = [ResBlock(width, width, embedding, groups, dropout) for _ in range(2)]
        self.middle = nn.ModuleList([middle[0], Attention(width, groups), middle[1]])
        for level, multiplier in reversed(list(enumerate(multipliers))):
            for _ in range(blocks + 1):
                self.up.append(ResBlock(width + skips.pop(), base * multiplier, embedding, groups, dropout))
                width = base * multiplier
                if resolution in attention:
                    self.up.append(Attention(width, groups))
            if level > 0:
                upsample = nn.Upsample(scale_factor=2, mode="nearest")
                self.up.append(nn.Sequential(upsample, nn.Conv2d(width, width, 3, padding=1)))
                resolution *= 2
        last = _zero(nn.Conv2d(width, channels, 3, padding=1))
        self.output = nn.Sequential(nn.GroupNorm(groups, width), nn.SiLU(), last)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        embedding = self.time(timestep_embedding(t, self.base))
        h = self.input(x)
        skips = [h]
        for layer in self.down:
            if isinstance(layer, ResBlock):
                h = layer(h, embedding)
                skips.append(h)
            elif isinstance(layer, Attention):  # the block's output, attended, is what skips across
                h = skips[-1] = layer(h)
            else:
                h = layer(h)
                skips.append(h)
        for layer in self.middle:
            h = layer(h, embedding) if isinstance(layer, ResBlock) else layer(h)
        for layer in self.up:
            h = layer(torch.cat([h, skips.pop()], dim=1), embedding) if isinstance(layer, ResBlock) else layer(h)
        return self.output(h)
