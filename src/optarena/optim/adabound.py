"""AdaBound and AMSBound (Luo, Xiong, Liu, Sun, "Adaptive Gradient Methods with Dynamic Bound of Learning Rate",
ICLR 2019), as the authors' code (``Luolc/AdaBound``, ``adabound/adabound.py``) computes them::

    g ← g + λθ                                         L2 (default; AdaBoundW: θ ← θ(1 − λ))
    m ← β1·m + (1 − β1)·g          v ← β2·v + (1 − β2)·g²
    AMSBound: v_max ← max(v_max, v), used for v below
    s = lr · √(1 − β2^t) / (1 − β1^t)
    final = final_lr · lr / base_lr                    base_lr: the group's lr when it was added
    lower = final·(1 − 1/(γt + 1))     upper = final·(1 + 1/(γt))
    θ ← θ − clamp(s / (√v + ε), lower, upper) · m      (paper_sqrt_t: the clamped rate / √t)

``base_lr`` is stored in the param group, so groups added later get theirs and ``state_dict()``
saves it (the authors keep a list zipped with the groups: a group added later is silently never
updated, and the list is not saved). Every choice is listed in ``docs/algorithms/adabound.md``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from optarena.optim.base import ADAM_HYPERPARAMETERS, OptarenaOptimizer, ParamsT, zeros_state
from optarena.optim.functional import (
    Scalar,
    foreach_add_scalar_,
    foreach_add_scaled_,
    foreach_addcmul_,
    per_tensor,
    scalar_value,
)
from optarena.optim.info import OptimizerInfo, OptimizerInput
from optarena.optim.weight_decay import WEIGHT_DECAY_MODES, add_l2, add_l2_multi, decay_, decay_factor, decay_multi_
from optarena.validation import NON_NEGATIVE, Constraint, Flag, OneOf, Real

"""``'l2'``: the authors' AdaBound; ``'unscaled'``: θ(1 − λ), the authors' AdaBoundW;
``'decoupled'``: θ(1 − lr·λ), AdamW's form (kozistr's default)."""


def adabound_bounds(final_lr: Scalar, gamma: Scalar, step: Scalar) -> tuple[Scalar, Scalar]:
    """The authors' (lower, upper) bounds on the per-coordinate rate at step t."""
    return final_lr * (1 - 1 / (gamma * step + 1)), final_lr * (1 + 1 / (gamma * step))


