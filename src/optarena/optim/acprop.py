"""ACProp (Zhuang et al., "Momentum Centering and Asynchronous Update for Adaptive Gradient Methods",
NeurIPS 2021), as the authors' code computes it.

AdaBelief's centred second moment used *asynchronously*: step t divides by ``s_{t−1}``, which holds
gradients up to step t − 1 only, and the numerator is the current gradient ``g_t``. Per step
(``juntang-zhuang/ACProp-Optimizer`` @ ``a880843``, ``optimizers/ACProp.py``)::

    θ ← θ(1 − lr·λ)   or  θ ← θ(1 − λ)  (fixed_decay)   or  g ← g + λθ  (weight_decouple=False)
    m ← β1·m + (1 − β1)·g
    t = 1:  θ ← θ − lr · m/(1 − β1)  (= θ − lr·g)          s_0 = 0 has nothing to divide by
    t > 1:  s ← s + ε                                      into the state (amsgrad: also at t = 1)
            s_max ← max(s_max, s)                          (amsgrad)
            u = m if momentum_update else g
            rectify=False:  θ ← θ − lr · u / (√s' / √(1 − β2^(t−1)) + ε)    s' = s_max if amsgrad else s
            rectify=True (ρ_t, r_t of RAdam at step t, as AdaBelief):
                ρ_t ≥ 5:    θ ← θ − lr·r_t · u / (√s + ε)
                otherwise:  θ ← θ − lr/(1 − β1^t) · m          (degenerated_to_sgd; else no step)
    s ← β2·s + (1 − β2)·(g − m)²                            *after* the step: s_t is for step t + 1

``eps_in_state=False`` keeps ``s`` the plain EMA of residuals and forms ``s + ε`` afresh for the
denominator, as :class:`~optarena.optim.adabelief.AdaBelief` does with the same option.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from optarena.optim.adabelief import (
    FLAG_NAMES,
    MAX_STATE,
    belief_hyperparameters,
    belief_kernel_hyperparameters,
    belief_residuals,
    decay_mode,
    gather_with_max_buffer,
    rectification,
    rectified_step_sizes,
    rectified_update_multi,
    scaled_quotient_step,
)
from optarena.optim.base import OptarenaOptimizer, ParamsT
from optarena.optim.functional import (
    foreach_add_scalar,
    foreach_add_scalar_,
    foreach_add_scaled_,
    foreach_addcdiv_,
    foreach_addcmul_,
    foreach_div_scalars_,
    per_tensor,
    sqrt,
)
from optarena.optim.info import OptimizerInfo, OptimizerInput
from optarena.optim.weight_decay import weight_decay_, weight_decay_multi_
from optarena.validation import Constraint

ACPROP_FLAG_NAMES: tuple[str, ...] = (*FLAG_NAMES, "momentum_update")


def acprop_single_tensor(
    param: Tensor,
    grad: Tensor,
    m_grad: Tensor,
    exp_avg: Tensor,
    exp_avg_var: Tensor,
    max_exp_avg_var: Tensor | None = None,
    *,
    step: float,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    weight_decouple: bool,
    fixed_decay: bool,
    rectify: bool,
    degenerated_to_sgd: bool,
    eps_in_state: bool,
    momentum_update: bool,
) -> None:
    """Reference ACProp update of one tensor.

    ``m_grad`` feeds m and the numerator; ``grad`` feeds the residual ``g − m`` of the second moment.
    """
    mode = decay_mode(weight_decouple, fixed_decay)
    grad, m_grad = weight_decay_(param, grad, m_grad, lr=lr, weight_decay=weight_decay, mode=mode)
    bias_correction1 = 1 - beta1**step
    exp_avg.mul_(beta1).add_(m_grad, alpha=1 - beta1)

    # The denominator's source: s_{t−1} (+ ε), before this step's residual is added.
    var = None
    if amsgrad or step > 1:  # the authors add ε at t = 1 only in the amsgrad branch
        var = exp_avg_var.add_(eps) if eps_in_state else exp_avg_var.add(eps)
    var_for_denom = var
    if amsgrad:
        torch.maximum(max_exp_avg_var, exp_avg_var, out=max_exp_avg_var)
        var_for_denom = max_exp_avg_var if eps_in_state else max_exp_avg_var.add(eps)

    if step <= 1:
        param.add_(exp_avg / bias_correction1, alpha=-lr)
    else:
        numerator = exp_avg if momentum_update else m_grad * bias_correction1
        if not rectify:
            bias_correction2 = 1 - beta2 ** (step - 1)
            denom = (var_for_denom.sqrt() / math.sqrt(bias_correction2)).add_(eps)
            param.addcdiv_(numerator, denom, value=-lr / bias_correction1)
        else:
            branch, step_size = rectification(beta1, beta2, step, degenerated_to_sgd)
            if branch == "adaptive":  # the authors use s here even with amsgrad
                param.addcdiv_(numerator, var.sqrt().add_(eps), value=-step_size * lr)
            elif branch == "sgd":
                param.add_(exp_avg, alpha=-step_size * lr)

    residual = grad - exp_avg
    exp_avg_var.mul_(beta2).addcmul_(residual, residual, value=1 - beta2)


def acprop_multi_tensor(
    params: list[Tensor],
    grads: list[Tensor],
    m_grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_vars: list[Tensor],
    max_exp_avg_vars: list[Tensor | None] | None = None,
    *,
    steps: list[float],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    weight_decouple: bool,
    fixed_decay: bool,
    rectify: bool,
    degenerated_to_sgd: bool,
    eps_in_state: bool,
    momentum_update: bool,
) -> None:
    """foreach ACProp; equals :func:`acprop_single_tensor` tensor by tensor."""
    raw_grads = grads
    mode = decay_mode(weight_decouple, fixed_decay)
    grads, m_grads = weight_decay_multi_(params, grads, m_grads, lr=lr, weight_decay=weight_decay, mode=mode)
    torch._foreach_mul_(exp_avgs, beta1)
    foreach_add_scaled_(exp_avgs, m_grads, 1 - beta1)
    step_params = _parameter_step_branch_free if any(isinstance(t, Tensor) for t in steps) else _parameter_step
    step_params(
        params,
        m_grads,
        exp_avgs,
        exp_avg_vars,
        max_exp_avg_vars,
        steps=steps,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        amsgrad=amsgrad,
        rectify=rectify,
        degenerated_to_sgd=degenerated_to_sgd,
        eps_in_state=eps_in_state,
        momentum_update=momentum_update,
    )

    residuals = belief_residuals(grads, raw_grads, exp_avgs)
    del grads
    torch._foreach_mul_(exp_avg_vars, beta2)
    foreach_addcmul_(exp_avg_vars, residuals, residuals, [1 - beta2] * len(exp_avg_vars))


def _parameter_step(
    params: list[Tensor],
    m_grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_vars: list[Tensor],
    max_exp_avg_vars: list[Tensor | None] | None,
    *,
    steps: list[Any],
    lr: Any,
    beta1: Any,
    beta2: Any,
    eps: Any,
    amsgrad: bool,
    rectify: bool,
    degenerated_to_sgd: bool,
    eps_in_state: bool,
    momentum_update: bool,
) -> None:
    """The parameter step, with Python float steps choosing each tensor's branch on the host."""
    n = len(params)
    bias_corrections1 = [1 - beta1**t for t in steps]
    first = [i for i, t in enumerate(steps) if t <= 1]
    later = [i for i, t in enumerate(steps) if t > 1]
    with_eps = list(range(n)) if amsgrad else later
    var: list[Any] = [None] * n
    if with_eps:
        sel = [exp_avg_vars[i] for i in with_eps]
        if eps_in_state:
            foreach_add_scalar_(sel, eps)
        else:
            sel = foreach_add_scalar(sel, eps)
        for i, v in zip(with_eps, sel):
            var[i] = v
    var_for_denom = var
    if amsgrad:
        maxes: list[Tensor] = max_exp_avg_vars  # type: ignore[assignment]
        torch._foreach_maximum_(maxes, exp_avg_vars)
        var_for_denom = maxes if eps_in_state else foreach_add_scalar(maxes, eps)

    if first:
        scaled = torch._foreach_div([exp_avgs[i] for i in first], [bias_corrections1[i] for i in first])
        foreach_add_scaled_([params[i] for i in first], scaled, -lr)
    if later:
        # The numerator: m, or (with momentum_update=False) g·(1−β1^t), made per tensor where used.
        numerators = [(exp_avgs if momentum_update else m_grads)[i] for i in later]
        scales = None if momentum_update else [bias_corrections1[i] for i in later]
        if not rectify:
            denom = torch._foreach_sqrt([var_for_denom[i] for i in later])
            foreach_div_scalars_(denom, [sqrt(1 - beta2 ** (steps[i] - 1)) for i in later])
            foreach_add_scalar_(denom, eps)
            scaled_quotient_step(
                [params[i] for i in later], numerators, scales, denom, [-lr / bias_corrections1[i] for i in later]
            )
        else:
            rectified_update_multi(
                [params[i] for i in later],
                numerators,
                [exp_avgs[i] for i in later],
                [var[i] for i in later],
                steps=[steps[i] for i in later],
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                eps=eps,
                degenerated_to_sgd=degenerated_to_sgd,
                numerator_scales=scales,
            )


