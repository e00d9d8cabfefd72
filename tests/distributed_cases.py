"""The optimizer runs that tests/test_distributed.py repeats on shards and in one process."""

from __future__ import annotations

from collections.abc import Callable

import torch

import optarena
from optarena.optim.wrapper import OptimizerWrapper
from tests.helpers import registry_configs

STEPS = 6
# Rows chosen so that 2 and 3 ranks split them unevenly (7 → 4/3 and 3/3/1; 5 → 3/2 and 2/2/1).
SHAPES = [(7, 5), (7,), (5, 7), (5,), (1,)]

# Every registered optimizer, plus the variants whose whole-tensor reductions differ (OptimizerInput.sharded).
CASES: list[tuple[str, str, dict]] = registry_configs("sharded")


def full_parameters(dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(*s, generator=g, dtype=torch.float64).to(dtype) for s in SHAPES]


def full_gradients(step: int, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(*s, generator=g, dtype=torch.float64).to(dtype) for s in SHAPES]


def run_steps(
    name: str, kwargs: dict, params: list[torch.Tensor], set_grads: Callable[[int], None], steps: int = STEPS
) -> torch.optim.Optimizer:
    """``steps`` steps of ``name`` (lr 1e-2); SophiaG also refreshes its Hessian from the gradients."""
    opt = optarena.create_optimizer(params, name, **{"lr": 1e-2, **kwargs})
    inner = opt
    while isinstance(inner, OptimizerWrapper):
        inner = inner.optimizer
    for step in range(steps):
        set_grads(step)
        if hasattr(inner, "update_hessian") and step % 2 == 0:
            inner.update_hessian()
        opt.step()
    return opt


# FSDP2 end to end: every case above (torch's Adafactor aside: see TORCH_LIMITS in the test), plus the
# variants whose non-elementwise state matters across a checkpoint (OptimizerInput.checkpointed).
FSDP_CASES: list[tuple[str, str, dict]] = [c for c in CASES if c[1] != "adafactor"] + [
    c for c in registry_configs("checkpointed") if c[0] != c[1]
]


def fsdp_model() -> torch.nn.Module:
    """A 5-7-3 float64 MLP; 7 and 3 rows split unevenly over 2 and 3 ranks."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).double()


def fsdp_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of ``step``: 6 rows, divisible by 1, 2 and 3 ranks."""
    g = torch.Generator().manual_seed(500 + step)
    return torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g, dtype=torch.float64)


def train_one_process(name: str, kwargs: dict, steps: int = 6) -> list[torch.Tensor]:
    """The reference for FSDP2 and DDP: the same model and steps on the whole batch in one process."""
    model = fsdp_model()
    opt = make_fsdp_optimizer(model, name, kwargs)
    for step in range(steps):
        x, y = fsdp_batch(step)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def make_fsdp_optimizer(model: torch.nn.Module, name: str, kwargs: dict) -> torch.optim.Optimizer:
    return optarena.create_optimizer(list(model.parameters()), name, **{"lr": 1e-2, **kwargs})
