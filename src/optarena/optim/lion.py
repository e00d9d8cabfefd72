"""Lion (Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023, arXiv:2302.06675),
as the authors' code ``google/automl`` ``lion/lion_pytorch.py`` computes it. Per step::

    θ ← θ(1 − lr·λ)                   decoupled, lr-scaled weight decay, applied first
    c = β1·m + (1 − β1)·g             the interpolation that sets the update's sign
    θ ← θ − lr·sign(c)                sign(0) = 0: a zero c moves nothing
    m ← β2·m + (1 − β2)·g             the momentum

No bias correction and no ε. Both c and m are first moments (EMAs of the gradient) and Lion has
no second moment, so with AGR both see the regularized gradient in either mode: ``agr='paper'``
(AGR on the gradient and the first moments, not on a second moment) equals ``agr='code'`` here.
See ``docs/algorithms/lion.md``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from optarena.optim.base import OptarenaOptimizer, ParamsT
from optarena.optim.functional import Scalar, foreach_add_scaled_, scalar_value
from optarena.optim.info import OptimizerInfo, OptimizerInput
from optarena.optim.weight_decay import decay_, decay_factor, decay_multi_
from optarena.validation import NON_NEGATIVE, Constraint, betas


def lion_single_tensor(
    param: Tensor,
    grad: Tensor,
    m_grad: Tensor,
    exp_avg: Tensor,
    *,
    step: Scalar,
    lr: Scalar,
    beta1: Scalar,
    beta2: Scalar,
    weight_decay: Scalar,
) -> None:
    """Reference Lion update of one tensor. c and m are both first moments: both read ``m_grad``."""
    del grad, step  # no second moment; no bias correction
    decay_(param, decay_factor(lr=lr, weight_decay=weight_decay, mode="decoupled"))  # θ ← θ(1 − lr·λ)
    # c = β1·m + (1 − β1)·g, written as the authors' code writes it (two products, one sum), so the
    # sign of c matches theirs bit for bit.
    update = exp_avg.mul(beta1).add_(m_grad.mul(1 - beta1))
    param.add_(update.sign_(), alpha=-lr)
    exp_avg.mul_(beta2).add_(m_grad, alpha=1 - beta2)


def lion_multi_tensor(
    params: list[Tensor],
    grads: list[Tensor],
    m_grads: list[Tensor],
    exp_avgs: list[Tensor],
    *,
    steps: list[Scalar],
    lr: Scalar,
    beta1: Scalar,
    beta2: Scalar,
    weight_decay: Scalar,
) -> None:
    """foreach Lion over same-device, same-dtype lists; equals :func:`lion_single_tensor`."""
    del grads, steps
    decay_multi_(params, decay_factor(lr=lr, weight_decay=weight_decay, mode="decoupled"))
    updates = torch._foreach_mul(exp_avgs, beta1)
    for update, m_grad in zip(updates, m_grads):  # per tensor, so the product needs no second buffer
        update.add_(m_grad.mul(1 - beta1))
    torch._foreach_sign_(updates)
    foreach_add_scaled_(params, updates, -lr)
    torch._foreach_mul_(exp_avgs, beta2)
    foreach_add_scaled_(exp_avgs, m_grads, 1 - beta2)


class Lion(OptarenaOptimizer):
    """Lion (EvoLved Sign Momentum) with the engine's options (AGR, maximize, foreach, complex).

    Args:
        params: parameters or param groups.
        lr: learning rate (default 1e-4, the authors' code; the paper advises 3–10× smaller than
            AdamW's).
        betas: (β1, β2): β1 interpolates the update's sign, β2 is the momentum (default (0.9, 0.99),
            the authors' code and paper).
        weight_decay: decoupled, lr-scaled decay λ (default 0.0, the authors' code; the paper
            advises 3–10× AdamW's, since the sign update has a larger norm).
        options: the engine's keywords (``foreach``, ``maximize``, ``agr``, ``agr_stop_step``,
            ``agr_official_edge_cases``, ``nonfinite``), see :class:`~optarena.optim.base.OptarenaOptimizer`.
            ``agr='paper'`` equals ``'code'``
            (both c and m are first moments; there is no second moment).
    """

    hyperparameters: ClassVar[dict[str, Constraint]] = {
        "lr": NON_NEGATIVE,
        "betas": betas(2),
        "weight_decay": NON_NEGATIVE,
    }
    state_names = ("exp_avg",)
    single_tensor_kernel = staticmethod(lion_single_tensor)
    multi_tensor_kernel = staticmethod(lion_multi_tensor)
    elementwise_kernel = True

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        **options: Any,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay)
        super().__init__(params, defaults, **options)

    def _kernel_hyperparameters(self, group: dict[str, Any]) -> dict[str, Any]:
        beta1, beta2 = group["betas"]
        return dict(
            lr=scalar_value(group["lr"]),
            beta1=scalar_value(beta1),
            beta2=scalar_value(beta2),
            weight_decay=scalar_value(group["weight_decay"]),
        )


REGISTRY_ENTRIES = [
    OptimizerInfo(
        "lion",
        Lion,
        "Sign of an interpolated momentum (EvoLved Sign Momentum), found by program search",
        supports_agr=True,
        paper="Chen et al., Symbolic Discovery of Optimization Algorithms, NeurIPS 2023, arXiv:2302.06675",
        code="github.com/google/automl (lion/lion_pytorch.py)",
        notes="lr 3-10x smaller and weight_decay 3-10x larger than AdamW's (the paper); "
        "agr='paper' equals 'code' (c and m are both first moments)",
        lr_range=(1e-5, 1e-2),  # the paper's advice: 3-10x below AdamW's rates
        test_inputs=(
            OptimizerInput("decay", {"weight_decay": 0.1}),
            OptimizerInput("agr_paper", {"agr": "paper"}),
        ),
    )
]
