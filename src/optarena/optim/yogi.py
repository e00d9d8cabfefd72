"""Yogi (Zaheer, Reddi, Sachan, Kale, Kumar, "Adaptive Methods for Nonconvex Optimization", NeurIPS 2018).

Adam's second moment with an additive, sign-controlled update (the paper's Algorithm 2)::

    m ← β1·m + (1 − β1)·g
    v ← v − (1 − β2)·sign(v − g²)·g²          v moves towards g² by at most (1 − β2)·g² per step
    θ ← θ − lr_t · m / (√v + ε)

Adam's ``v ← v − (1 − β2)(v − g²)`` can grow v (and so shrink the effective rate) as fast as the
gradient's square jumps; Yogi's increment depends on ``v − g²`` only through its sign, so the effective
rate changes slowly. The paper writes no bias correction; ``lr_t`` is the step size of the reading chosen
by ``bias_correction``:

* ``'step_size'`` (default; Google's TensorFlow Yogi, TF Addons and TF Federated):
  ``lr·√(1 − β2^t)/(1 − β1^t)``, ε added to the *uncorrected* √v (Kingma & Ba's "ε-hat");
* ``'moments'`` (kozistr's pytorch-optimizer): ``lr/(1 − β1^t)`` with ``√(v/(1 − β2^t)) + ε``;
* ``'none'``: the paper's Algorithm 2 as written.

v starts at ``initial_accumulator`` (1e-6, the TensorFlow code; m starts at 0 there, as here). See
``docs/algorithms/yogi.md``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from optarena.optim.base import ADAM_HYPERPARAMETERS, OptarenaOptimizer, ParamsT, adam_kernel_hyperparameters
from optarena.optim.functional import (
    Scalar,
    foreach_add_scalar_,
    foreach_addcdiv_,
    foreach_addcmul_,
    foreach_div_scalars_,
    foreach_lerp_,
)
from optarena.optim.info import OptimizerInfo, OptimizerInput
from optarena.optim.weight_decay import WEIGHT_DECAY_MODES, weight_decay_, weight_decay_multi_
from optarena.validation import NON_NEGATIVE, Constraint, OneOf

#: How the step is bias-corrected: the TensorFlow code's step size, kozistr's corrected moments, or not at all.
YOGI_BIAS_CORRECTIONS: tuple[str, ...] = ("step_size", "moments", "none")


def yogi_step_size(lr: Scalar, beta1: Scalar, beta2: Scalar, step: Scalar, bias_correction: str) -> Scalar:
    """The factor of ``m / denominator`` in the update, for each reading of the bias correction."""
    if bias_correction == "step_size":
        return lr * (1 - beta2**step) ** 0.5 / (1 - beta1**step)
    if bias_correction == "moments":
        return lr / (1 - beta1**step)
    return lr


def yogi_single_tensor(
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
    weight_decay_mode: str,
    bias_correction: str,
) -> None:
    """Reference Yogi update of one tensor (``m_grad`` feeds m, ``grad`` feeds v)."""
    grad, m_grad = weight_decay_(param, grad, m_grad, lr=lr, weight_decay=weight_decay, mode=weight_decay_mode)
    exp_avg.lerp_(m_grad, 1 - beta1)  # m ← β1·m + (1 − β1)·g
    grad_sq = grad * grad
    exp_avg_sq.addcmul_(torch.sign(exp_avg_sq - grad_sq), grad_sq, value=-(1 - beta2))  # v ← v − (1−β2)·sign(v−g²)·g²
    denom = exp_avg_sq.sqrt()
    if bias_correction == "moments":
        denom.div_((1 - beta2**step) ** 0.5)  # √(v / (1 − β2^t))
    denom.add_(eps)
    param.addcdiv_(exp_avg, denom, value=-yogi_step_size(lr, beta1, beta2, step, bias_correction))


def yogi_multi_tensor(
    params: list[Tensor],
    grads: list[Tensor],
    m_grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    *,
    steps: list[Scalar],
    lr: Scalar,
    beta1: Scalar,
    beta2: Scalar,
    eps: Scalar,
    weight_decay: Scalar,
    weight_decay_mode: str,
    bias_correction: str,
) -> None:
    """foreach Yogi over same-device, same-dtype lists; equals :func:`yogi_single_tensor`.

    The sign term is built in one gradient-sized buffer: ``sign(g² − v)·g`` times ``g`` is
    ``−sign(v − g²)·g²`` exactly (a product with ±1 or 0 rounds like the product it negates).
    """
    grads, m_grads = weight_decay_multi_(
        params, grads, m_grads, lr=lr, weight_decay=weight_decay, mode=weight_decay_mode
    )
    foreach_lerp_(exp_avgs, m_grads, 1 - beta1)
    signs = torch._foreach_mul(grads, grads)
    torch._foreach_sub_(signs, exp_avg_sqs)
    torch._foreach_sign_(signs)  # sign(g² − v)
    torch._foreach_mul_(signs, grads)
    foreach_addcmul_(exp_avg_sqs, signs, grads, [1 - beta2] * len(grads))
    del signs, grads, m_grads  # one temporary buffer at a time
    denom = torch._foreach_sqrt(exp_avg_sqs)
    if bias_correction == "moments":
        foreach_div_scalars_(denom, [(1 - beta2**t) ** 0.5 for t in steps])
    foreach_add_scalar_(denom, eps)
    foreach_addcdiv_(params, exp_avgs, denom, [-yogi_step_size(lr, beta1, beta2, t, bias_correction) for t in steps])


class Yogi(OptarenaOptimizer):
    """Yogi with the TensorFlow code's defaults and bias correction, and the engine's options.

    Args:
        params: parameters or param groups.
        lr: learning rate (default 1e-2: the paper, the TensorFlow code and kozistr).
        betas: (β1, β2) (default (0.9, 0.999): the paper, the TensorFlow code and kozistr).
        eps: added to √v (default 1e-3: the paper, the TensorFlow code and kozistr; larger than Adam's,
            it bounds the effective rate while v is small).
        initial_accumulator: the value v starts at (default 1e-6, the TensorFlow code; kozistr also
            starts m there, which moves a parameter under a zero gradient). m starts at 0.
        weight_decay: λ (default 0.0).
        weight_decay_mode: ``'decoupled'`` (θ(1 − lr·λ) before the moments; default, kozistr's
            ``weight_decouple=True``), ``'unscaled'`` (θ(1 − λ), kozistr's ``fixed_decay``) or ``'l2'``
            (g + λθ on a copy). The TensorFlow code's proximal L1/L2 regularization is not provided.
        bias_correction: ``'step_size'`` (default, the TensorFlow code), ``'moments'`` (kozistr) or
            ``'none'`` (the paper's Algorithm 2); see the module docstring.
        options: the engine's keywords (``foreach``, ``maximize``, ``agr``, ``agr_stop_step``,
            ``agr_official_edge_cases``, ``agr_scope``, ``nonfinite``), see
            :class:`~optarena.optim.base.OptarenaOptimizer`.
    """

    hyperparameters: ClassVar[dict[str, Constraint]] = {
        **ADAM_HYPERPARAMETERS,
        "initial_accumulator": NON_NEGATIVE,
        "weight_decay_mode": OneOf(WEIGHT_DECAY_MODES),
        "bias_correction": OneOf(YOGI_BIAS_CORRECTIONS),
    }
    state_names = ("exp_avg", "exp_avg_sq")
    single_tensor_kernel = staticmethod(yogi_single_tensor)
    multi_tensor_kernel = staticmethod(yogi_multi_tensor)
    elementwise_kernel = True

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-3,
        initial_accumulator: float = 1e-6,
        weight_decay: float = 0.0,
        *,
        weight_decay_mode: str = "decoupled",
        bias_correction: str = "step_size",
        **options: Any,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            initial_accumulator=initial_accumulator,
            weight_decay=weight_decay,
            weight_decay_mode=weight_decay_mode,
            bias_correction=bias_correction,
        )
        super().__init__(params, defaults, **options)

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        """m at 0 and v at ``initial_accumulator``, as the TensorFlow code's slots (both parts of a complex v)."""
        state = super()._init_state(p, group)
        v = state["exp_avg_sq"]
        (torch.view_as_real(v) if v.is_complex() else v).fill_(group["initial_accumulator"])
        return state

    def _kernel_hyperparameters(self, group: dict[str, Any]) -> dict[str, Any]:
        return dict(
            adam_kernel_hyperparameters(group),
            weight_decay_mode=group["weight_decay_mode"],
            bias_correction=group["bias_correction"],
        )


REGISTRY_ENTRIES = [
    OptimizerInfo(
        "yogi",
        Yogi,
        "Yogi: Adam with an additive, sign-controlled second moment (slowly changing effective rate)",
        supports_agr=True,
        paper="Zaheer, Reddi, Sachan, Kale & Kumar, Adaptive Methods for Nonconvex Optimization, NeurIPS 2018",
        code="github.com/tensorflow/addons (tensorflow_addons/optimizers/yogi.py)",
        notes="TensorFlow code's defaults: eps 1e-3, v starts at 1e-6, bias correction in the step size "
        "(bias_correction='moments' is kozistr's, 'none' the paper's Algorithm 2); decoupled weight decay",
        lr_range=(1e-3, 1e-1),
        search_space={"eps": ("log", 1e-6, 1e-2)},
        test_inputs=(
            OptimizerInput("paper", {"bias_correction": "none", "initial_accumulator": 0.0}),
            OptimizerInput(
                "moments_l2", {"bias_correction": "moments", "weight_decay": 1e-2, "weight_decay_mode": "l2"}
            ),
            OptimizerInput("decoupled", {"weight_decay": 1e-2}),
            OptimizerInput(
                "unscaled",
                {"weight_decay": 1e-3, "weight_decay_mode": "unscaled"},
                still={"lr": 0.0, "weight_decay": 0.0},  # the decay is not scaled by lr
            ),
            OptimizerInput("agr_paper", {"agr": "paper"}),
        ),
    )
]