def adabound_single_tensor(
    param: Tensor,
    grad: Tensor,
    m_grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Tensor | None = None,
    *,
    step: float,
    lr: float,
    beta1: float,
    beta2: float,
    final_lr: float,
    gamma: float,
    eps: float,
    l2: float,
    decay: float | None,
    paper_sqrt_t: bool,
) -> None:
    """Reference AdaBound update of one tensor; AMSBound when ``max_exp_avg_sq`` is given.

    ``final_lr`` is already scaled by lr / base_lr; ``l2`` is the L2 coefficient (0 unless
    ``weight_decay_mode='l2'``) and ``decay`` the factor of a decoupled decay (or None).
    """
    decay_(param, decay)  # θ ← θ·(1 − lr·λ) or θ·(1 − λ)
    grad, m_grad = add_l2(grad, m_grad, param, l2)  # L2 on copies: p.grad is never written
    exp_avg.mul_(beta1).add_(m_grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    if max_exp_avg_sq is not None:  # AMSBound
        torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        second = max_exp_avg_sq
    else:
        second = exp_avg_sq
    step_size = lr * (1 - beta2**step) ** 0.5 / (1 - beta1**step)
    lower, upper = adabound_bounds(final_lr, gamma, step)
    rate = second.sqrt().add_(eps).reciprocal_().mul_(step_size)  # s / (√v + ε)
    rate.clamp_(lower, upper)
    if paper_sqrt_t:  # the paper's η_t = clip(...)/√t
        rate.mul_(step**-0.5)
    param.sub_(rate.mul_(exp_avg))


def adabound_multi_tensor(
    params: list[Tensor],
    grads: list[Tensor],
    m_grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor] | None = None,
    *,
    steps: list[float],
    lr: float,
    beta1: float,
    beta2: float,
    final_lr: float,
    gamma: float,
    eps: float,
    l2: float,
    decay: float | None,
    paper_sqrt_t: bool,
) -> None:
    """foreach AdaBound / AMSBound; equals :func:`adabound_single_tensor` tensor by tensor."""
    decay_multi_(params, decay)
    grads, m_grads = add_l2_multi(grads, m_grads, params, l2)
    torch._foreach_mul_(exp_avgs, beta1)
    foreach_add_scaled_(exp_avgs, m_grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    foreach_addcmul_(exp_avg_sqs, grads, grads, [1 - beta2] * len(exp_avg_sqs))
    if max_exp_avg_sqs is not None:
        torch._foreach_maximum_(max_exp_avg_sqs, exp_avg_sqs)
        second = max_exp_avg_sqs
    else:
        second = exp_avg_sqs
    del grads, m_grads  # free the L2 gradients before the rates: one temporary buffer at a time
    bounds = [adabound_bounds(final_lr, gamma, t) for t in steps]
    rates = torch._foreach_sqrt(second)
    foreach_add_scalar_(rates, eps)
    torch._foreach_reciprocal_(rates)
    torch._foreach_mul_(rates, per_tensor([lr * (1 - beta2**t) ** 0.5 / (1 - beta1**t) for t in steps]))
    torch._foreach_clamp_min_(rates, per_tensor([b[0] for b in bounds]))
    torch._foreach_clamp_max_(rates, per_tensor([b[1] for b in bounds]))
    if paper_sqrt_t:
        torch._foreach_mul_(rates, per_tensor([t**-0.5 for t in steps]))
    torch._foreach_mul_(rates, exp_avgs)
    torch._foreach_sub_(params, rates)


class AdaBound(OptarenaOptimizer):
    """AdaBound (AMSBound with ``amsbound=True``): Adam whose per-coordinate rate is clipped to
    bounds that converge to ``final_lr``.

    Args:
        params: parameters or param groups.
        lr: the Adam learning rate (default 1e-3, authors' code).
        betas: (β1, β2) (default (0.9, 0.999), authors' code).
        final_lr: the SGD rate the bounds converge to, at ``lr == base_lr`` (default 0.1, authors'
            code). It follows the group's lr: ``final = final_lr·lr/base_lr``.
        gamma: convergence speed of the bounds, in (0, 1) (default 1e-3, authors' code).
        eps: added to the *unnormalised* √v (default 1e-8, authors' code).
        weight_decay: λ (default 0, authors' code).
        amsbound: use the running maximum of v (AMSBound; default False, authors' code).
        weight_decay_mode: ``'l2'`` (g + λθ on a copy, authors' ``AdaBound``; default),
            ``'unscaled'`` (θ(1 − λ), authors' ``AdaBoundW``) or ``'decoupled'`` (θ(1 − lr·λ)).
        paper_sqrt_t: divide the clipped rate by √t, as the paper's Algorithm 2 (default False:
            the authors' code has no such factor).
        base_lr: the lr that ``final_lr`` refers to (default None: each group's lr when it is
            added). Stored per group as ``group['base_lr']``.
        options: the engine's keywords (``foreach``, ``maximize``, ``agr``, ``agr_stop_step``,
            ``agr_official_edge_cases``, ``nonfinite``), see :class:`~optarena.optim.base.OptarenaOptimizer`.
    """

    hyperparameters: ClassVar[dict[str, Constraint]] = {
        **ADAM_HYPERPARAMETERS,
        "final_lr": NON_NEGATIVE,
        "gamma": Real(0.0, 1.0, low_open=True, high_open=True),
        "amsbound": Flag(),
        "weight_decay_mode": OneOf(WEIGHT_DECAY_MODES),
        "paper_sqrt_t": Flag(),
        "base_lr": Real(0.0, optional=True),
    }
    layout_buffers: ClassVar[dict[str, tuple[str, str]]] = {"amsbound": ("exp_avg_sq", "max_exp_avg_sq")}
    state_names = ("exp_avg", "exp_avg_sq")
    single_tensor_kernel = staticmethod(adabound_single_tensor)
    multi_tensor_kernel = staticmethod(adabound_multi_tensor)
    elementwise_kernel = True

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        final_lr: float = 0.1,
        gamma: float = 1e-3,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsbound: bool = False,
        *,
        weight_decay_mode: str = "l2",
        paper_sqrt_t: bool = False,
        base_lr: float | None = None,
        **options: Any,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            final_lr=final_lr,
            gamma=gamma,
            eps=eps,
            weight_decay=weight_decay,
            amsbound=amsbound,
            weight_decay_mode=weight_decay_mode,
            paper_sqrt_t=paper_sqrt_t,
            base_lr=base_lr,
        )
        super().__init__(params, defaults, **options)

    # -- hyperparameters -----------------------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group, capturing its lr as ``base_lr`` (the reference of ``final_lr``) unless given."""
        if param_group.get("base_lr", self.defaults["base_lr"]) is None:
            lr = param_group.get("lr", self.defaults["lr"])
            self.hyperparameters["lr"].check("lr", lr)
            param_group["base_lr"] = scalar_value(lr)
        super().add_param_group(param_group)

    def _before_step(self) -> None:
        # A group created with lr 0 has no scale yet: its first nonzero lr becomes the reference
        # (the authors' code divides by zero here; kozistr re-captures the same way).
        for group in self.param_groups:
            if group["base_lr"] == 0 and scalar_value(group["lr"]) > 0:
                group["base_lr"] = scalar_value(group["lr"])

    def _kernel_hyperparameters(self, group: dict[str, Any]) -> dict[str, Any]:
        beta1, beta2 = group["betas"]
        lr = scalar_value(group["lr"])
        base_lr = group["base_lr"]
        mode = group["weight_decay_mode"]
        return dict(
            lr=lr,
            beta1=scalar_value(beta1),
            beta2=scalar_value(beta2),
            # lr schedulers cannot see final_lr: it follows lr / base_lr (the authors' workaround).
            final_lr=scalar_value(group["final_lr"]) * lr / base_lr if base_lr else 0.0,
            gamma=group["gamma"],
            eps=group["eps"],
            l2=group["weight_decay"] if mode == "l2" else 0.0,
            decay=decay_factor(lr=lr, weight_decay=group["weight_decay"], mode=mode),
            paper_sqrt_t=group["paper_sqrt_t"],
        )

    # -- state -----------------------------------------------------------------------------------

    def _gather(self, group: dict[str, Any]) -> tuple[list[Tensor], list[Tensor], list[list[Tensor]], list[Tensor]]:
        """The base's lists, plus ``max_exp_avg_sq`` (made on first use) for an AMSBound group."""
        params, grads, states, steps = super()._gather(group)
        if group["amsbound"]:
            maxes = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "max_exp_avg_sq" not in state:
                    state["max_exp_avg_sq"] = zeros_state(p)
                maxes.append(torch.view_as_real(state["max_exp_avg_sq"]) if p.is_complex() else state["max_exp_avg_sq"])
            states = [*states, maxes]
        return params, grads, states, steps


