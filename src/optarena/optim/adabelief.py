"""AdaBelief (Zhuang et al., NeurIPS 2020) as the authors' package ``adabelief-pytorch 0.2.1`` computes it.

Adam whose second moment is the EMA of the squared *residual* ``(g − m)²`` — the "belief" in the
observed gradient — instead of ``g²``. Per step (``AdaBelief.py`` of the PyPI wheel 0.2.1, identical
to ``juntang-zhuang/Adabelief-Optimizer`` @ ``2855178e``, ``pypi_packages/adabelief_pytorch0.2.1``)::

    θ ← θ(1 − lr·λ)   or  θ ← θ(1 − λ)  (fixed_decay)   or  g ← g + λθ  (weight_decouple=False)
    m ← β1·m + (1 − β1)·g
    s ← β2·s + (1 − β2)·(g − m)²  + ε                   ε is added *into the state*, every step
    s_max ← max(s_max, s)                                (amsgrad)
    rectify=False:  θ ← θ − lr/(1 − β1^t) · m / (√s' / √(1 − β2^t) + ε)      s' = s_max if amsgrad else s
    rectify=True:   ρ∞ = 2/(1 − β2) − 1,  ρ_t = ρ∞ − 2tβ2^t/(1 − β2^t)
        ρ_t ≥ 5:    θ ← θ − lr·r_t · m / (√s + ε)           (RAdam's r_t; s, never s_max)
        otherwise:  θ ← θ − lr/(1 − β1^t) · m               (degenerated_to_sgd; else no step)

``eps_in_state=False`` gives the non-accumulating reading (the ``add`` for ``add_`` fix of the
authors' issue #18): ``s`` is the plain EMA of ``(g − m)²`` and ``s + ε`` is formed afresh each step,
only for the denominator.

This module also holds what ACProp (``acprop.py``, the same authors' asynchronous variant) shares:
the weight-decay modes, the rectification term and the optional AMSGrad buffer.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from optarena.optim.base import ADAM_HYPERPARAMETERS, OptarenaOptimizer, ParamsT, zeros_state
from optarena.optim.functional import (
    Scalar,
    foreach_add_scalar,
    foreach_add_scalar_,
    foreach_add_scaled_,
    foreach_addcdiv_,
    foreach_addcmul_,
    foreach_div_scalars_,
    per_tensor,
    scalar_value,
    sqrt,
)
from optarena.optim.info import OptimizerInfo, OptimizerInput
from optarena.optim.weight_decay import weight_decay_, weight_decay_multi_
from optarena.validation import Constraint, Flag

# --- pieces shared with ACProp ------------------------------------------------------------------

FLAG_NAMES: tuple[str, ...] = (
    "amsgrad",
    "weight_decouple",
    "fixed_decay",
    "rectify",
    "degenerated_to_sgd",
    "eps_in_state",
)
MAX_STATE = "max_exp_avg_var"


def belief_residuals(grads: list[Tensor], raw_grads: list[Tensor], exp_avgs: list[Tensor]) -> list[Tensor]:
    """``g − m``, written over ``grads`` when they are this step's own L2 copies (not ``raw_grads``,
    the gradients the caller holds): one temporary buffer fewer."""
    if grads is raw_grads:
        return list(torch._foreach_sub(grads, exp_avgs))
    torch._foreach_sub_(grads, exp_avgs)
    return grads


def scaled_quotient_step(
    params: list[Tensor],
    numerators: list[Tensor],
    scales: list[Scalar] | None,
    denom: list[Tensor],
    coefficients: list[Scalar],
) -> None:
    """``θ += c·num/d``, or ``θ += c·(num·s)/d`` with ``scales``; ``denom`` is consumed.

    Without scales this is one ``addcdiv``. With them, ``num·s/d`` is written over ``d`` one tensor
    at a time, so the scaled numerators never fill a second full-size buffer.
    """
    if scales is None:
        foreach_addcdiv_(params, numerators, denom, coefficients)
        return
    for numerator, scale, d in zip(numerators, scales, denom):
        torch.div(numerator * scale, d, out=d)
    torch._foreach_mul_(denom, per_tensor(coefficients))
    torch._foreach_add_(params, denom)


def rectification(beta1: float, beta2: float, step: float, degenerated_to_sgd: bool) -> tuple[str, float]:
    """The authors' RAdam-style rectification at step ``t``: ``(branch, step_size)``.

    ``branch`` is ``'adaptive'`` when ρ_t ≥ 5 (step size ``r_t = √((1−β2^t)(ρ_t−4)(ρ_t−2)ρ∞ /
    ((ρ∞−4)(ρ∞−2)ρ_t)) / (1−β1^t)``), ``'sgd'`` below the threshold with ``degenerated_to_sgd``
    (step size ``1/(1−β1^t)``), and ``'none'`` otherwise (no parameter step). The arithmetic is the
    authors', term for term, so that results agree to the last bit.
    """
    beta2_t = beta2**step
    n_sma_max = 2 / (1 - beta2) - 1
    n_sma = n_sma_max - 2 * step * beta2_t / (1 - beta2_t)
    if n_sma >= 5:
        ratio = (1 - beta2_t) * (n_sma - 4) / (n_sma_max - 4) * (n_sma - 2) / n_sma * n_sma_max / (n_sma_max - 2)
        return "adaptive", math.sqrt(ratio) / (1 - beta1**step)
    if degenerated_to_sgd:
        return "sgd", 1.0 / (1 - beta1**step)
    return "none", 0.0


def rectified_step_sizes(beta1: Scalar, beta2: Scalar, step: Tensor, degenerated_to_sgd: bool) -> tuple[Tensor, Tensor]:
    """:func:`rectification` for a tensor step, without branching: ``(adaptive size, sgd size)``.

    The size of the branch not taken is 0, so a compiled step applies both updates. Same
    arithmetic as :func:`rectification`.
    """
    beta2_t = beta2**step
    n_sma_max = 2 / (1 - beta2) - 1
    n_sma = n_sma_max - 2 * step * beta2_t / (1 - beta2_t)
    adaptive = n_sma >= 5
    ratio = (1 - beta2_t) * (n_sma - 4) / (n_sma_max - 4) * (n_sma - 2) / n_sma * n_sma_max / (n_sma_max - 2)
    bias_correction1 = 1 - beta1**step
    zero = torch.zeros_like(n_sma)
    adaptive_size = torch.where(adaptive, ratio.clamp(min=0).sqrt() / bias_correction1, zero)
    sgd_size = torch.where(adaptive, zero, 1.0 / bias_correction1) if degenerated_to_sgd else zero
    return adaptive_size, sgd_size


def rectified_update_multi(
    params: list[Tensor],
    numerators: list[Tensor],
    exp_avgs: list[Tensor],
    var: list[Tensor],
    *,
    steps: list[Scalar],
    lr: Scalar,
    beta1: Scalar,
    beta2: Scalar,
    eps: Scalar,
    degenerated_to_sgd: bool,
    numerator_scales: list[Scalar] | None = None,
) -> None:
    """The rectified parameter step of AdaBelief and ACProp: ``θ −= lr·r_t·num/(√var + ε)`` where
    ρ_t ≥ 5, ``θ −= lr·m/(1−β1^t)`` below it with ``degenerated_to_sgd``, nothing otherwise.

    Python float steps pick each tensor's branch on the host (the authors' code, bit for bit);
    tensor steps (a compiled step) apply both updates with the untaken one's size 0.
    ``numerator_scales`` multiply the numerators (ACProp's ``g·(1−β1^t)``), one tensor at a time.
    """
    if any(isinstance(t, Tensor) for t in steps):
        sizes = [rectified_step_sizes(beta1, beta2, torch.as_tensor(t), degenerated_to_sgd) for t in steps]
        denom = torch._foreach_sqrt(var)
        foreach_add_scalar_(denom, eps)
        scaled_quotient_step(params, numerators, numerator_scales, denom, [-a * lr for a, _ in sizes])
        torch._foreach_add_(params, torch._foreach_mul(exp_avgs, per_tensor([-s * lr for _, s in sizes])))
        return
    adaptive: list[tuple[int, float]] = []
    for i, t in enumerate(steps):
        branch, step_size = rectification(beta1, beta2, t, degenerated_to_sgd)  # type: ignore[arg-type]
        if branch == "adaptive":
            adaptive.append((i, step_size))
        elif branch == "sgd":  # the first few steps only: one op per tensor is fine
            params[i].add_(exp_avgs[i], alpha=-step_size * lr)
    if adaptive:
        denom = torch._foreach_sqrt([var[i] for i, _ in adaptive])
        foreach_add_scalar_(denom, eps)
        scaled_quotient_step(
            [params[i] for i, _ in adaptive],
            [numerators[i] for i, _ in adaptive],
            None if numerator_scales is None else [numerator_scales[i] for i, _ in adaptive],
            denom,
            [-size * lr for _, size in adaptive],
        )


def decay_mode(weight_decouple: bool, fixed_decay: bool) -> str:
    """The authors' three weight-decay modes as :mod:`optarena.optim.weight_decay` names them: decoupled
    ``θ(1 − lr·λ)``, with ``fixed_decay`` ``θ(1 − λ)``, otherwise L2 (on copies; the authors add it into
    ``p.grad`` in place)."""
    if not weight_decouple:
        return "l2"
    return "unscaled" if fixed_decay else "decoupled"


def belief_hyperparameters(names: tuple[str, ...]) -> dict[str, Constraint]:
    """The declared keywords of AdaBelief and ACProp: Adam's, and their flags."""
    return {**ADAM_HYPERPARAMETERS, **{name: Flag() for name in names}}


def belief_kernel_hyperparameters(group: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """lr, betas, eps, weight_decay (as Python floats, as the authors read them) and the flags."""
    beta1, beta2 = group["betas"]
    return dict(
        lr=scalar_value(group["lr"]),
        beta1=scalar_value(beta1),
        beta2=scalar_value(beta2),
        eps=scalar_value(group["eps"]),
        weight_decay=scalar_value(group["weight_decay"]),
        **{name: group[name] for name in names},
    )


def gather_with_max_buffer(
    optimizer: OptarenaOptimizer, group: dict[str, Any], gathered: tuple[Any, ...]
) -> tuple[list[Tensor], list[Tensor], list[list[Any]], list[Tensor]]:
    """Add the AMSGrad buffer as a last state list: the tensors where ``amsgrad``, None elsewhere.

    The buffer exists only in ``amsgrad`` groups (as in torch's Adam), so it is not one of the
    ``state_names`` that every parameter gets; it is created lazily, also when ``amsgrad`` is
    switched on after the first step. The parameters are walked in the order the base class
    gathered them (those with a gradient, in group order).
    """
    params, grads, states, steps = gathered
    if group["amsgrad"]:
        buffers: list[Any] = []
        for p in group["params"]:
            if p.grad is None:
                continue
            state = optimizer.state[p]
            if MAX_STATE not in state:
                state[MAX_STATE] = zeros_state(p)
            buffers.append(torch.view_as_real(state[MAX_STATE]) if p.is_complex() else state[MAX_STATE])
    else:
        buffers = [None] * len(params)
    return params, grads, [*states, buffers], steps


# --- AdaBelief -----------------------------------------------------------------------------------


def adabelief_single_tensor(
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
) -> None:
    """Reference AdaBelief update of one tensor (``m_grad`` feeds m; ``grad`` feeds the residual)."""
    mode = decay_mode(weight_decouple, fixed_decay)
    grad, m_grad = weight_decay_(param, grad, m_grad, lr=lr, weight_decay=weight_decay, mode=mode)
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step

    exp_avg.mul_(beta1).add_(m_grad, alpha=1 - beta1)
    residual = grad - exp_avg
    exp_avg_var.mul_(beta2).addcmul_(residual, residual, value=1 - beta2)
    # s + ε: into the state (the authors' add_), or formed afresh for this step only.
    var = exp_avg_var.add_(eps) if eps_in_state else exp_avg_var.add(eps)
    if amsgrad:
        torch.maximum(max_exp_avg_var, exp_avg_var, out=max_exp_avg_var)
        var_for_denom = max_exp_avg_var if eps_in_state else max_exp_avg_var.add(eps)
    else:
        var_for_denom = var

    if not rectify:
        denom = (var_for_denom.sqrt() / math.sqrt(bias_correction2)).add_(eps)
        param.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)
        return
    branch, step_size = rectification(beta1, beta2, step, degenerated_to_sgd)
    if branch == "adaptive":  # the authors use s here even with amsgrad
        param.addcdiv_(exp_avg, var.sqrt().add_(eps), value=-step_size * lr)
    elif branch == "sgd":
        param.add_(exp_avg, alpha=-step_size * lr)


def adabelief_multi_tensor(
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
) -> None:
    """foreach AdaBelief; equals :func:`adabelief_single_tensor` tensor by tensor."""
    raw_grads = grads
    mode = decay_mode(weight_decouple, fixed_decay)
    grads, m_grads = weight_decay_multi_(params, grads, m_grads, lr=lr, weight_decay=weight_decay, mode=mode)
    torch._foreach_mul_(exp_avgs, beta1)
    foreach_add_scaled_(exp_avgs, m_grads, 1 - beta1)
    del m_grads
    residuals = belief_residuals(grads, raw_grads, exp_avgs)
    del grads
    torch._foreach_mul_(exp_avg_vars, beta2)
    foreach_addcmul_(exp_avg_vars, residuals, residuals, [1 - beta2] * len(exp_avg_vars))
    del residuals
    if eps_in_state:
        foreach_add_scalar_(exp_avg_vars, eps)
        var = exp_avg_vars
    else:
        var = foreach_add_scalar(exp_avg_vars, eps)
    if amsgrad:
        maxes: list[Tensor] = max_exp_avg_vars  # type: ignore[assignment]
        torch._foreach_maximum_(maxes, exp_avg_vars)
        var_for_denom = maxes if eps_in_state else foreach_add_scalar(maxes, eps)
    else:
        var_for_denom = var

    if not rectify:
        denom = torch._foreach_sqrt(var_for_denom)
        foreach_div_scalars_(denom, [sqrt(1 - beta2**t) for t in steps])
        foreach_add_scalar_(denom, eps)
        foreach_addcdiv_(params, exp_avgs, denom, [-lr / (1 - beta1**t) for t in steps])
        return
    rectified_update_multi(
        params,
        exp_avgs,
        exp_avgs,
        var,
        steps=steps,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        degenerated_to_sgd=degenerated_to_sgd,
    )


class AdaBelief(OptarenaOptimizer):
    """AdaBelief with the defaults of the authors' ``adabelief-pytorch 0.2.1``.

    Args:
        params: parameters or param groups.
        lr: learning rate (default 1e-3).
        betas: (β1, β2) (default (0.9, 0.999)).
        eps: added into the second-moment state every step and to the denominator (default 1e-16;
            the authors recommend 1e-8 where SGD beats Adam, e.g. CNNs on images).
        weight_decay: λ (default 0).
        amsgrad: keep ``max(s)`` and divide by it (default False). As in the authors' code, the
            rectified branch ignores it.
        weight_decouple: decoupled decay ``θ(1 − lr·λ)`` (default True); False is L2 (``g + λθ``).
        fixed_decay: with ``weight_decouple``, decay ``θ(1 − λ)`` not scaled by lr (default False).
        rectify: RAdam's rectified step, ρ_t ≥ 5 (default False, the paper's algorithm; True is the package's
            default).
        degenerated_to_sgd: below the rectification threshold take the step
            ``lr·m/(1 − β1^t)`` (default True); False takes no step there.
        eps_in_state: add ε into ``s`` in place every step, as the authors' code (default True).
            False keeps ``s`` the plain EMA of ``(g − m)²`` and uses ``s + ε`` only in the denominator.
        options: the engine's keywords (``foreach``, ``maximize``, ``agr``, ``agr_stop_step``,
            ``agr_official_edge_cases``, ``nonfinite``), see :class:`~optarena.optim.base.OptarenaOptimizer`.
            With ``agr='paper'`` the regularized gradient feeds m; the residual ``g − m`` uses the raw gradient.
    """

    hyperparameters: ClassVar[dict[str, Constraint]] = belief_hyperparameters(FLAG_NAMES)
    layout_buffers: ClassVar[dict[str, tuple[str, str]]] = {"amsgrad": ("exp_avg_var", MAX_STATE)}
    state_names = ("exp_avg", "exp_avg_var")  # + max_exp_avg_var in amsgrad groups
    single_tensor_kernel = staticmethod(adabelief_single_tensor)
    multi_tensor_kernel = staticmethod(adabelief_multi_tensor)
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
        rectify: bool = False,
        degenerated_to_sgd: bool = True,
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
            eps_in_state=eps_in_state,
        )
        super().__init__(params, defaults, **options)

    def _kernel_hyperparameters(self, group: dict[str, Any]) -> dict[str, Any]:
        return belief_kernel_hyperparameters(group, FLAG_NAMES)

    def _gather(self, group: dict[str, Any]):  # type: ignore[override]
        return gather_with_max_buffer(self, group, super()._gather(group))