def _parameter_step_branch_free(
    params: list[Tensor],
    m_grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_vars: list[Tensor],
    max_exp_avg_vars: list[Tensor | None] | None,
    *,
    steps: list[Any],
    lr: Any,
    beta1: Any,
    beta2: Any,
    eps: Any,
    amsgrad: bool,
    rectify: bool,
    degenerated_to_sgd: bool,
    eps_in_state: bool,
    momentum_update: bool,
) -> None:
    """:func:`_parameter_step` for tensor steps (a compiled step): every branch is applied, masked by
    the step count, so nothing depends on data. Same arithmetic where a branch is taken."""
    later = [t > 1 for t in steps]  # the first step is plain momentum; ε joins v from the second on
    zero = torch.zeros((), dtype=torch.float64, device=params[0].device)
    step_eps = [eps if amsgrad else torch.where(is_later, eps, zero) for is_later in later]
    if eps_in_state:
        torch._foreach_add_(exp_avg_vars, per_tensor(step_eps))
        var = exp_avg_vars
    else:
        var = list(torch._foreach_add(exp_avg_vars, per_tensor(step_eps)))
    var_for_denom = var
    if amsgrad:
        maxes: list[Tensor] = max_exp_avg_vars  # type: ignore[assignment]
        torch._foreach_maximum_(maxes, exp_avg_vars)
        var_for_denom = maxes if eps_in_state else foreach_add_scalar(maxes, eps)
    bias_corrections1 = [1 - beta1**t for t in steps]
    first_sizes = [torch.where(is_later, zero, -lr / bc) for is_later, bc in zip(later, bias_corrections1)]
    torch._foreach_add_(params, torch._foreach_mul(exp_avgs, per_tensor(first_sizes)))
    numerators = exp_avgs if momentum_update else list(torch._foreach_mul(m_grads, per_tensor(bias_corrections1)))
    if rectify:
        masked = [torch.where(is_later, t, torch.ones_like(zero)) for is_later, t in zip(later, steps)]
        sizes = [rectified_step_sizes(beta1, beta2, t, degenerated_to_sgd) for t in masked]
        denom = torch._foreach_sqrt(var)
        foreach_add_scalar_(denom, eps)
        adaptive = [torch.where(is_later, -a * lr, zero) for is_later, (a, _) in zip(later, sizes)]
        foreach_addcdiv_(params, numerators, denom, adaptive)
        sgd = [torch.where(is_later, -s * lr, zero) for is_later, (_, s) in zip(later, sizes)]
        torch._foreach_add_(params, torch._foreach_mul(exp_avgs, per_tensor(sgd)))
        return
    one = torch.ones_like(zero)
    denom = torch._foreach_sqrt(var_for_denom)
    torch._foreach_div_(
        denom, per_tensor([torch.where(is_later, sqrt(1 - beta2 ** (t - 1)), one) for is_later, t in zip(later, steps)])
    )
    foreach_add_scalar_(denom, eps)
    sizes = [torch.where(is_later, -lr / bc, zero) for is_later, bc in zip(later, bias_corrections1)]
    foreach_addcdiv_(params, numerators, denom, sizes)


