"""LAMB (You, Li, Reddi, Hseu, Kumar, Bhojanapalli, Song, Demmel, Keutzer, Hsieh, "Large Batch Optimization
for Deep Learning: Training BERT in 76 minutes", ICLR 2020), Algorithm 2.

Adam's direction, rescaled per tensor ("layer") so that its step is a fixed fraction of the tensor's norm::

    m ← β1·m + (1 − β1)·g            v ← β2·v + (1 − β2)·g²
    m̂ = m / (1 − β1^t)              v̂ = v / (1 − β2^t)                  (bias_correction=True)
    r = m̂ / (√v̂ + ε)
    u = r + λθ                                                          (weight_decay_mode='update')
    θ ← θ − lr · φ(‖θ‖) / ‖u‖ · u                                       the trust ratio φ(‖θ‖)/‖u‖

with ‖·‖ the L2 norm over the whole tensor, φ the identity (``weight_norm_bounds=None``) or the paper's
``φ(z) = min(max(z, γ_l), γ_u)``, and the ratio 1 where ``φ(‖θ‖)`` or ``‖u‖`` is 0 (every implementation
guards this: a zero-initialised tensor would otherwise never move). The norms reduce over whole tensors, so
on DTensor shards they are global sums (:func:`~optarena.optim.functional.per_tensor_sum_of_squares`).

The other readings: ``bias_correction=False`` (the paper's v3 text, ``cybertronai/pytorch-lamb`` and
kozistr with ``adam_debias=True``), ``weight_decay_mode='decoupled'`` (θ(1 − lr·λ) before the ratio:
kozistr's default), ``weight_norm_bounds=(0, 10)`` (kozistr's clamp), ``trust_scope='weights'`` (tensors
of 2+ dimensions only: BERT's exclusion of biases and LayerNorm, by shape rather than by name). See
``docs/algorithms/lamb.md``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from optarena.optim.base import ADAM_HYPERPARAMETERS, OptarenaOptimizer, ParamsT, adam_kernel_hyperparameters
from optarena.optim.functional import (
    Scalar,
    foreach_add_scalar_,
    foreach_add_scaled_,
    foreach_addcmul_,
    foreach_lerp_,
    is_zero,
    per_tensor,
    per_tensor_sum_of_squares,
    sqrt,
)
from optarena.optim.info import OptimizerErrorInput, OptimizerInfo, OptimizerInput
from optarena.optim.weight_decay import WEIGHT_DECAY_MODES, weight_decay_, weight_decay_multi_
from optarena.validation import NON_NEGATIVE, Constraint, Flag, Items, OneOf

#: ``'update'``: λθ joins the update inside the trust ratio (the paper); the rest are the shared forms.
LAMB_WEIGHT_DECAY_MODES: tuple[str, ...] = ("update", *WEIGHT_DECAY_MODES)
#: Which tensors get the trust ratio: every one (the paper), or those of 2+ dimensions (BERT's recipe).
TRUST_SCOPES: tuple[str, ...] = ("all", "weights")


def adapted(t: Tensor, trust_scope: str) -> bool:
    """Whether ``t`` gets the trust ratio (a static test on its shape)."""
    return trust_scope == "all" or t.dim() >= 2


def tensor_norms(tensors: list[Tensor]) -> Tensor:
    """‖x‖ of each tensor, stacked, summed in float64 whatever the dtype (one tensor's upcast at a time).

    In float32 the order of a sum changes its last bits, and a sharded sum adds the shards' partial sums in
    another order than one process does; in float64 both round to the same float32 ratio.
    """
    return torch.stack([per_tensor_sum_of_squares([t.to(torch.float64)])[0] for t in tensors]).sqrt()


def trust_ratios(
    params: list[Tensor], updates: list[Tensor], *, norm_low: Scalar | None, norm_high: Scalar | None
) -> list[Tensor]:
    """``φ(‖θ‖) / ‖u‖`` of each tensor, 1 where either is 0; norms over whole tensors (global on shards)."""
    weight_norms = tensor_norms(params)
    if norm_low is not None:
        weight_norms = weight_norms.clamp(min=norm_low, max=norm_high)  # φ(z) = min(max(z, γ_l), γ_u)
    update_norms = tensor_norms(updates)
    usable = (weight_norms > 0) & (update_norms > 0)
    ratios = torch.where(usable, weight_norms / update_norms, 1.0).to(params[0].dtype)
    return list(ratios.unbind(0))


def lamb_single_tensor(
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
    bias_correction: bool,
    trust_scope: str,
    norm_low: float | None,
    norm_high: float | None,
) -> None:
    """Reference LAMB update of one tensor (``m_grad`` feeds m, ``grad`` feeds v), Algorithm 2's lines."""
    if weight_decay_mode != "update":  # the shared forms: θ decayed first, or g + λθ on a copy
        grad, m_grad = weight_decay_(param, grad, m_grad, lr=lr, weight_decay=weight_decay, mode=weight_decay_mode)
    exp_avg.lerp_(m_grad, 1 - beta1)  # m ← β1·m + (1 − β1)·g
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # v ← β2·v + (1 − β2)·g²
    m_hat = exp_avg / (1 - beta1**step) if bias_correction else exp_avg
    v_hat = exp_avg_sq / (1 - beta2**step) if bias_correction else exp_avg_sq
    update = m_hat / (v_hat.sqrt() + eps)  # r
    if weight_decay_mode == "update" and not is_zero(weight_decay):
        update.add_(param, alpha=weight_decay)  # u = r + λθ
    if adapted(param, trust_scope):
        (ratio,) = trust_ratios([param], [update], norm_low=norm_low, norm_high=norm_high)
        update.mul_(ratio)  # φ(‖θ‖)/‖u‖ · u
    param.add_(update, alpha=-lr)


def lamb_multi_tensor(
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
    bias_correction: bool,
    trust_scope: str,
    norm_low: Scalar | None,
    norm_high: Scalar | None,
) -> None:
    """foreach LAMB over same-device, same-dtype lists; equals :func:`lamb_single_tensor`.

    The update is built in one parameter-sized buffer: ``1/(√v̂ + ε)``, times m, divided by ``1 − β1^t``.
    """
    if weight_decay_mode != "update":
        grads, m_grads = weight_decay_multi_(
            params, grads, m_grads, lr=lr, weight_decay=weight_decay, mode=weight_decay_mode
        )
    foreach_lerp_(exp_avgs, m_grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    foreach_addcmul_(exp_avg_sqs, grads, grads, [1 - beta2] * len(grads))
    del grads, m_grads  # free the L2 gradients before the update's buffer
    updates = torch._foreach_sqrt(exp_avg_sqs)
    if bias_correction:
        torch._foreach_div_(updates, per_tensor([sqrt(1 - beta2**t) for t in steps]))  # √v̂
    foreach_add_scalar_(updates, eps)
    torch._foreach_reciprocal_(updates)
    torch._foreach_mul_(updates, exp_avgs)
    if bias_correction:
        torch._foreach_div_(updates, per_tensor([1 - beta1**t for t in steps]))  # r = m̂ / (√v̂ + ε)
    if weight_decay_mode == "update" and not is_zero(weight_decay):
        foreach_add_scaled_(updates, params, weight_decay)  # u = r + λθ
    idx = [i for i, p in enumerate(params) if adapted(p, trust_scope)]
    if idx:
        chosen = [updates[i] for i in idx]
        ratios = trust_ratios([params[i] for i in idx], chosen, norm_low=norm_low, norm_high=norm_high)
        torch._foreach_mul_(chosen, ratios)
    foreach_add_scaled_(params, updates, -lr)


class Lamb(OptarenaOptimizer):
    """LAMB, the paper's Algorithm 2 with φ the identity, and the engine's options.

    Args:
        params: parameters or param groups.
        lr: learning rate: each step moves a tensor by about ``lr·‖θ‖`` (default 1e-3: TF Addons' LAMB and
            kozistr; the paper tunes it per batch size).
        betas: (β1, β2) (default (0.9, 0.999): the paper, TF Addons, kozistr).
        eps: added to √v̂ (default 1e-6: TF Addons and kozistr).
        weight_decay: λ (default 0.0: TF Addons and kozistr; the paper's BERT runs use 0.01).
        weight_decay_mode: ``'update'`` (λθ added to r inside the trust ratio: the paper and TF Addons;
            default), ``'decoupled'`` (θ(1 − lr·λ) before the ratio: kozistr's default), ``'unscaled'``
            (θ(1 − λ), kozistr's ``fixed_decay``) or ``'l2'`` (g + λθ on a copy, before the moments).
        bias_correction: divide m and v by ``1 − β^t`` (default True: the paper's Algorithm 2 and TF Addons);
            False is the v3 text's reading (cybertronai, kozistr with ``adam_debias=True``).
        trust_scope: ``'all'`` (every tensor gets the trust ratio: the paper; default) or ``'weights'``
            (tensors of 2+ dimensions; biases and norm weights take the plain Adam step, as BERT's recipe
            excludes them by name).
        weight_norm_bounds: ``(γ_l, γ_u)`` of ``φ(z) = min(max(z, γ_l), γ_u)``, or None for φ the identity
            (default: TF Addons; kozistr clamps with (0, 10), GluonNLP with (1e-3, 10)).
        options: the engine's keywords (``foreach``, ``maximize``, ``agr``, ``agr_stop_step``,
            ``agr_official_edge_cases``, ``agr_scope``, ``nonfinite``), see
            :class:`~optarena.optim.base.OptarenaOptimizer`.
    """

    hyperparameters: ClassVar[dict[str, Constraint]] = {
        **ADAM_HYPERPARAMETERS,
        "weight_decay_mode": OneOf(LAMB_WEIGHT_DECAY_MODES),
        "bias_correction": Flag(),
        "trust_scope": OneOf(TRUST_SCOPES),
        "weight_norm_bounds": Items((NON_NEGATIVE, NON_NEGATIVE), optional=True),
    }
    state_names = ("exp_avg", "exp_avg_sq")
    single_tensor_kernel = staticmethod(lamb_single_tensor)
    multi_tensor_kernel = staticmethod(lamb_multi_tensor)

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        *,
        weight_decay_mode: str = "update",
        bias_correction: bool = True,
        trust_scope: str = "all",
        weight_norm_bounds: tuple[float, float] | None = None,
        **options: Any,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            weight_decay_mode=weight_decay_mode,
            bias_correction=bias_correction,
            trust_scope=trust_scope,
            weight_norm_bounds=weight_norm_bounds,
        )
        super().__init__(params, defaults, **options)

    def _validate_group(self, group: dict[str, Any]) -> None:
        super()._validate_group(group)
        bounds = group["weight_norm_bounds"]
        if bounds is not None and bounds[0] > bounds[1]:
            raise ValueError(f"Invalid weight_norm_bounds: {tuple(bounds)!r}; expected (low, high) with low <= high")

    def _kernel_hyperparameters(self, group: dict[str, Any]) -> dict[str, Any]:
        bounds = group["weight_norm_bounds"]
        return dict(
            adam_kernel_hyperparameters(group),
            weight_decay_mode=group["weight_decay_mode"],
            bias_correction=group["bias_correction"],
            trust_scope=group["trust_scope"],
            norm_low=None if bounds is None else float(bounds[0]),
            norm_high=None if bounds is None else float(bounds[1]),
        )


REGISTRY_ENTRIES = [
    OptimizerInfo(
        "lamb",
        Lamb,
        "LAMB: Adam's direction with a per-tensor trust ratio ||theta|| / ||update|| (large-batch training)",
        supports_agr=True,
        paper="You et al., Large Batch Optimization for Deep Learning: Training BERT in 76 minutes, ICLR 2020",
        code="github.com/tensorflow/addons (tensorflow_addons/optimizers/lamb.py)",
        notes="Algorithm 2: bias-corrected, lambda*theta inside the trust ratio, phi the identity, ratio 1 "
        "where a norm is 0; trust_scope='weights' leaves 1-D tensors unadapted",
        search_space={"trust_scope": ("choice", TRUST_SCOPES)},
        test_inputs=(
            OptimizerInput("decayed_weights", {"weight_decay": 1e-2, "trust_scope": "weights"}, sharded=True),
            OptimizerInput(
                "kozistr",
                {
                    "bias_correction": False,
                    "weight_norm_bounds": (0.0, 10.0),
                    "weight_decay": 1e-2,
                    "weight_decay_mode": "decoupled",
                },
                sharded=True,
            ),
            OptimizerInput("l2", {"weight_decay": 1e-3, "weight_decay_mode": "l2", "weight_norm_bounds": (1e-3, 10.0)}),
            OptimizerInput(
                "unscaled",
                {"weight_decay": 1e-3, "weight_decay_mode": "unscaled"},
                still={"lr": 0.0, "weight_decay": 0.0},  # the decay is not scaled by lr
            ),
            OptimizerInput("agr_paper", {"agr": "paper"}),
        ),
        error_inputs=(
            OptimizerErrorInput({"weight_norm_bounds": (1.0, 0.5)}, r"Invalid weight_norm_bounds: \(1\.0, 0\.5\)"),
        ),
    )
]
