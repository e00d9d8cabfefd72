"""Weight decay in each of its forms, written once; the kernels call these where their papers put it.

====================  ===========================  ================================================
mode                  update                       used by
====================  ===========================  ================================================
``'decoupled'``       θ ← θ(1 − lr·λ), first       AdamW, Lion, AdamNX, SophiaG, AdaXW, AdaBelief, ...
``'unscaled'``        θ ← θ(1 − λ), first          Adaburst's Algorithm 4 read literally, AdaBoundW,
                                                   AdaBelief's ``fixed_decay``
``'l2'``              g ← g + λθ, before moments   Adam-style L2: AdaX, AdaBound, SWATS, AdaBelief
``proximal``          θ ← θ / (1 + lr·λ), after    Adan's default (:func:`proximal_`)
====================  ===========================  ================================================

L2 never writes into ``p.grad``: it returns new tensors, one copy when the first moment's gradient is
the same tensor as every moment's (see :mod:`optarena.optim.transforms`). Scalars may be Python floats
or 0-d tensors (the compiled step); a zero ``weight_decay`` given as a float skips the work.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from optarena.optim.functional import Scalar, foreach_add_scaled, foreach_div_scalars_, is_zero, per_tensor

WEIGHT_DECAY_MODES: tuple[str, ...] = ("decoupled", "unscaled", "l2")


def decay_factor(*, lr: Scalar, weight_decay: Scalar, mode: str) -> Scalar | None:
    """The factor of a decoupled decay ``θ ← θ·factor`` (``'decoupled'``: 1 − lr·λ, ``'unscaled'``: 1 − λ),
    or None when there is none (``weight_decay`` 0, or ``'l2'``, which decays through the gradient)."""
    if is_zero(weight_decay) or mode == "l2":
        return None
    return 1 - (lr * weight_decay if mode == "decoupled" else weight_decay)


def decay_(param: Tensor, factor: Scalar | None) -> None:
    """``θ ← θ·factor`` (nothing for None)."""
    if factor is not None:
        param.mul_(factor)


def decay_multi_(params: list[Tensor], factor: Scalar | Sequence[Scalar] | None) -> None:
    """``θ ← θ·factor`` for every tensor; ``factor`` may be one per tensor."""
    if factor is None:
        return
    if isinstance(factor, Sequence):
        torch._foreach_mul_(params, per_tensor(factor))
    else:
        torch._foreach_mul_(params, factor)


def add_l2(grad: Tensor, m_grad: Tensor, param: Tensor, weight_decay: float) -> tuple[Tensor, Tensor]:
    """``g + λθ`` (new tensors) for every moment's gradient and the first moment's (reference loops: floats)."""
    if is_zero(weight_decay):
        return grad, m_grad
    decayed = grad.add(param, alpha=weight_decay)
    return decayed, decayed if m_grad is grad else m_grad.add(param, alpha=weight_decay)


def add_l2_multi(
    grads: list[Tensor], m_grads: list[Tensor], params: list[Tensor], weight_decay: Scalar
) -> tuple[list[Tensor], list[Tensor]]:
    """foreach :func:`add_l2`."""
    if is_zero(weight_decay):
        return grads, m_grads
    same = m_grads is grads
    grads = foreach_add_scaled(grads, params, weight_decay)
    return grads, grads if same else foreach_add_scaled(m_grads, params, weight_decay)


def weight_decay_(
    param: Tensor, grad: Tensor, m_grad: Tensor, *, lr: Scalar, weight_decay: Scalar, mode: str
) -> tuple[Tensor, Tensor]:
    """The decay of ``mode`` before the moments: ``param`` decayed in place, or the L2 gradients returned."""
    if mode == "l2":
        return add_l2(grad, m_grad, param, weight_decay)
    decay_(param, decay_factor(lr=lr, weight_decay=weight_decay, mode=mode))
    return grad, m_grad


def weight_decay_multi_(
    params: list[Tensor], grads: list[Tensor], m_grads: list[Tensor], *, lr: Scalar, weight_decay: Scalar, mode: str
) -> tuple[list[Tensor], list[Tensor]]:
    """foreach :func:`weight_decay_`."""
    if mode == "l2":
        return add_l2_multi(grads, m_grads, params, weight_decay)
    decay_multi_(params, decay_factor(lr=lr, weight_decay=weight_decay, mode=mode))
    return grads, m_grads


def proximal_(param: Tensor, *, lr: Scalar, weight_decay: Scalar) -> None:
    """Adan's proximal decay after the update: ``θ ← θ / (1 + lr·λ)``."""
    if not is_zero(weight_decay):
        param.div_(1 + lr * weight_decay)


def proximal_multi_(params: list[Tensor], *, lr: Scalar, weight_decay: Scalar) -> None:
    """foreach :func:`proximal_`."""
    if not is_zero(weight_decay):
        foreach_div_scalars_(params, 1 + lr * weight_decay)
