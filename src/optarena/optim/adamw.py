"""AdamW (Loshchilov & Hutter, 2019) on the optarena engine.

torch's own ``torch.optim.AdamW`` is registered as the ``adamw`` baseline. This one exists so
that AdamW can carry the engine's options — AGR in both modes (``adamw_agr``) — and it is
checked against ``torch.optim.AdamW`` in the tests. Per step::

    θ ← θ(1 − lr·λ)
    m ← β1·m + (1 − β1)·g          v ← β2·v + (1 − β2)·g²
    θ ← θ − lr · (m / (1 − β1^t)) / (√(v / (1 − β2^t)) + ε)
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from optarena.optim.base import ADAM_HYPERPARAMETERS, OptarenaOptimizer, ParamsT, adam_kernel_hyperparameters
from optarena.optim.functional import (
    foreach_add_scalar_,
    foreach_addcdiv_,
    foreach_addcmul_,
    foreach_div_scalars_,
    foreach_lerp_,
)
from optarena.optim.info import OptimizerInfo, OptimizerInput
from optarena.optim.weight_decay import decay_, decay_factor, decay_multi_
from optarena.validation import Constraint


def adamw_single_tensor(
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
) -> None:
    """Reference AdamW update of one tensor (``m_grad`` feeds m, ``grad`` feeds v)."""
    decay_(param, decay_factor(lr=lr, weight_decay=weight_decay, mode="decoupled"))  # θ ← θ(1 − lr·λ)
    exp_avg.lerp_(m_grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)


def adamw_multi_tensor(
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
) -> None:
    """foreach AdamW over same-device, same-dtype lists; equals :func:`adamw_single_tensor`."""
    decay_multi_(params, decay_factor(lr=lr, weight_decay=weight_decay, mode="decoupled"))
    foreach_lerp_(exp_avgs, m_grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    foreach_addcmul_(exp_avg_sqs, grads, grads, [1 - beta2] * len(grads))
    denom = torch._foreach_sqrt(exp_avg_sqs)
    foreach_div_scalars_(denom, [(1 - beta2**t) ** 0.5 for t in steps])
    foreach_add_scalar_(denom, eps)
    foreach_addcdiv_(params, exp_avgs, denom, [-lr / (1 - beta1**t) for t in steps])


class AdamW(OptarenaOptimizer):
    """AdamW with the engine's options (AGR, maximize, foreach, complex).

    Args:
        params: parameters or param groups.
        lr: learning rate (default 1e-3).
        betas: (β1, β2) (default (0.9, 0.999)).
        eps: added to the bias-corrected √v (default 1e-8).
        weight_decay: decoupled, lr-scaled decay λ (default 1e-2).
        options: the engine's keywords (``foreach``, ``maximize``, ``agr``, ``agr_stop_step``,
            ``agr_official_edge_cases``, ``nonfinite``), see :class:`~optarena.optim.base.OptarenaOptimizer`.
    """

    hyperparameters: ClassVar[dict[str, Constraint]] = ADAM_HYPERPARAMETERS
    state_format = "adam"  # m and v as torch's Adam keeps them: convert=True loads its state
    state_names = ("exp_avg", "exp_avg_sq")
    single_tensor_kernel = staticmethod(adamw_single_tensor)
    multi_tensor_kernel = staticmethod(adamw_multi_tensor)
    elementwise_kernel = True

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        **options: Any,
    ) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay), **options)

    def _kernel_hyperparameters(self, group: dict[str, Any]) -> dict[str, Any]:
        return adam_kernel_hyperparameters(group)


REGISTRY_ENTRIES = [
    OptimizerInfo(
        "adamw_agr",
        AdamW,
        "AdamW with adaptive gradient regularization (AGR)",
        defaults={"agr": "code"},
        supports_agr=True,
        paper="Jiang et al., Adaptive Gradient Regularization, arXiv:2407.16944",
        code="github.com/hjiang24/AGR-method (branch master)",
        notes="agr='code' (every moment sees the regularized gradient) by default; 'paper': first moment only",
        test_inputs=(
            OptimizerInput("paper", {"agr": "paper"}, sharded=True),
            OptimizerInput("stop", {"agr_stop_step": 3}),
            OptimizerInput("lookahead_pullback", {"lookahead": True, "lookahead_pullback": "pullback"}),
            # The other gradient transforms, alone and composed with AGR (see optarena.optim.transforms).
            OptimizerInput("clip_gc", {"clip_norm": 0.5, "clip_value": 0.1, "centralize": "weights"}, sharded=True),
            OptimizerInput("normalize_norm", {"normalize": "norm", "agr": None}, sharded=True),
            OptimizerInput("std_gcc", {"normalize": "std", "centralize": "conv", "agr": "paper"}, sharded=True),
        ),
    )
]
