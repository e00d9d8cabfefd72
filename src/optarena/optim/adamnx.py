"""AdamNX (Zhu, Xiao & Min, arXiv:2511.13465; seed 002), as the authors' code computes it.

Adam whose second-moment decay tends to 1, so that late in training the preconditioner
freezes and the method becomes momentum SGD. Per step (``mengzhu0308/AdamNX``, ``adamnx.py``)::

    θ ← θ(1 − lr·λ)                                   decoupled, lr-scaled, before the moments
    β1,t = (β1 − β1^t) / (1 − β1^t)
    m ← β1,t·m + (1 − β1,t)·g                         = Adam's bias-corrected m̂ exactly
    β̂2,t = (1 − β2^((1−β2)(t−1))) / (1 − β2^((1−β2)t))       the paper's Eq. 11
    v ← β̂2,t·v + (1 − β̂2,t)·g²                        a normalised average: no bias correction
    θ ← θ − lr · m / (√v + ε)

``1 − β2^((1−β2)t)`` is computed as ``−expm1((1−β2)·t·log β2)`` in float64: with β2 = 0.99
the base ``β2^(1−β2)`` is 1 − 1e-4, so ``1 − pow(...)`` cancels about four digits in float64
(and nearly all of them in float32).

``beta2_decay`` swaps Eq. 11 for the decay of another method inside the same update — the paper's
ablation (§5.4, Tables 7-10: "the β2 in Adam was replaced with the β2,t of Adafactor, AdaX and
AdamNX"). Each is the weight of the old average in a *normalised* v, and ``betas[1]`` is that
method's own constant (research notes, algorithms.md §2.4)::

    'adamnx'     β̂2,t = Eq. 11 above                          betas[1] = β2 (authors: 0.99)
    'adam'       β̂2,t = β2(1 − β2^(t−1)) / (1 − β2^t)         betas[1] = β2 (Adam: 0.999); = Adam's v̂
    'adax'       β̂2,t = 1 − β/((1+β)^t − 1)                   betas[1] = β (AdaX: 1e-4);   = AdaX's v̂
    'adafactor'  β̂2,t = 1 − t^(−c)                            betas[1] = c (Adafactor: 0.8)
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from optarena.optim.base import ADAM_HYPERPARAMETERS, OptarenaOptimizer, ParamsT, adam_kernel_hyperparameters
from optarena.optim.functional import (
    Scalar,
    expm1_log1p,
    foreach_add_scalar_,
    foreach_addcdiv_,
    foreach_addcmul_,
    foreach_lerp_,
    one_minus_pow,
    per_tensor,
)
from optarena.optim.info import OptimizerErrorInput, OptimizerInfo, OptimizerInput
from optarena.optim.weight_decay import decay_, decay_factor, decay_multi_
from optarena.validation import Constraint, OneOf


def adamnx_beta1(beta1: Scalar, step: Scalar) -> Scalar:
    """β1,t = (β1 − β1^t)/(1 − β1^t); 0 at t = 1, so m_1 = g_1."""
    return (beta1 - beta1**step) / (1 - beta1**step)


def adamnx_beta2(beta2: Scalar, step: Scalar) -> Scalar:
    """Eq. 11: β̂2,t = (1 − β2^((1−β2)(t−1))) / (1 − β2^((1−β2)t)); 0 at t = 1, → 1 as t → ∞."""
    rate = 1.0 - beta2
    return one_minus_pow(beta2, rate * (step - 1)) / one_minus_pow(beta2, rate * step)


def adam_beta2(beta2: Scalar, step: Scalar) -> Scalar:
    """Adam's bias-corrected average as a normalised one: β2(1 − β2^(t−1))/(1 − β2^t); → β2."""
    return beta2 * one_minus_pow(beta2, step - 1) / one_minus_pow(beta2, step)


def adax_beta2(beta: Scalar, step: Scalar) -> Scalar:
    """AdaX's growing average normalised: 1 − β/((1+β)^t − 1); 0 at t = 1, → 1 exponentially."""
    return 1 - beta / expm1_log1p(beta, step)


def adafactor_beta2(exponent: Scalar, step: Scalar) -> Scalar:
    """Adafactor's polynomial decay 1 − t^(−c); 0 at t = 1."""
    return 1 - step ** (-exponent)


BETA2_DECAYS = {"adamnx": adamnx_beta2, "adam": adam_beta2, "adax": adax_beta2, "adafactor": adafactor_beta2}


