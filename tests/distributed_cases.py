"""The optimizer runs that tests/test_distributed.py repeats on shards and in one process."""

from __future__ import annotations

from collections.abc import Callable

import torch

import optarena
from optarena.optim.wrapper import OptimizerWrapper

STEPS = 6
# Rows chosen so that 2 and 3 ranks split them unevenly (7 → 4/3 and 3/2/2; 5 → 3/2 and 2/2/1).
SHAPES = [(7, 5), (7,), (5, 7), (5,), (1,)]

# Every registered optimizer, plus the variants whose whole-tensor reductions differ.
CASES: list[tuple[str, str, dict]] = [(name, name, {}) for name in optarena.list_optimizers()] + [
    ("adamw_agr-paper", "adamw_agr", {"agr": "paper"}),
    ("adan-max_grad_norm", "adan", {"max_grad_norm": 0.5}),
    ("swats-global", "swats", {"granularity": "global"}),
    ("swats-group", "swats", {"granularity": "group"}),
    ("sgdm-agr", "sgdm", {"agr": "code"}),
]


def full_parameters() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(*s, generator=g, dtype=torch.float64) for s in SHAPES]


def full_gradients(step: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(*s, generator=g, dtype=torch.float64) for s in SHAPES]


def run_steps(
    name: str, kwargs: dict, params: list[torch.Tensor], set_grads: Callable[[int], None]
) -> torch.optim.Optimizer:
    """STEPS steps of ``name`` (lr 1e-2); SophiaG also refreshes its Hessian from the gradients."""
    opt = optarena.create_optimizer(params, name, **{"lr": 1e-2, **kwargs})
    inner = opt
    while isinstance(inner, OptimizerWrapper):
        inner = inner.optimizer
    for step in range(STEPS):
        set_grads(step)
        if hasattr(inner, "update_hessian") and step % 2 == 0:
            inner.update_hessian()
        opt.step()
    return opt