REGISTRY_ENTRIES = [
    OptimizerInfo(
        "adabelief",
        AdaBelief,
        "AdaBelief: Adam whose second moment tracks (g − m)², the belief in the gradient",
        supports_agr=True,
        paper=(
            "Zhuang et al., AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed Gradients, NeurIPS 2020"
        ),
        code="github.com/juntang-zhuang/Adabelief-Optimizer (PyPI adabelief-pytorch 0.2.1)",
        notes=(
            "the paper's algorithm (no rectification) on adabelief-pytorch 0.2.1's other defaults: eps 1e-16 "
            "accumulated into s, decoupled decay; rectify=True is the package; "
            "eps_in_state=False the non-accumulating form"
        ),
        test_inputs=(
            OptimizerInput("rectify_on", {"rectify": True}),
            OptimizerInput("amsgrad", {"amsgrad": True}, checkpointed=True),
            OptimizerInput("amsgrad-rectify_on", {"amsgrad": True, "rectify": True}),
            OptimizerInput("l2", {"weight_decouple": False, "weight_decay": 1e-2}),
            OptimizerInput(
                "fixed_decay", {"fixed_decay": True, "weight_decay": 1e-3}, still={"lr": 0.0, "weight_decay": 0.0}
            ),
            OptimizerInput("no_sgd_fallback", {"degenerated_to_sgd": False, "rectify": True}),
            OptimizerInput("eps_not_in_state", {"eps_in_state": False}),
            OptimizerInput("eps_not_in_state-amsgrad", {"eps_in_state": False, "amsgrad": True}),
            OptimizerInput("agr_paper", {"agr": "paper"}),
            OptimizerInput("agr_code-rectify_on", {"agr": "code", "rectify": True}),
        ),
    )
]