_INFO = dict(
    supports_agr=True,
    paper="Luo, Xiong, Liu, Sun, Adaptive Gradient Methods with Dynamic Bound of Learning Rate, ICLR 2019",
    code="github.com/Luolc/AdaBound (adabound/adabound.py)",
    search_space={"final_lr": ("log", 1e-2, 1.0)},
)

REGISTRY_ENTRIES = [
    OptimizerInfo(
        "adabound",
        AdaBound,
        "AdaBound: Adam with per-coordinate rates clipped to bounds that converge to an SGD rate",
        notes="authors' code: no 1/sqrt(t) (paper_sqrt_t=True adds it); L2 weight decay; base_lr kept per group",
        **_INFO,
        test_inputs=(
            OptimizerInput("paper_sqrt_t", {"paper_sqrt_t": True}),
            OptimizerInput("l2", {"weight_decay": 5e-4}),
            OptimizerInput(
                "unscaled",
                {"weight_decay": 1e-3, "weight_decay_mode": "unscaled"},
                still={"lr": 0.0, "weight_decay": 0.0},  # the decay is not scaled by lr
            ),
            OptimizerInput("decoupled", {"weight_decay": 1e-2, "weight_decay_mode": "decoupled"}),
        ),
    ),
    OptimizerInfo(
        "amsbound",
        AdaBound,
        "AMSBound: AdaBound on the running maximum of the second moment",
        defaults={"amsbound": True},
        notes="AdaBound(amsbound=True); the max is kept only for AMSBound groups",
        **_INFO,
        test_inputs=(OptimizerInput("agr_paper", {"agr": "paper", "weight_decay": 5e-4}),),
    ),
]
