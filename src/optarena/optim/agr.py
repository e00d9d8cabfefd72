"""AGR — adaptive gradient regularization (Jiang et al., arXiv:2407.16944; seed 003).

For each tensor's gradient ``g``::

    α  = |g| / Σ|g|          (the sum runs over every element of that one tensor)
    g' = g − α ⊙ g

The transform is written once here, run by the gradient-transform pipeline
(:func:`optarena.optim.transforms.agr`) for every optimizer built on
:class:`~optarena.optim.base.OptarenaOptimizer` (``agr='code'`` or ``agr='paper'``) and by the
:class:`~optarena.optim.transform_wrapper.AGR` wrapper around any other ``torch.optim.Optimizer``
(``'code'`` mode only). It never writes into ``p.grad``: it returns new tensors.

Edge cases. The authors' code divides by ``Σ|g|`` with no guard, so an all-zero gradient gives
NaN everywhere, and a 1-element tensor gets ``α = 1`` and is frozen (``g' = 0``). The default
here (``official_edge_cases=False``) leaves those gradients unchanged instead: a zero gradient
stays zero and a 1-element tensor is not regularized. ``official_edge_cases=True`` reproduces
the authors' behaviour exactly, for parity runs.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from optarena.optim.functional import per_tensor_l1, realize, sum_in_chunks
from optarena.validation import Constraint, Flag, Integer, OneOf

AGRMode = Literal["code", "paper"]
AGR_MODES: tuple[str, ...] = ("code", "paper")


def agr_single_tensor(grad: Tensor, *, official_edge_cases: bool = False) -> Tensor:
    """Reference AGR on one gradient, as the paper writes it. Returns a new tensor."""
    if not official_edge_cases and grad.numel() < 2:
        return grad.clone()
    (total,) = per_tensor_l1([grad])  # Σ|g| over the whole tensor
    if not official_edge_cases:
        # Floored at the smallest normal number: an all-zero gradient gets α = 0 and stays zero, and any other
        # sum (≥ one normal |g_i|) is unchanged.
        total = total.clamp_min(torch.finfo(grad.dtype).tiny)
    alpha = grad.abs() / total
    return grad - alpha * grad


def agr_multi_tensor(grads: list[Tensor], *, official_edge_cases: bool = False) -> list[Tensor]:
    """AGR on a list of gradients with foreach ops; equal to the reference tensor by tensor."""
    if not grads:
        return []
    # 1-element tensors are left alone unless asked (a static shape test, so it compiles).
    keep = [i for i, g in enumerate(grads) if official_edge_cases or g.numel() >= 2]
    kept = set(keep)
    out = [g if i in kept else g.clone() for i, g in enumerate(grads)]  # the kept ones are replaced below
    if keep:
        sel = [grads[i] for i in keep]
        alphas = torch._foreach_abs(sel)
        totals = [sum_in_chunks(a) for a in alphas]  # Σ|g| per tensor, from the |g| already at hand
        if not official_edge_cases:  # the reference's floor, with no data-dependent branch
            floors = [torch.finfo(t.dtype).tiny for t in totals]
            if torch.compiler.is_compiling():  # inductor has no lowering for the foreach clamp; it fuses these
                totals = [t.clamp_min(f) for t, f in zip(totals, floors)]
            else:  # out of place: a sharded (DTensor) sum is a partial one, which cannot be clamped in place
                totals = list(torch._foreach_clamp_min(totals, floors))
        if torch.compiler.is_compiling():
            # 1/Σ|g| once per tensor, in a buffer of its own: inlined into the update loop, the floor and the
            # division would run once per vector there, and that loop is compute-bound on a CPU core. Within one
            # rounding of the eager division (float64 tests: 1e-12).
            inverses = realize(torch.stack(totals).to(torch.float64).reciprocal()).unbind(0)
            torch._foreach_mul_(alphas, list(inverses))
        else:
            torch._foreach_div_(alphas, totals)
        regularized = torch._foreach_addcmul(sel, alphas, sel, value=-1.0)  # g − α⊙g, bit for bit
        for i, r in zip(keep, regularized):
            out[i] = r
    return out


def relative_change(grad: Tensor) -> float:
    """``‖AGR(g) − g‖/‖g‖`` for one gradient tensor, in float64 (0 for a zero gradient): how much AGR changes it.

    The coefficients ``|g_i|/Σ|g|`` sum to 1 over a tensor, so the change shrinks as the tensor grows; the arena
    records it per layer type over training (``RunResult.agr_change``) and the evidence page reports it.
    """
    g = grad.detach().to(torch.float64)
    norm = float(g.norm())
    return 0.0 if norm == 0.0 else float((agr_single_tensor(g) - g).norm()) / norm


AGR_SCOPES: tuple[str, ...] = ("weights", "all")
"""``'weights'``: tensors of two or more dimensions — the weights of linear and convolutional layers, where the
paper applies AGR (§5.1) — while biases and normalization weights keep their gradients; ``'all'``: every tensor,
as the authors' optimizers do."""

AGR_OPTIONS: dict[str, Constraint] = {
    "agr": OneOf(AGR_MODES, optional=True),
    "agr_stop_step": Integer(0, optional=True),
    "agr_official_edge_cases": Flag(),
    "agr_scope": OneOf(AGR_SCOPES),
}


def in_scope(grad: Tensor, scope: str) -> bool:
    """Whether AGR regularizes this gradient under ``scope`` (a shape test: static under ``torch.compile``)."""
    return scope == "all" or grad.dim() >= 2


"""The AGR keywords every optimizer on the engine takes, and the AGR wrapper's."""
