"""The multi-tensor kernels take 0-d tensor hyperparameters and steps (what a compiled step passes)."""

from __future__ import annotations

import pytest
import torch

import optarena
from optarena.optim import OptarenaOptimizer
from optarena.optim.registry import get_optimizer_info
from optarena.optim.wrapper import OptimizerWrapper

from .helpers import max_diff
from .test_invariants import CONFIGS

# AMSGrad variants take an extra, optional state buffer: tests/test_parity_adabelief_acprop.py runs this
# check on them with the buffer passed.
ENGINE_CONFIGS = [
    c for c in CONFIGS if issubclass(get_optimizer_info(c[1]).cls, OptarenaOptimizer) and not c[2].get("amsgrad")
]


def tensors(seed: int) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(4, 3), (5,), (1,)]
    params = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    grads = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    return [params, grads]


@pytest.mark.parametrize("cid,name,kwargs", ENGINE_CONFIGS, ids=[c[0] for c in ENGINE_CONFIGS])
def test_multi_tensor_kernel_takes_tensor_hyperparameters(cid, name, kwargs):
    opt = optarena.create_optimizer([torch.zeros(1, requires_grad=True)], name, lr=3e-2, **kwargs)
    while isinstance(opt, OptimizerWrapper):  # Lookahead around an engine optimizer: test the inner one
        opt = opt.optimizer
    hyper = opt._kernel_hyperparameters(opt.param_groups[0])
    as_tensor = {k: torch.tensor(v, dtype=torch.float64) if isinstance(v, float) else v for k, v in hyper.items()}
    assert any(isinstance(v, torch.Tensor) for v in as_tensor.values())
    results = []
    for hp, steps in ((hyper, [3.0, 3.0, 7.0]), (as_tensor, [torch.tensor(t, dtype=torch.float64) for t in (3, 3, 7)])):
        params, grads = tensors(0)
        states = [[torch.rand(p.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64) for p in params]
                  for _ in type(opt).state_names]  # fmt: skip
        for _ in range(3):
            type(opt).multi_tensor_kernel(params, grads, grads, *states, steps=steps, **hp)
        results.append(params + [t for s in states for t in s])
    assert max_diff(results[0], results[1]) <= 1e-12
