"""Shared tensor-list pieces used by every optimizer: grouping, reductions, weight decay.

Everything here is a pure function of its arguments. Scalars may be Python floats or 0-d
tensors. Per-tensor reductions go through :func:`per_tensor_l1` (and friends) only, so that
a sharded implementation (DTensor) can replace them in one place.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

Scalar = float | Tensor
WeightDecayMode = Literal["decoupled", "unscaled", "l2"]
WEIGHT_DECAY_MODES: tuple[str, ...] = ("decoupled", "unscaled", "l2")


def group_by_device_and_dtype(tensors: Sequence[Tensor]) -> list[list[int]]:
    """Indices of ``tensors`` grouped by (device, dtype), in first-seen order.

    foreach kernels need every list they touch to share a device and dtype.
    """
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
    for i, t in enumerate(tensors):
        groups[(t.device, t.dtype)].append(i)
    return list(groups.values())


def per_tensor_l1(tensors: Sequence[Tensor]) -> list[Tensor]:
    """``Σ|x|`` over all elements of each tensor (one 0-d tensor per input).

    The single reduction primitive of the library: a sharded version must return the
    global sum over all shards of each tensor.
    """
    if not tensors:
        return []
    return list(torch._foreach_norm(list(tensors), 1))


def scalar_value(x: Scalar) -> float:
    """A hyperparameter as a Python float (0-d or 1-element tensors are read once)."""
    if isinstance(x, Tensor):
        return x.item()
    return float(x)


def one_minus_pow(base: float, exponent: float) -> float:
    """``1 − base**exponent`` computed without cancellation for ``base`` close to 1.

    Uses ``−expm1(exponent · log(base))`` with ``log(base) = log1p(−(1 − base))``; ``1 − base``
    is exact in floating point for ``base ≥ 0.5``.
    """
    if exponent == 0:
        return 0.0
    if base == 0.0:
        return 1.0
    return -math.expm1(exponent * math.log1p(-(1.0 - base)))


# --- weight decay -------------------------------------------------------------------------


def decay_factor(*, lr: float, weight_decay: float, mode: WeightDecayMode) -> float | None:
    """The factor of a decoupled weight decay ``θ ← θ·factor``, or None when there is none.

    ``'decoupled'`` is AdamW's ``1 − lr·λ``; ``'unscaled'`` is ``1 − λ`` (the form written in
    the Adaburst paper and AdaXW's ancestors); ``'l2'`` decays through the gradient instead
    (see :func:`l2_gradients`), so it has no factor here.
    """
    if weight_decay == 0 or mode == "l2":
        return None
    return 1.0 - (lr * weight_decay if mode == "decoupled" else weight_decay)


def l2_gradients(
    grads: list[Tensor], params: list[Tensor], *, weight_decay: float, mode: WeightDecayMode
) -> list[Tensor]:
    """``g + λθ`` as new tensors when ``mode='l2'``; the gradients themselves otherwise."""
    if weight_decay == 0 or mode != "l2":
        return grads
    return list(torch._foreach_add(grads, params, alpha=weight_decay))
