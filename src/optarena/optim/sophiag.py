"""SophiaG (Liu, Li, Hall, Liang, Ma, "Sophia: A Scalable Stochastic Second-order Optimizer for Language Model
Pre-training", 2023), as the authors' code (``Liuhong99/Sophia``, ``sophia.py``) computes it::

    step():            θ ← θ(1 − lr·λ)
                       m ← β1·m + (1 − β1)·g
                       θ ← θ − lr · sign(m) · min(|m| / (ρ·bs·h + ε), 1)          ε = 1e-15
    update_hessian():  h ← β2·h + (1 − β2)·ĝ⊙ĝ

ĝ is the gradient of the loss on labels *sampled from the model's own softmax* (the Gauss-Newton-
Bartlett estimator), computed by the training loop every k steps; :func:`sophiag_gnb_update` does
it for a classifier. The batch size B of the paper's ĥ = B·ĝ⊙ĝ is folded into ``bs`` (tokens per
step), a group hyperparameter here because ``step()`` takes only a closure. There is no bias
correction. Every choice is listed in ``docs/algorithms/sophiag.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from optarena.optim.base import OptarenaOptimizer, ParamsT
from optarena.optim.functional import (
    foreach_add_scalar_,
    foreach_add_scaled_,
    foreach_addcmul_,
    global_l2_norm,
    group_by_device_and_dtype,
    scalar_value,
)
from optarena.optim.hooks import LoopContext, LoopHooks
from optarena.optim.info import OptimizerInfo, OptimizerInput
from optarena.optim.weight_decay import decay_, decay_factor, decay_multi_
from optarena.validation import NON_NEGATIVE, POSITIVE, Constraint, betas


def sophiag_single_tensor(
    param: Tensor,
    grad: Tensor,
    m_grad: Tensor,
    exp_avg: Tensor,
    hessian: Tensor,
    *,
    step: float,
    lr: float,
    beta1: float,
    rho: float,
    bs: float,
    eps: float,
    weight_decay: float,
) -> None:
    """Reference SophiaG step of one tensor (the authors' ``_single_tensor_sophiag``).

    Only the first moment is updated here (from ``m_grad``); ``hessian`` changes only in
    :meth:`SophiaG.update_hessian`.
    """
    decay_(param, decay_factor(lr=lr, weight_decay=weight_decay, mode="decoupled"))  # θ ← θ(1 − lr·λ)
    exp_avg.mul_(beta1).add_(m_grad, alpha=1 - beta1)
    ratio = (exp_avg.abs() / (hessian * (rho * bs) + eps)).clamp_(max=1)  # min(|m| / (ρ·bs·h + ε), 1)
    param.addcmul_(exp_avg.sign(), ratio, value=-lr)


def sophiag_multi_tensor(
    params: list[Tensor],
    grads: list[Tensor],
    m_grads: list[Tensor],
    exp_avgs: list[Tensor],
    hessians: list[Tensor],
    *,
    steps: list[float],
    lr: float,
    beta1: float,
    rho: float,
    bs: float,
    eps: float,
    weight_decay: float,
) -> None:
    """foreach SophiaG step; equals :func:`sophiag_single_tensor` tensor by tensor."""
    decay_multi_(params, decay_factor(lr=lr, weight_decay=weight_decay, mode="decoupled"))
    torch._foreach_mul_(exp_avgs, beta1)
    foreach_add_scaled_(exp_avgs, m_grads, 1 - beta1)
    # sign(m)·min(|m|/d, 1) = clamp(m/d, −1, 1) exactly (d ≥ 0), which needs one buffer, not three.
    ratios = torch._foreach_mul(hessians, rho * bs)
    foreach_add_scalar_(ratios, eps)
    for exp_avg, ratio in zip(exp_avgs, ratios):
        torch.div(exp_avg, ratio, out=ratio)  # m / d, in place of d
    torch._foreach_clamp_min_(ratios, -1)
    torch._foreach_clamp_max_(ratios, 1)
    foreach_add_scaled_(params, ratios, -lr)


def sophiag_hessian_single_tensor(hessian: Tensor, grad: Tensor, *, beta2: float) -> None:
    """h ← β2·h + (1 − β2)·ĝ⊙ĝ (the authors' ``update_hessian``)."""
    hessian.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)


def sophiag_hessian_multi_tensor(hessians: list[Tensor], grads: list[Tensor], *, beta2: float) -> None:
    """foreach :func:`sophiag_hessian_single_tensor`."""
    torch._foreach_mul_(hessians, beta2)
    foreach_addcmul_(hessians, grads, grads, [1 - beta2] * len(grads))


class SophiaG(OptarenaOptimizer):
    """SophiaG: sign-momentum clipped by a diagonal Gauss-Newton estimate of the curvature.

    Call :meth:`update_hessian` every k steps (k = 10 in the authors' GPT-2 runs) after a backward
    pass on labels sampled from the model's softmax; :func:`sophiag_gnb_update` does all of it.
    Without it, h stays 0 and SophiaG is sign descent with momentum.

    Args:
        params: parameters or param groups.
        lr: learning rate; the paper's η·ρ (default 1e-4, authors' ``sophia.py``).
        betas: (β1, β2): decay of m and of h (default (0.965, 0.99), authors' code).
        rho: the clipping scale ρ (default 0.04, authors' code; their GPT-2 configs use 0.05).
        weight_decay: decoupled, lr-scaled λ (default 0.1, authors' code; GPT-2 configs use 0.2).
        bs: the batch size B of the estimator, in the unit of the loss's mean — tokens per step
            for a language model (default 5120, the default of the authors' ``step(bs=...)``; their
            GPT-2 runs pass 480·1024). A group hyperparameter here, since ``step()`` takes only a
            closure.
        eps: added to ρ·bs·h (default 1e-15, the constant in the authors' code).
        options: the engine's keywords (``foreach``, ``maximize``, ``agr``, ``agr_stop_step``,
            ``agr_official_edge_cases``, ``nonfinite``), see :class:`~optarena.optim.base.OptarenaOptimizer`.
            AGR acts on m only; the curvature
            estimate always reads the raw ĝ.
    """

    hyperparameters: ClassVar[dict[str, Constraint]] = {
        "lr": NON_NEGATIVE,
        "betas": betas(2),
        "rho": NON_NEGATIVE,
        "weight_decay": NON_NEGATIVE,
        "bs": POSITIVE,
        "eps": NON_NEGATIVE,
    }
    state_names = ("exp_avg", "hessian")
    single_tensor_kernel = staticmethod(sophiag_single_tensor)
    multi_tensor_kernel = staticmethod(sophiag_multi_tensor)

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-4,
        betas: tuple[float, float] = (0.965, 0.99),
        rho: float = 0.04,
        weight_decay: float = 0.1,
        *,
        bs: float = 5120,
        eps: float = 1e-15,
        **options: Any,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, rho=rho, weight_decay=weight_decay, bs=bs, eps=eps)
        super().__init__(params, defaults, **options)

    def _kernel_hyperparameters(self, group: dict[str, Any]) -> dict[str, Any]:
        beta1, _ = group["betas"]
        return dict(
            lr=scalar_value(group["lr"]),
            beta1=scalar_value(beta1),
            rho=group["rho"],
            bs=group["bs"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
        )

    @torch.no_grad()
    def update_hessian(self) -> None:
        """h ← β2·h + (1 − β2)·ĝ⊙ĝ from the gradients now in ``p.grad`` (read, never written).

        Call it after a backward pass of the loss on labels sampled from the model's own
        predictions (see :func:`sophiag_gnb_update`). It does not count as a step. The ``nonfinite``
        policy applies to these gradients too: under ``'skip'`` a non-finite estimate leaves h as it
        was (and counts in ``skipped_steps``), under ``'raise'`` it raises.
        """
        if not self.gradients_admitted():
            return
        for group in self.param_groups:
            hessians: list[Tensor] = []
            grads: list[Tensor] = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("SophiaG does not support sparse gradients")
                if p.grad.is_complex() != p.is_complex():
                    raise RuntimeError("SophiaG: a complex parameter needs a complex gradient")
                state = self.state[p]
                if len(state) == 0:
                    state.update(self._init_state(p, group))
                real = torch.view_as_real if p.is_complex() else _identity
                hessians.append(real(state["hessian"]))
                grads.append(real(p.grad))
            if not hessians:
                continue
            beta2 = scalar_value(group["betas"][1])
            if self._use_foreach(group):
                for idx in group_by_device_and_dtype(hessians):
                    sophiag_hessian_multi_tensor([hessians[i] for i in idx], [grads[i] for i in idx], beta2=beta2)
            else:
                for h, g in zip(hessians, grads):
                    sophiag_hessian_single_tensor(h, g, beta2=beta2)


def _identity(t: Tensor) -> Tensor:
    return t


def sophiag_gnb_update(
    model: nn.Module | Callable[[Tensor], Tensor],
    inputs: Tensor,
    optimizer: SophiaG,
    *,
    max_grad_norm: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The Gauss-Newton-Bartlett estimate for a classifier, then ``optimizer.update_hessian()``.

    As the authors' training loop: logits = model(inputs) (last dimension = classes);
    ŷ ~ softmax(logits); loss = mean cross-entropy(logits, ŷ) (the batch size is ``bs``, not a
    factor of the loss); backward; optionally clip the sampled gradients to ``max_grad_norm``
    (their GPT-2 loop clips at 1.0); ``update_hessian()``. The gradients this creates are dropped
    and every ``p.grad`` is restored to what it was (a tensor, untouched, or None).

    Args:
        model: maps ``inputs`` to logits of shape (..., classes).
        inputs: one batch.
        optimizer: the SophiaG whose h to update.
        max_grad_norm: clip the sampled gradients' global norm as ``clip_grad_norm_`` (default None).
        generator: for the label sampling (default None: torch's global generator, with which the
            samples equal the authors' ``torch.distributions.Categorical(logits=...).sample()``).

    Returns:
        The sampled-label loss (detached).
    """
    # Every parameter the backward can reach: the optimizer's and the model's.
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if isinstance(model, nn.Module):
        known = {id(p) for p in params}
        params += [p for p in model.parameters() if id(p) not in known]
    saved = [p.grad for p in params]
    try:
        for p in params:
            p.grad = None
        with torch.enable_grad():
            logits = model(inputs)
            flat = logits.reshape(-1, logits.shape[-1])
            with torch.no_grad():  # Categorical(logits).sample() draws multinomial(softmax(logits), 1)
                probs = torch.softmax(flat.detach(), dim=-1)
                labels = torch.multinomial(probs, 1, True, generator=generator).squeeze(-1)
            loss = F.cross_entropy(flat, labels)
            loss.backward()
        if max_grad_norm is not None:
            grads = [p.grad for p in params if p.grad is not None]
            with torch.no_grad():  # clip_grad_norm_: scale by min(1, max_norm / (‖g‖ + 1e-6))
                coef = (max_grad_norm / (global_l2_norm(grads) + 1e-6)).clamp(max=1.0)
                for g in grads:
                    g.mul_(coef.to(g.device, g.dtype))
        optimizer.update_hessian()
    finally:
        for p, g in zip(params, saved):
            p.grad = g
    return loss.detach()


class SophiaGHooks(LoopHooks):
    """The authors' training loop: ``bs`` is the loss's batch size, and every ``interval`` steps, on a
    classifier, the Gauss-Newton-Bartlett estimate is taken from the step's batch (:func:`sophiag_gnb_update`;
    the authors' k = 10). Without sampled labels (a regression task) h stays 0: clipped sign momentum."""

    interval = 10

    def options(self, context: LoopContext) -> dict[str, Any]:
        return {"bs": context.batch_size} if context.batch_size else {}

    def after_step(
        self,
        optimizer: Optimizer,
        model: nn.Module,
        inputs: Tensor,
        step: int,
        context: LoopContext,
        loss: Tensor | None = None,
    ) -> list[str]:
        if context.classification and step % self.interval == 0:
            sophiag_gnb_update(model, inputs, optimizer)  # type: ignore[arg-type]
        return []


SophiaG.loop_hooks = SophiaGHooks()

REGISTRY_ENTRIES = [
    OptimizerInfo(
        "sophiag",
        SophiaG,
        "SophiaG: sign momentum clipped by a Gauss-Newton-Bartlett diagonal Hessian estimate",
        supports_agr=True,
        paper="Liu, Li, Hall, Liang, Ma, Sophia: A Scalable Stochastic Second-order Optimizer, arXiv:2305.14342",
        code="github.com/Liuhong99/Sophia (sophia.py)",
        notes="call update_hessian() every k steps after a sampled-label backward (sophiag_gnb_update); bs per group",
        search_space={"rho": ("log", 1e-2, 1e-1)},  # the authors' README: 0.01 to 0.08
        test_inputs=(
            OptimizerInput("agr_code", {"agr": "code"}),
            OptimizerInput("bs", {"bs": 1, "rho": 1.0, "weight_decay": 0.0}),
        ),
    )
]
