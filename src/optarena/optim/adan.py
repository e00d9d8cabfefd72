"""Adan (Xie, Zhou, Li, Lin, Yan, "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing
Deep Models", arXiv:2208.06677, TPAMI 2024), as the authors' code ``sail-sg/Adan`` computes it.

Betas follow the code's convention, ``b = 1 − β_paper`` (defaults (0.98, 0.92, 0.99) are the
paper's (0.02, 0.08, 0.01)). Per step, with ``c`` the optional global-norm clip factor::

    g ← c·g                                       clip factor from the raw gradients of all groups
    d = g − g_prev                                (0 on the first step and after restart())
    m ← b1·m + (1 − b1)·g
    v ← b2·v + (1 − b2)·d                         the difference EMA
    n ← b3·n + (1 − b3)·(g + b2·d)²
    denom = √n / √(1 − b3^t) + ε                  ε outside the root, after bias correction
    u = lr/(1 − b1^t) · m/denom + lr·b2/(1 − b2^t) · v/denom
    θ ← (θ − u) / (1 + lr·λ)                      proximal decay (default, no_prox=False)
    θ ← θ(1 − lr·λ) − u                           AdamW-like decay (no_prox=True)
    g_prev ← g

``adan_agr`` is the same optimizer with AGR in the authors' code mode (``hjiang24/AGR-method``
``Adan_AGR.py``): the clip factor still comes from the raw gradients, and m, v, n and g_prev all
see the regularized gradient. In ``agr='paper'`` mode only m sees it; v, n and g_prev see the raw
(clipped) gradient. See ``docs/algorithms/adan.md``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from optarena.optim.base import OptarenaOptimizer, ParamsT
from optarena.optim.functional import (
    Scalar,
    foreach_add_scalar_,
    foreach_add_scaled_,
    foreach_addcdiv_,
    foreach_addcmul_,
    foreach_copy_,
    foreach_div_scalars_,
    per_tensor,
    per_tensor_sum_of_squares,
    scalar_value,
)
from optarena.optim.info import OptimizerInfo, OptimizerInput
from optarena.optim.weight_decay import decay_, decay_factor, decay_multi_, proximal_, proximal_multi_
from optarena.validation import NON_NEGATIVE, Constraint, Flag, betas


def _is_one(x: Scalar) -> bool:
    """True only for a Python number equal to 1 (a tensor factor is always applied)."""
    return not isinstance(x, Tensor) and x == 1


def adan_single_tensor(
    param: Tensor,
    grad: Tensor,
    m_grad: Tensor,
    exp_avg: Tensor,
    exp_avg_diff: Tensor,
    exp_avg_sq: Tensor,
    prev_grad: Tensor,
    *,
    step: Scalar,
    lr: Scalar,
    beta1: Scalar,
    beta2: Scalar,
    beta3: Scalar,
    eps: Scalar,
    weight_decay: Scalar,
    no_prox: bool,
    clip: Scalar,
) -> None:
    """Reference Adan update of one tensor (``m_grad`` feeds m; ``grad`` feeds v, n and g_prev)."""
    same = m_grad is grad
    if not _is_one(clip):  # global-norm clipping; a new tensor, the caller's gradient is untouched
        grad = grad * clip
        m_grad = grad if same else m_grad * clip
    if step == 1:  # no previous gradient yet: the first difference is 0
        prev_grad.copy_(grad)
    diff = prev_grad.neg_().add_(grad)  # d = g − g_prev, in the buffer of g_prev (rewritten below)
    exp_avg.mul_(beta1).add_(m_grad, alpha=1 - beta1)  # m
    exp_avg_diff.mul_(beta2).add_(diff, alpha=1 - beta2)  # v
    nesterov = diff.mul_(beta2).add_(grad)  # g + b2·d
    exp_avg_sq.mul_(beta3).addcmul_(nesterov, nesterov, value=1 - beta3)  # n
    denom = (exp_avg_sq.sqrt() / (1 - beta3**step) ** 0.5).add_(eps)
    if no_prox:
        decay_(param, decay_factor(lr=lr, weight_decay=weight_decay, mode="decoupled"))  # θ ← θ(1 − lr·λ)
    param.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**step))
    param.addcdiv_(exp_avg_diff, denom, value=-lr * beta2 / (1 - beta2**step))
    if not no_prox:
        proximal_(param, lr=lr, weight_decay=weight_decay)  # θ ← θ / (1 + lr·λ)
    prev_grad.copy_(grad)


def adan_multi_tensor(
    params: list[Tensor],
    grads: list[Tensor],
    m_grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_diffs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    prev_grads: list[Tensor],
    *,
    steps: list[Scalar],
    lr: Scalar,
    beta1: Scalar,
    beta2: Scalar,
    beta3: Scalar,
    eps: Scalar,
    weight_decay: Scalar,
    no_prox: bool,
    clip: Scalar,
) -> None:
    """foreach Adan over same-device, same-dtype lists; equals :func:`adan_single_tensor`."""
    same = all(a is b for a, b in zip(grads, m_grads))
    if not _is_one(clip):
        grads = list(torch._foreach_mul(grads, clip))
        m_grads = grads if same else list(torch._foreach_mul(m_grads, clip))
    for i, t in enumerate(steps):  # g_prev = g at the first step, so that d = 0 there
        if isinstance(t, Tensor):  # a compiled step: no data-dependent branch
            prev_grads[i].copy_(torch.where(t == 1, grads[i], prev_grads[i]))
        elif t == 1:
            prev_grads[i].copy_(grads[i])
    torch._foreach_neg_(prev_grads)
    torch._foreach_add_(prev_grads, grads)
    diffs = prev_grads  # d = g − g_prev; g_prev is rewritten at the end
    torch._foreach_mul_(exp_avgs, beta1)
    foreach_add_scaled_(exp_avgs, m_grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_diffs, beta2)
    foreach_add_scaled_(exp_avg_diffs, diffs, 1 - beta2)
    torch._foreach_mul_(diffs, beta2)
    torch._foreach_add_(diffs, grads)
    torch._foreach_mul_(exp_avg_sqs, beta3)
    foreach_addcmul_(exp_avg_sqs, diffs, diffs, [1 - beta3] * len(grads))
    denom = torch._foreach_sqrt(exp_avg_sqs)
    foreach_div_scalars_(denom, [(1 - beta3**t) ** 0.5 for t in steps])
    foreach_add_scalar_(denom, eps)
    if no_prox:
        decay_multi_(params, decay_factor(lr=lr, weight_decay=weight_decay, mode="decoupled"))
    scale_m = [-lr / (1 - beta1**t) for t in steps]
    scale_diff = [-lr * beta2 / (1 - beta2**t) for t in steps]
    if torch.compiler.is_compiling():  # one division per value, not two: (a·m + b·n) / denom
        update = torch._foreach_mul(exp_avgs, per_tensor(scale_m))
        torch._foreach_add_(update, torch._foreach_mul(exp_avg_diffs, per_tensor(scale_diff)))
        torch._foreach_add_(params, torch._foreach_div(update, denom))
    else:
        foreach_addcdiv_(params, exp_avgs, denom, scale_m)
        foreach_addcdiv_(params, exp_avg_diffs, denom, scale_diff)
    if not no_prox:
        proximal_multi_(params, lr=lr, weight_decay=weight_decay)
    foreach_copy_(prev_grads, grads)


class Adan(OptarenaOptimizer):
    """Adan, as the authors' code ``sail-sg/Adan`` computes it, with the engine's options.

    Args:
        params: parameters or param groups.
        lr: learning rate (default 1e-3, the authors' code).
        betas: (b1, b2, b3) in the code's convention, ``1 − β_paper`` (default (0.98, 0.92, 0.99),
            the authors' code; the paper's (0.02, 0.08, 0.01)).
        eps: added to the bias-corrected √n, outside the root (default 1e-8, the authors' code).
        weight_decay: λ, lr-scaled (default 0.0, the authors' code; their README recommends 0.02).
        max_grad_norm: clip all gradients by ``min(max_grad_norm / (‖g‖₂ + ε), 1)``, the norm
            taken over every raw gradient of every group, before AGR and ``maximize``; 0 disables
            it (default 0.0, the authors' code). Optimizer-wide: a param group may not set its own.
            The ε of the clip is the last param group's, as in the authors' code.
        no_prox: False (default, the authors' code and the paper): proximal decay
            ``θ ← (θ − u)/(1 + lr·λ)``; True: AdamW-like ``θ ← θ(1 − lr·λ) − u``.
        options: the engine's keywords (``foreach``, ``maximize``, ``agr``, ``agr_stop_step``,
            ``agr_official_edge_cases``, ``nonfinite``), see :class:`~optarena.optim.base.OptarenaOptimizer`.
            With ``agr='paper'`` only m sees the
            regularized gradient.

    The step counter is per parameter (the authors' code keeps one per group); they agree
    whenever every parameter of a group has a gradient at every step. :meth:`restart` is the
    authors' ``restart_opt``.
    """

    hyperparameters: ClassVar[dict[str, Constraint]] = {
        "lr": NON_NEGATIVE,
        "betas": betas(3),
        "eps": NON_NEGATIVE,
        "weight_decay": NON_NEGATIVE,
        "max_grad_norm": NON_NEGATIVE,
        "no_prox": Flag(),
    }
    state_names = ("exp_avg", "exp_avg_diff", "exp_avg_sq", "prev_grad")
    single_tensor_kernel = staticmethod(adan_single_tensor)
    multi_tensor_kernel = staticmethod(adan_multi_tensor)
    elementwise_kernel = True

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float, float] = (0.98, 0.92, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        max_grad_norm: float = 0.0,
        no_prox: bool = False,
        **options: Any,
    ) -> None:
        NON_NEGATIVE.check("max_grad_norm", max_grad_norm)
        # The clip factor of the current step; recomputed by _before_step, 1 means no clipping.
        self._clip_factor: float = 1.0
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, max_grad_norm=max_grad_norm, no_prox=no_prox
        )
        super().__init__(params, defaults, **options)

    def _validate_group(self, group: dict[str, Any]) -> None:
        super()._validate_group(group)
        if group["max_grad_norm"] != self.defaults["max_grad_norm"]:
            raise ValueError(
                f"Invalid max_grad_norm: {group['max_grad_norm']!r}; the clip is optimizer-wide, so a param group "
                f"must keep the constructor's value {self.defaults['max_grad_norm']!r}"
            )

    # -- the global clip ---------------------------------------------------------------------

    def _before_step(self) -> None:
        """The clip factor from the raw gradients of every group (before AGR and maximize)."""
        self._clip_factor = 1.0
        max_norm = scalar_value(self.defaults["max_grad_norm"])
        if max_norm <= 0:
            return
        grads = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                grads.append(torch.view_as_real(p.grad) if p.grad.is_complex() else p.grad)
        if not grads:
            return
        # Σ g² in float64 on one device, whatever the gradients' dtypes and devices.
        device = grads[0].device
        squares = per_tensor_sum_of_squares(grads)
        norm = torch.stack([s.to(device=device, dtype=torch.float64) for s in squares]).sum().sqrt()
        eps = scalar_value(self.param_groups[-1]["eps"])  # the authors' code reads the last group's eps
        self._clip_factor = torch.clamp(max_norm / (norm + eps), max=1.0).item()

    def _kernel_hyperparameters(self, group: dict[str, Any]) -> dict[str, Any]:
        beta1, beta2, beta3 = group["betas"]
        return dict(
            lr=scalar_value(group["lr"]),
            beta1=scalar_value(beta1),
            beta2=scalar_value(beta2),
            beta3=scalar_value(beta3),
            eps=scalar_value(group["eps"]),
            weight_decay=scalar_value(group["weight_decay"]),
            no_prox=group["no_prox"],
            clip=self._clip_factor,
        )

    # -- restart -----------------------------------------------------------------------------

    @torch.no_grad()
    def restart(self) -> None:
        """Zero m, v and n and reset the step counters (the authors' ``restart_opt``).

        The next step takes its gradient as the previous one, so its difference is 0. The paper
        restarts on a condition; the authors' code leaves the condition to the user.
        """
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if not state:
                    continue
                state["step"].zero_()
                for key in ("exp_avg", "exp_avg_diff", "exp_avg_sq"):
                    state[key].zero_()

    restart_opt = restart  # the authors' name

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._clip_factor = 1.0  # transient: recomputed at the start of every step


_PAPER = "Xie et al., Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep Models, arXiv:2208.06677"

REGISTRY_ENTRIES = [
    OptimizerInfo(
        "adan",
        Adan,
        "Adaptive Nesterov momentum: EMAs of the gradient, its difference and the Nesterov-corrected square",
        supports_agr=True,
        paper=_PAPER,
        code="github.com/sail-sg/Adan (adan.py)",
        notes="code betas = 1 - paper betas; proximal decay by default (no_prox=True: AdamW-like); "
        "max_grad_norm clips on the raw gradients of all groups; restart() is restart_opt",
        test_inputs=(
            OptimizerInput("no_prox", {"no_prox": True, "weight_decay": 0.02}),
            OptimizerInput("prox_decay", {"weight_decay": 0.02}),
            OptimizerInput("max_grad_norm", {"max_grad_norm": 0.1}, sharded=True),
        ),
    ),
    OptimizerInfo(
        "adan_agr",
        Adan,
        "Adan with adaptive gradient regularization (AGR)",
        defaults={"agr": "code"},
        supports_agr=True,
        paper="Jiang et al., Adaptive Gradient Regularization, arXiv:2407.16944; " + _PAPER,
        code="github.com/hjiang24/AGR-method (branch master, Adan_AGR.py)",
        notes="agr='code' (m, v, n and the previous gradient see the regularized gradient) by default; "
        "'paper': m only. The clip factor comes from the raw gradients",
        test_inputs=(
            OptimizerInput("paper", {"agr": "paper"}),
            OptimizerInput("clip", {"max_grad_norm": 0.1, "weight_decay": 0.02}, checkpointed=True),
        ),
    ),
]
