"""AdaX (Li et al., "AdaX: Adaptive Gradient Descent with Exponential Long Term Memory", 2020).

AdamNX's relative, from the authors' code (``switchablenorms/AdaX``, ``cifar10-code/AdaX.py``).
Its "β2" is a small growth rate (default 1e-4), not a decay::

    g ← g + λθ                                      (AdaX: L2)   or  θ ← θ − lr·λ·θ (AdaXW)
    m ← β1·m + (1 − β1)·g                           no first-moment bias correction
    v ← (1 + β2)·v + β2·g²
    θ ← θ − lr · √((1 + β2)^t − 1) · m / (√v + ε)

``v / ((1 + β2)^t − 1)`` is a normalised average of g² whose weights favour *older* gradients.
With ``β2 = β2_AdamNX^(−(1−β2_AdamNX)) − 1`` it equals AdamNX's v exactly (tested), which is the
sense in which AdamNX generalises AdaX.
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
    foreach_add_scaled_,
    foreach_addcdiv_,
    foreach_addcmul_,
)
from optarena.optim.info import OptimizerInfo, OptimizerInput
from optarena.optim.weight_decay import weight_decay_, weight_decay_multi_
from optarena.validation import Constraint, Flag


def adax_step_size(lr: Scalar, beta2: Scalar, step: Scalar) -> Scalar:
    """lr·√((1 + β2)^t − 1), with (1 + β2)^t − 1 computed as expm1(t·log1p(β2))."""
    return lr * expm1_log1p(beta2, step) ** 0.5


def adax_single_tensor(
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
    decoupled: bool,
) -> None:
    """Reference AdaX / AdaXW update of one tensor."""
    # AdaXW: θ ← θ − lr·λ·θ; AdaX: L2, g + λθ on a copy of g
    mode = "decoupled" if decoupled else "l2"
    grad, m_grad = weight_decay_(param, grad, m_grad, lr=lr, weight_decay=weight_decay, mode=mode)
    exp_avg.mul_(beta1).add_(m_grad, alpha=1 - beta1)
    exp_avg_sq.mul_(1 + beta2).addcmul_(grad, grad, value=beta2)
    denom = exp_avg_sq.sqrt().add_(eps)
    param.addcdiv_(exp_avg, denom, value=-adax_step_size(lr, beta2, step))


def adax_multi_tensor(
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
    decoupled: bool,
) -> None:
    """foreach AdaX / AdaXW; equals :func:`adax_single_tensor` tensor by tensor."""
    mode = "decoupled" if decoupled else "l2"
    grads, m_grads = weight_decay_multi_(params, grads, m_grads, lr=lr, weight_decay=weight_decay, mode=mode)
    torch._foreach_mul_(exp_avgs, beta1)
    foreach_add_scaled_(exp_avgs, m_grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, 1 + beta2)
    foreach_addcmul_(exp_avg_sqs, grads, grads, [beta2] * len(grads))
    del grads, m_grads  # free the L2 gradients before denom: one temporary buffer at a time
    denom = torch._foreach_sqrt(exp_avg_sqs)
    foreach_add_scalar_(denom, eps)
    foreach_addcdiv_(params, exp_avgs, denom, [-adax_step_size(lr, beta2, t) for t in steps])


class AdaX(OptarenaOptimizer):
    """AdaX (L2 weight decay) or AdaXW (``decoupled=True``), with the authors' AdaX defaults.

    Args:
        params: parameters or param groups.
        lr: learning rate (default 1.5e-3; the authors' AdaXW uses 5e-3).
        betas: (β1, β2) with β2 the growth rate of v (default (0.9, 1e-4)).
        eps: added to the *unnormalised* √v (default 1e-12).
        weight_decay: λ (default 5e-4, L2; the authors' AdaXW uses 5e-2, decoupled).
        decoupled: AdaXW's decoupled decay θ ← θ − lr·λ·θ instead of L2 (default False).
        options: the engine's keywords (``foreach``, ``maximize``, ``agr``, ``agr_stop_step``,
            ``agr_official_edge_cases``, ``nonfinite``), see :class:`~optarena.optim.base.OptarenaOptimizer`.
    """

    hyperparameters: ClassVar[dict[str, Constraint]] = {**ADAM_HYPERPARAMETERS, "decoupled": Flag()}
    state_names = ("exp_avg", "exp_avg_sq")
    single_tensor_kernel = staticmethod(adax_single_tensor)
    multi_tensor_kernel = staticmethod(adax_multi_tensor)
    elementwise_kernel = True

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1.5e-3,
        betas: tuple[float, float] = (0.9, 1e-4),
        eps: float = 1e-12,
        weight_decay: float = 5e-4,
        *,
        decoupled: bool = False,
        **options: Any,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, decoupled=decoupled)
        super().__init__(params, defaults, **options)

    def _kernel_hyperparameters(self, group: dict[str, Any]) -> dict[str, Any]:
        return dict(adam_kernel_hyperparameters(group), decoupled=group["decoupled"])


REGISTRY_ENTRIES = [
    OptimizerInfo(
        "adax",
        AdaX,
        "AdaX: exponential long-term memory of squared gradients (AdamNX's relative)",
        supports_agr=True,
        paper="Li et al., AdaX: Adaptive Gradient Descent with Exponential Long Term Memory, 2020",
        code="github.com/switchablenorms/AdaX",
        notes="L2 weight decay by default; decoupled=True is AdaXW",
        test_inputs=(
            OptimizerInput("decoupled", {"decoupled": True, "weight_decay": 5e-2}),
            OptimizerInput("agr_paper", {"agr": "paper"}),
        ),
    )
]
