"""AGR — adaptive gradient regularization (Jiang et al., arXiv:2407.16944; seed 003).

For each tensor's gradient ``g``::

    α  = |g| / Σ|g|          (the sum runs over every element of that one tensor)
    g' = g − α ⊙ g

The transform is written once here and used by every optimizer built on
:class:`~optarena.optim.base.OptarenaOptimizer` (``agr='code'`` or ``agr='paper'``), and by
:class:`AGR` around any other ``torch.optim.Optimizer`` (``'code'`` mode only). It never writes
into ``p.grad``: it returns new tensors.

Edge cases. The authors' code divides by ``Σ|g|`` with no guard, so an all-zero gradient gives
NaN everywhere, and a 1-element tensor gets ``α = 1`` and is frozen (``g' = 0``). The default
here (``official_edge_cases=False``) leaves those gradients unchanged instead: a zero gradient
stays zero and a 1-element tensor is not regularized. ``official_edge_cases=True`` reproduces
the authors' behaviour exactly, for parity runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import Tensor
from torch.optim import Optimizer

from optarena.optim.functional import per_tensor_l1
from optarena.optim.wrapper import OptimizerWrapper
from optarena.validation import Constraint, Flag, Integer, OneOf, check_declared

AGRMode = Literal["code", "paper"]
AGR_MODES: tuple[str, ...] = ("code", "paper")


def agr_single_tensor(grad: Tensor, *, official_edge_cases: bool = False) -> Tensor:
    """Reference AGR on one gradient, as the paper writes it. Returns a new tensor."""
    if not official_edge_cases and grad.numel() < 2:
        return grad.clone()
    (total,) = per_tensor_l1([grad])  # Σ|g| over the whole tensor
    if not official_edge_cases and total == 0:
        return grad.clone()
    alpha = grad.abs() / total
    return grad - alpha * grad


def agr_multi_tensor(grads: list[Tensor], *, official_edge_cases: bool = False) -> list[Tensor]:
    """AGR on a list of gradients with foreach ops; equal to the reference tensor by tensor."""
    if not grads:
        return []
    # 1-element tensors are left alone unless asked (a static shape test, so it compiles).
    keep = [i for i, g in enumerate(grads) if official_edge_cases or g.numel() >= 2]
    kept = set(keep)
    out = [g if i in kept else g.clone() for i, g in enumerate(grads)]  # the kept ones are replaced below
    if keep:
        sel = [grads[i] for i in keep]
        totals = per_tensor_l1(sel)
        if not official_edge_cases:
            # An all-zero gradient: divide by 1 instead of 0, so it stays zero (α = 0) with no
            # data-dependent branch.
            stacked = torch.stack(totals)
            totals = list(torch.where(stacked == 0, torch.ones_like(stacked), stacked).unbind(0))
        alphas = torch._foreach_abs(sel)
        torch._foreach_div_(alphas, totals)
        torch._foreach_mul_(alphas, sel)
        regularized = torch._foreach_sub(sel, alphas)
        for i, r in zip(keep, regularized):
            out[i] = r
    return out


AGR_OPTIONS: dict[str, Constraint] = {
    "agr": OneOf(AGR_MODES, optional=True),
    "agr_stop_step": Integer(0, optional=True),
    "agr_official_edge_cases": Flag(),
}
"""The AGR keywords every optimizer on the engine takes, and the AGR wrapper's."""


class AGR(OptimizerWrapper):
    """Apply AGR (``'code'`` mode) in front of any ``torch.optim.Optimizer``.

    The wrapped optimizer sees the regularized gradients as ``p.grad`` during its ``step()``;
    the original gradient tensors are put back afterwards, untouched. Optimizers built on
    :class:`~optarena.optim.base.OptarenaOptimizer` take ``agr=`` directly, which also offers
    the paper's mode (regularized gradient in the first moment only).

    Args:
        optimizer: the optimizer to wrap; it owns the param groups.
        stop_step: regularize only the first ``stop_step`` steps (None: always).
        official_edge_cases: reproduce the authors' NaN on all-zero gradients and freezing
            of 1-element tensors.
    """

    state_key = "agr_wrapper"  # not "agr": that is the engine's AGR mode in every param group
    legacy_state_key = "agr"  # where files of optarena 0.1 keep it (a dict, never a mode string)

    def __init__(
        self,
        optimizer: Optimizer,
        *,
        stop_step: int | None = None,
        official_edge_cases: bool = False,
    ) -> None:
        check_declared({"agr_stop_step": stop_step, "agr_official_edge_cases": official_edge_cases}, AGR_OPTIONS)
        super().__init__(optimizer)
        self.stop_step = stop_step
        self.official_edge_cases = official_edge_cases
        self.steps_taken = 0

    def _repr_options(self) -> dict[str, Any]:
        return {"stop_step": self.stop_step, "official_edge_cases": self.official_edge_cases}

    def _wrapper_state(self) -> dict[str, Any]:
        return {"steps_taken": self.steps_taken}

    def _load_wrapper_state(self, state: dict[str, Any]) -> None:
        self.steps_taken = int(state["steps_taken"])

    def _reset_wrapper_state(self) -> None:
        self.steps_taken = 0

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        guard = getattr(self.optimizer, "gradients_admitted", None)
        if guard is not None and not guard():  # the nonfinite policy, on the raw gradients
            return loss
        self.steps_taken += 1
        if self.stop_step is not None and self.steps_taken > self.stop_step:
            self.optimizer.step()
            return loss
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        originals = [p.grad for p in params]
        for p in params:
            if p.grad.is_sparse:
                raise RuntimeError("AGR does not support sparse gradients")
        regularized = _regularize(originals, self.official_edge_cases)
        try:
            for p, g in zip(params, regularized):
                p.grad = g
            self.optimizer.step()
        finally:
            for p, g in zip(params, originals):
                p.grad = g
        return loss


def _regularize(grads: Iterable[Tensor], official_edge_cases: bool) -> list[Tensor]:
    out = []
    for g in grads:
        real = torch.view_as_real(g) if g.is_complex() else g
        r = agr_single_tensor(real, official_edge_cases=official_edge_cases)
        out.append(torch.view_as_complex(r) if g.is_complex() else r)
    return out
