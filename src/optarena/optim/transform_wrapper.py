"""The gradient transforms in front of any ``torch.optim.Optimizer``: the wrapped optimizer steps on T(g).

Optimizers built on :class:`~optarena.optim.base.OptarenaOptimizer` take the transforms' keywords directly
(``clip_norm=``, ``centralize=``, ``agr=``, ...); these wrappers are for the others (torch's baselines). They
run the engine's own transform functions (:mod:`optarena.optim.transforms`) in the engine's order, so both
paths compute the same thing: :class:`GradientTransforms` for any of them, :class:`AGR` for AGR alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer

from optarena.optim import transforms
from optarena.optim.wrapper import OptimizerWrapper
from optarena.validation import OneOf, check_declared


class GradientTransforms(OptimizerWrapper):
    """Apply optarena's gradient transforms in front of any ``torch.optim.Optimizer``.

    The wrapped optimizer sees the transformed gradients as ``p.grad`` during its ``step()``; the original
    gradient tensors are put back afterwards, untouched. The transforms run in the engine's order
    (clip_norm → clip_value → centralize → normalize → agr); the wrapped optimizer's own ``maximize`` acts
    inside its step.

    Args:
        optimizer: the optimizer to wrap; it owns the param groups.
        clip_norm: scale every gradient by ``min(1, clip_norm / (‖g‖₂ + 1e-6))``, the norm over every parameter
            (``torch.nn.utils.clip_grad_norm_``). None: off.
        clip_value: clamp every gradient element into ``[−clip_value, clip_value]``. None: off.
        centralize: gradient centralization: ``'weights'`` (tensors of ≥ 2 dimensions), ``'conv'`` (≥ 4), None.
        normalize: gradient normalization per tensor: ``'norm'`` (g/‖g‖₂), ``'std'`` (g/(std + 1e-8)), None.
        agr: ``'code'`` (AGR in front of the whole optimizer) or None; the paper's mode, which feeds only the
            first moment, needs an optimizer built on the engine.
        agr_stop_step, agr_official_edge_cases, agr_scope: AGR's options, as the engine's.
    """

    state_key = "gradient_transforms"

    def __init__(
        self,
        optimizer: Optimizer,
        *,
        clip_norm: float | None = None,
        clip_value: float | None = None,
        centralize: str | None = None,
        normalize: str | None = None,
        agr: str | None = None,
        agr_stop_step: int | None = None,
        agr_official_edge_cases: bool = False,
        agr_scope: str = "weights",
    ) -> None:
        options = {
            "clip_norm": clip_norm,
            "clip_value": clip_value,
            "centralize": centralize,
            "normalize": normalize,
            "agr": agr,
            "agr_stop_step": agr_stop_step,
            "agr_official_edge_cases": agr_official_edge_cases,
            "agr_scope": agr_scope,
        }
        check_declared(options, transforms.TRANSFORM_OPTIONS)
        OneOf(("code",), optional=True).check("agr", agr)  # 'paper' feeds one moment: the engine's only
        super().__init__(optimizer)
        self.options = options
        self.transforms = transforms.pipeline({**transforms.NO_TRANSFORMS, **options})
        self.steps_taken = 0

    def _repr_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.options.items() if v != transforms.NO_TRANSFORMS[k]}

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
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
        # The engine's transforms, on real views (complex gradients as view_as_real), one tensor at a time.
        real = [torch.view_as_real(g) if g.is_complex() else g for g in originals]
        clip_factor = None
        if self.options["clip_norm"] is not None:
            clip_factor = transforms.global_clip_factor(real, float(self.options["clip_norm"]))
        steps = [float(self.steps_taken)] * len(real)
        done, _ = transforms.apply_pipeline(self.transforms, real, steps, foreach=False, clip_factor=clip_factor)
        transformed = [torch.view_as_complex(r) if g.is_complex() else r for g, r in zip(originals, done)]
        try:
            for p, g in zip(params, transformed):
                p.grad = g
            self.optimizer.step()
        finally:
            for p, g in zip(params, originals):
                p.grad = g
        return loss


class AGR(GradientTransforms):
    """Apply AGR (``'code'`` mode) in front of any ``torch.optim.Optimizer``.

    Optimizers built on :class:`~optarena.optim.base.OptarenaOptimizer` take ``agr=`` directly, which also
    offers the paper's mode (regularized gradient in the first moment only).

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
        super().__init__(
            optimizer,
            agr="code",
            agr_stop_step=stop_step,
            agr_official_edge_cases=official_edge_cases,
            agr_scope=scope,
        )
        self.stop_step = stop_step
        self.official_edge_cases = official_edge_cases
        self.scope = scope

    def _repr_options(self) -> dict[str, Any]:
        return {"stop_step": self.stop_step, "official_edge_cases": self.official_edge_cases, "scope": self.scope}
