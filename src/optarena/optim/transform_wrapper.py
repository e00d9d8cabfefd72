"""AGR in front of any ``torch.optim.Optimizer`` (``'code'`` mode): the wrapped optimizer steps on AGR(g).

Optimizers built on :class:`~optarena.optim.base.OptarenaOptimizer` take ``agr=`` directly (both modes);
this wrapper is for the others (torch's baselines). The regularization is the engine's own transform
(:func:`optarena.optim.transforms.agr`), so both paths compute the same thing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer

from optarena.optim import transforms
from optarena.optim.agr import AGR_OPTIONS
from optarena.optim.wrapper import OptimizerWrapper
from optarena.validation import check_declared


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
        scope: ``'weights'`` (tensors of two or more dimensions, as the paper; default) or ``'all'``.
    """

    state_key = "agr_wrapper"  # not "agr": that is the engine's AGR mode in every param group
    legacy_state_key = "agr"  # where files of optarena 0.1 keep it (a dict, never a mode string)

    def __init__(
        self,
        optimizer: Optimizer,
        *,
        stop_step: int | None = None,
        official_edge_cases: bool = False,
        scope: str = "weights",
    ) -> None:
        options = {"agr_stop_step": stop_step, "agr_official_edge_cases": official_edge_cases, "agr_scope": scope}
        check_declared(options, AGR_OPTIONS)
        super().__init__(optimizer)
        self.stop_step = stop_step
        self.official_edge_cases = official_edge_cases
        self.scope = scope
        self.steps_taken = 0

    def _repr_options(self) -> dict[str, Any]:
        return {"stop_step": self.stop_step, "official_edge_cases": self.official_edge_cases, "scope": self.scope}

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
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        originals = [p.grad for p in params]
        for p in params:
            if p.grad.is_sparse:
                raise RuntimeError("AGR does not support sparse gradients")
        # The engine's AGR transform, on real views (complex gradients as view_as_real), one tensor at a time.
        real = [torch.view_as_real(g) if g.is_complex() else g for g in originals]
        steps = [float(self.steps_taken)] * len(real)
        done, _ = transforms.agr(real, real, steps, False, "code", self.stop_step, self.official_edge_cases, self.scope)
        regularized = [torch.view_as_complex(r) if g.is_complex() else r for g, r in zip(originals, done)]
        try:
            for p, g in zip(params, regularized):
                p.grad = g
            self.optimizer.step()
        finally:
            for p, g in zip(params, originals):
                p.grad = g
        return loss