class ACProp(OptarenaOptimizer):
    """ACProp with the defaults of the authors' ``ACProp`` class.

    Args:
        params: parameters or param groups.
        lr: learning rate (default 1e-3).
        betas: (β1, β2) (default (0.9, 0.999)).
        eps: added into the second-moment state every step and to the denominator (default 1e-16;
            the authors' CIFAR experiments pass 1e-8).
        weight_decay: λ (default 0; the experiments pass 5e-4 with ``weight_decouple=False``).
        amsgrad: keep ``max(s)`` and divide by it (default False); ignored by the rectified branch,
            as in the authors' code.
        weight_decouple: decoupled decay ``θ(1 − lr·λ)`` (default True); False is L2 (``g + λθ``).
        fixed_decay: with ``weight_decouple``, decay ``θ(1 − λ)`` not scaled by lr (default False).
        rectify: RAdam's rectified step (default True, the class default; the paper's algorithm
            and the authors' experiments use False).
        degenerated_to_sgd: below the rectification threshold take the step ``lr·m/(1 − β1^t)``
            (default True); False takes no step there.
        momentum_update: numerator m_t instead of g_t (default False, the paper's ACProp).
        eps_in_state: add ε into ``s`` in place every step, as the authors' code (default True).
        options: the engine's keywords (``foreach``, ``maximize``, ``agr``, ``agr_stop_step``,
            ``agr_official_edge_cases``, ``nonfinite``), see :class:`~optarena.optim.base.OptarenaOptimizer`.
            With ``agr='paper'`` the regularized gradient feeds m and the numerator; the residual ``g − m``
            uses the raw gradient.
    """

    hyperparameters: ClassVar[dict[str, Constraint]] = belief_hyperparameters(ACPROP_FLAG_NAMES)
    layout_buffers: ClassVar[dict[str, tuple[str, str]]] = {"amsgrad": ("exp_avg_var", MAX_STATE)}
    state_names = ("exp_avg", "exp_avg_var")  # + max_exp_avg_var in amsgrad groups
    single_tensor_kernel = staticmethod(acprop_single_tensor)
    multi_tensor_kernel = staticmethod(acprop_multi_tensor)
    elementwise_kernel = True

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-16,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        weight_decouple: bool = True,
        fixed_decay: bool = False,
        rectify: bool = True,
        degenerated_to_sgd: bool = True,
        momentum_update: bool = False,
        *,
        eps_in_state: bool = True,
        **options: Any,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            weight_decouple=weight_decouple,
            fixed_decay=fixed_decay,
            rectify=rectify,
            degenerated_to_sgd=degenerated_to_sgd,
            momentum_update=momentum_update,
            eps_in_state=eps_in_state,
        )
        super().__init__(params, defaults, **options)

    def _kernel_hyperparameters(self, group: dict[str, Any]) -> dict[str, Any]:
        return belief_kernel_hyperparameters(group, ACPROP_FLAG_NAMES)

    def _gather(self, group: dict[str, Any]):  # type: ignore[override]
        return gather_with_max_buffer(self, group, super()._gather(group))


