"""Small deterministic problems shared by the tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn

import optarena
from optarena.optim.registry import get_optimizer_info


def build(params, name: str, **kwargs):
    """``optarena.create_optimizer`` with the entry's test defaults (values for the keywords it requires, such as
    Adaburst's ``total_steps``) under ``kwargs``."""
    return optarena.create_optimizer(params, name, **{**get_optimizer_info(name).test_defaults, **kwargs})


def registry_configs(flag: str | None = None) -> list[tuple[str, str, dict]]:
    """``(test id, registry name, kwargs)`` for every registry entry's defaults, then for the constructor
    variants its entry declares (``OptimizerInfo.test_inputs``; with ``flag``, those whose flag is set)."""
    names = optarena.list_optimizers()
    configs = [(name, name, dict(get_optimizer_info(name).test_defaults)) for name in names]
    for name in names:
        info = get_optimizer_info(name)
        for variant in info.test_inputs:
            if flag is None or getattr(variant, flag):
                configs.append((f"{name}-{variant.label}", name, {**info.test_defaults, **variant.kwargs}))
    return configs


def seeded_mlp(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A 4-8-3 tanh MLP with seeded weights."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def batch(step: int, dtype: torch.dtype = torch.float64, n: int = 16) -> tuple[Tensor, Tensor]:
    """Inputs and targets of step ``step`` (the same for every caller)."""
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(n, 4, generator=g, dtype=dtype)
    y = torch.randn(n, 3, generator=g, dtype=dtype)
    return x, y


def mlp_loss(model: nn.Module, step: int) -> Tensor:
    x, y = batch(step, next(model.parameters()).dtype)
    return (model(x) - y).pow(2).mean()


def backward(model: nn.Module, step: int) -> Tensor:
    """Zero the grads, compute the loss of batch ``step`` and its gradients."""
    for p in model.parameters():
        p.grad = None
    loss = mlp_loss(model, step)
    loss.backward()
    return loss


def max_diff(a: list[Tensor] | Tensor, b: list[Tensor] | Tensor) -> float:
    if isinstance(a, Tensor):
        a, b = [a], [b]
    return max(((x - y).abs().max().item() if x.numel() else 0.0) for x, y in zip(a, b, strict=True))
