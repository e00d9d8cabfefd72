"""Models used by the arena's tasks."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def mlp(inputs: int, hidden: tuple[int, ...], classes: int) -> nn.Sequential:
    """A ReLU multi-layer perceptron."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = inputs
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """Two 3×3 conv blocks with max-pooling and a linear classifier, for small images."""

    def __init__(self, in_channels: int, classes: int, size: int, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(2 * width * (size // 4) ** 2, classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


# --------------------------------------------------------------------------------------------------
# Input standardisation: data stays uint8 in memory (4x smaller than float32) and becomes float on the
# device, inside the model, so no task needs its own batch-conversion code.


class Standardize(nn.Module):
    """``(x * scale - mean) / std`` per channel (dimension 1), casting integer inputs (uint8 pixels) to float.

    ``mean`` and ``std`` are in the scaled units (e.g. pixel / 255); they are buffers, not parameters,
    so no optimizer ever sees them.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], scale: float = 1 / 255) -> None:
        super().__init__()
        shape = (1, len(mean))
        self.scale = scale
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(shape))

    def forward(self, x: Tensor) -> Tensor:
        extra = (1,) * (x.ndim - 2)  # broadcast over the spatial dimensions, whatever their number
        mean, std = self.mean.reshape(*self.mean.shape, *extra), self.std.reshape(*self.std.shape, *extra)
        return (x.float() * self.scale - mean) / std


def standardized(model: nn.Module, mean: Sequence[float], std: Sequence[float], scale: float = 1 / 255) -> nn.Module:
    """``model`` preceded by :class:`Standardize`; its parameters are named ``net.*``."""
    return nn.Sequential(OrderedDict(input=Standardize(mean, std, scale), net=model))


# --------------------------------------------------------------------------------------------------
# ResNets for 32x32 images.


class _OptionAShortcut(nn.Module):
    """He et al. (2016), CIFAR experiments, option A: subsample by 2 and zero-pad the new channels (no parameters)."""

    def __init__(self, extra_channels: int) -> None:
        super().__init__()
        self.extra = extra_channels

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, ::2, ::2]
        half = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra - half))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity shortcut; ``shortcut`` says how a change of shape is bridged.

    ``shortcut='A'``: parameter-free subsample + zero padding (ResNet-20's paper setting); ``'B'``: a 1x1
    convolution with BN (the projection of ResNet-18).
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1, shortcut: Literal["A", "B"] = "B") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            if shortcut == "A":
                if stride != 2:
                    raise ValueError(f"Invalid stride for an option-A shortcut: {stride} (expected 2)")
                self.shortcut = _OptionAShortcut(channels - in_channels)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
                )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The ResNet of He et al. (2016) §4.2 for CIFAR: depth 6n+2, three stages of n basic blocks, 16/32/64 channels.

    Shortcuts are option A (parameter-free), as in the paper's CIFAR experiments: ResNet-20 (n=3) has
    0.27M parameters. Weights use Kaiming-normal initialisation.
    """

    def __init__(self, blocks_per_stage: int = 3, classes: int = 10, width: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        layers: list[nn.Module] = []
        channels = width
        for stage, out_channels in enumerate((width, 2 * width, 4 * width)):
            for i in range(blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(BasicBlock(channels, out_channels, stride, shortcut="A"))
                channels = out_channels
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, classes)
        _kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layers(F.relu(self.bn(self.conv(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def resnet20(classes: int = 10) -> CifarResNet:
    """ResNet-20 for 32x32 images (0.27M parameters with 10 classes)."""
    return CifarResNet(3, classes)


class ResNet18(nn.Module):
    """ResNet-18 in its usual CIFAR form: a 3x3 stride-1 stem and no max-pool, four stages of two basic blocks.

    Channels 64/128/256/512, 1x1-conv projection shortcuts; 11.2M parameters with 10 classes.
    """

    def __init__(self, classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(64)
        layers: list[nn.Module] = []
        channels = 64
        for stage, out_channels in enumerate((64, 128, 256, 512)):
            for i in range(2):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(BasicBlock(channels, out_channels, stride, shortcut="B"))
                channels = out_channels
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, classes)
        _kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layers(F.relu(self.bn(self.conv(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _kaiming_init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------------------
# Transformers (pre-LN blocks on scaled_dot_product_attention, which picks a fused kernel where there is one).


class SelfAttention(nn.Module):
    """Multi-head self-attention; ``causal`` masks the future."""

    def __init__(self, dim: int, heads: int, causal: bool = False) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"Invalid heads: dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.causal = causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class TransformerBlock(nn.Module):
    """Pre-LN: ``x + attn(LN(x))`` then ``x + MLP(LN(x))`` with a GELU MLP of width ``mlp_ratio * dim``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4, causal: bool = False) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, causal)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


def _transformer_init(model: nn.Module) -> None:
    """Truncated-normal(0.02) linear and embedding weights, zero biases (DeiT's and GPT-2's initialisation)."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


class ViT(nn.Module):
    """A Vision Transformer for small images: patch embedding, class token, learned positions, pre-LN blocks.

    The defaults are DeiT-tiny's shape (dim 192, depth 12, 3 heads, MLP ratio 4) on 32x32 images cut
    into 4x4 patches (64 tokens + the class token): 5.4M parameters with 10 classes. ``depth`` and
    ``dim`` can be lowered for CPU runs.
    """

    def __init__(
        self,
        image_size: int = 32,
        patch_size: int = 4,
        classes: int = 10,
        dim: int = 192,
        depth: int = 12,
        heads: int = 3,
        mlp_ratio: int = 4,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"Invalid patch_size: {patch_size} does not divide image_size {image_size}")
        self.patch = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, (image_size // patch_size) ** 2 + 1, dim))
        self.blocks = nn.Sequential(*(TransformerBlock(dim, heads, mlp_ratio) for _ in range(depth)))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)
        _transformer_init(self)
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.cls, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)  # (batch, patches, dim)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1) + self.pos
        return self.head(self.ln(self.blocks(x))[:, 0])


def vit_tiny(classes: int = 10, depth: int = 12, dim: int = 192, heads: int = 3) -> ViT:
    """ViT-tiny (DeiT-tiny's shape) for 32x32 images with 4x4 patches; smaller ``depth``/``dim`` for CPU."""
    return ViT(32, 4, classes, dim=dim, depth=depth, heads=heads)


class CharTransformer(nn.Module):
    """A small GPT: token + learned positional embeddings, causal pre-LN blocks, final LN, linear head.

    Input: token ids ``(batch, time)`` with ``time <= context``; output: logits ``(batch, time, vocab)``.
    """

    def __init__(self, vocab: int, context: int = 128, dim: int = 128, layers: int = 4, heads: int = 4) -> None:
        super().__init__()
        self.context = context
        self.tokens = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(context, dim)
        self.blocks = nn.Sequential(*(TransformerBlock(dim, heads, causal=True) for _ in range(layers)))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)
        _transformer_init(self)

    def forward(self, idx: Tensor) -> Tensor:
        t = idx.shape[1]
        if t > self.context:
            raise ValueError(f"Invalid input: {t} tokens exceed the context of {self.context}")
        x = self.tokens(idx) + self.pos(torch.arange(t, device=idx.device))
        return self.head(self.ln(self.blocks(x)))


# --------------------------------------------------------------------------------------------------
# MNIST-1D.


class Conv1DNet(nn.Module):
    """The MNIST-1D paper's CNN (Greydanus 2020): three stride-2 Conv1d+ReLU layers of 25 channels, then linear.

    Input ``(batch, length)`` or ``(batch, 1, length)``; about 5.5k parameters for length 40.
    """

    def __init__(self, length: int = 40, classes: int = 10, channels: int = 25) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, channels, 5, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        out_length = length
        for kernel in (5, 3, 3):
            out_length = (out_length + 2 - kernel) // 2 + 1
        self.classifier = nn.Linear(channels * out_length, classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 2:
            x = x.unsqueeze(1)
        return self.classifier(self.features(x).flatten(1))