REGISTRY_ENTRIES = [
    OptimizerInfo(
        "acprop",
        ACProp,
        "ACProp: AdaBelief's centred second moment, used asynchronously (step t divides by s_{t-1})",
        supports_agr=True,
        paper="Zhuang et al., Momentum Centering and Asynchronous Update for Adaptive Gradient Methods, NeurIPS 2021",
        code="github.com/juntang-zhuang/ACProp-Optimizer (optimizers/ACProp.py)",
        notes=(
            "defaults are the authors' class: eps 1e-16 accumulated into s, decoupled decay, rectify on; "
            "their experiments use rectify=False, weight_decouple=False, eps=1e-8, weight_decay=5e-4"
        ),
        test_inputs=(
            OptimizerInput("rectify_off", {"rectify": False}),
            OptimizerInput(
                "experiments", {"rectify": False, "weight_decouple": False, "eps": 1e-8, "weight_decay": 5e-4}
            ),
            OptimizerInput("amsgrad", {"amsgrad": True}),
            OptimizerInput("amsgrad-rectify_off", {"amsgrad": True, "rectify": False}),
            OptimizerInput(
                "fixed_decay", {"fixed_decay": True, "weight_decay": 1e-3}, still={"lr": 0.0, "weight_decay": 0.0}
            ),
            OptimizerInput("momentum_update", {"momentum_update": True, "rectify": False}),
            OptimizerInput("no_sgd_fallback", {"degenerated_to_sgd": False}),
            OptimizerInput("eps_not_in_state", {"eps_in_state": False, "amsgrad": True}),
            OptimizerInput("agr_paper", {"agr": "paper", "rectify": False}),
        ),
    )
]