def adamnx_single_tensor(
    param: Tensor,
    grad: Tensor,
    m_grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    *,
    step: float,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    beta2_decay: str = "adamnx",
) -> None:
    """Reference AdamNX update of one tensor."""
    decay_(param, decay_factor(lr=lr, weight_decay=weight_decay, mode="decoupled"))  # θ ← θ(1 − lr·λ)
    beta1_t = adamnx_beta1(beta1, step)
    exp_avg.lerp_(m_grad, 1 - beta1_t)
    beta2_t = BETA2_DECAYS[beta2_decay](beta2, step)
    exp_avg_sq.mul_(beta2_t).addcmul_(grad, grad, value=1 - beta2_t)
    param.addcdiv_(exp_avg, exp_avg_sq.sqrt().add_(eps), value=-lr)


def adamnx_multi_tensor(
    params: list[Tensor],
    grads: list[Tensor],
    m_grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    *,
    steps: list[float],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    beta2_decay: str = "adamnx",
) -> None:
    """foreach AdamNX; equals :func:`adamnx_single_tensor` tensor by tensor."""
    decay_multi_(params, decay_factor(lr=lr, weight_decay=weight_decay, mode="decoupled"))
    beta1_ts = [adamnx_beta1(beta1, t) for t in steps]
    foreach_lerp_(exp_avgs, m_grads, [1 - b for b in beta1_ts])
    beta2_ts = [BETA2_DECAYS[beta2_decay](beta2, t) for t in steps]
    torch._foreach_mul_(exp_avg_sqs, per_tensor(beta2_ts))
    foreach_addcmul_(exp_avg_sqs, grads, grads, [1 - b for b in beta2_ts])
    denom = torch._foreach_sqrt(exp_avg_sqs)
    foreach_add_scalar_(denom, eps)
    foreach_addcdiv_(params, exp_avgs, denom, [-lr] * len(params))


class AdamNX(OptarenaOptimizer):
    """AdamNX with the authors' defaults.

    Args:
        params: parameters or param groups.
        lr: learning rate (default 1e-3).
        betas: (β1, β2) (default (0.9, 0.99) as the authors' code; the paper's text says its
            defaults align with Adam's — see ``docs/algorithms/adamnx.md``).
        eps: added to √v (default 1e-8).
        weight_decay: decoupled, lr-scaled decay λ (default 0.01).
        beta2_decay: the second-moment decay: ``'adamnx'`` (Eq. 11, default), or ``'adam'``,
            ``'adax'``, ``'adafactor'`` for the paper's ablation; ``betas[1]`` is then that
            method's constant (see the module docstring).
        options: the engine's keywords (``foreach``, ``maximize``, ``agr``, ``agr_stop_step``,
            ``agr_official_edge_cases``, ``nonfinite``), see :class:`~optarena.optim.base.OptarenaOptimizer`.
    """

    hyperparameters: ClassVar[dict[str, Constraint]] = {
        **ADAM_HYPERPARAMETERS,
        "beta2_decay": OneOf(tuple(BETA2_DECAYS)),
    }
    state_names = ("exp_avg", "exp_avg_sq")
    single_tensor_kernel = staticmethod(adamnx_single_tensor)
    multi_tensor_kernel = staticmethod(adamnx_multi_tensor)
    elementwise_kernel = True

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        *,
        beta2_decay: str = "adamnx",
        **options: Any,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, beta2_decay=beta2_decay)
        super().__init__(params, defaults, **options)

    def _backfill(self, group: dict[str, Any]) -> None:
        super()._backfill(group)
        group.setdefault("beta2_decay", "adamnx")  # state dicts saved before the option existed

    def _validate_group(self, group: dict[str, Any]) -> None:
        super()._validate_group(group)
        if group["beta2_decay"] in ("adax", "adafactor") and group["betas"][1] <= 0:
            raise ValueError(
                f"Invalid betas[1]: {group['betas'][1]!r}; with beta2_decay={group['beta2_decay']!r} it is "
                "AdaX's rate or Adafactor's exponent, expected a value in (0, 1)"
            )

    def _kernel_hyperparameters(self, group: dict[str, Any]) -> dict[str, Any]:
        return {**adam_kernel_hyperparameters(group), "beta2_decay": group["beta2_decay"]}


REGISTRY_ENTRIES = [
    OptimizerInfo(
        "adamnx",
        AdamNX,
        "Adam whose second-moment decay tends to 1 (becomes momentum SGD late in training)",
        supports_agr=True,
        paper="Zhu, Xiao, Min, AdamNX, arXiv:2511.13465",
        code="github.com/mengzhu0308/AdamNX",
        notes="defaults are the authors' code: betas (0.9, 0.99), eps 1e-8, weight_decay 0.01",
        test_inputs=(OptimizerInput("agr_code", {"agr": "code"}),),
        error_inputs=(
            OptimizerErrorInput(
                {"beta2_decay": "adax", "betas": (0.9, 0.0)}, r"Invalid betas\[1\]: 0\.0; .*AdaX's rate"
            ),
        ),
    )
]
