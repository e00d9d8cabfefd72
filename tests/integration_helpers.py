"""Shared by the framework integration tests: exact comparison of nested states, and a tiny classification set."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch


def assert_identical(a: Any, b: Any, where: str = "state") -> None:
    """``a`` and ``b`` are the same nested structure with bit-identical tensors and equal numbers."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where}: tensors differ (max |Δ| {(a.double() - b.double()).abs().max():.3g})"
    elif isinstance(a, Mapping):
        assert isinstance(b, Mapping) and set(a) == set(b), (
            f"{where}: keys {sorted(map(str, a))} vs {sorted(map(str, b))}"
        )
        for key in a:
            assert_identical(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: {a!r} vs {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def noisy_classes(n: int = 96, features: int = 8, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian inputs whose class is a linear function of them, with a quarter of the labels random: a task a
    small network fits in a few epochs without reaching 100%, so a plateau trigger has something to watch."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=generator)
    y = (x @ torch.randn(features, classes, generator=generator)).argmax(1)
    noisy = torch.rand(n, generator=generator) < 0.25
    y[noisy] = torch.randint(0, classes, (int(noisy.sum()),), generator=generator)
    return x, y
