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


def per_tensor_dot(xs: Sequence[Tensor], ys: Sequence[Tensor]) -> list[Tensor]:
    """``Σ x·y`` over all elements of each pair of tensors (one 0-d tensor per pair)."""
    if not xs:
        return []
    return [(x * y).sum() for x, y in zip(xs, ys, strict=True)]


def per_tensor_sum_of_squares(tensors: Sequence[Tensor]) -> list[Tensor]:
    """``Σ x²`` over all elements of each tensor (one 0-d tensor per input)."""
    return per_tensor_dot(tensors, tensors)


def global_l2_norm(tensors: Sequence[Tensor]) -> Tensor:
    """``√(Σ over every tensor of Σ x²)``: the global gradient norm used by clipping."""
    squares = per_tensor_sum_of_squares(tensors)
    if not squares:
        return torch.zeros(())
    device = squares[0].device  # gradients may sit on several devices: sum on the first one's
    return torch.stack([s.to(device=device, dtype=torch.float64) for s in squares]).sum().sqrt()


def scalar_value(x: Scalar) -> float:
    """A hyperparameter as a Python float (0-d or 1-element tensors are read once)."""
    if isinstance(x, Tensor):
        return x.item()
    return float(x)


def per_tensor_scalars(values: Sequence[Scalar]) -> list[float] | Tensor:
    """Per-tensor coefficients in the form foreach ops take them.

    Python numbers stay a list; if any is a tensor (a 0-d hyperparameter or step, as in a
    compiled step), they are packed into one 1-D float64 tensor, which ``_foreach_addcdiv_``
    and ``_foreach_addcmul_`` accept in place of a list.
    """
    if any(isinstance(v, Tensor) for v in values):
        return torch.stack([torch.as_tensor(v, dtype=torch.float64).reshape(()) for v in values])
    return list(values)  # type: ignore[arg-type]


def one_minus_pow(base: Scalar, exponent: Scalar) -> Scalar:
    """``1 − base**exponent`` computed without cancellation for ``base`` close to 1.

    Uses ``−expm1(exponent · log(base))`` with ``log(base) = log1p(−(1 − base))``; ``1 − base``
    is exact in floating point for ``base ≥ 0.5``. Takes Python floats or tensors.
    """
    if isinstance(base, Tensor) or isinstance(exponent, Tensor):
        base, exponent = torch.as_tensor(base, dtype=torch.float64), torch.as_tensor(exponent, dtype=torch.float64)
        value = -torch.expm1(exponent * torch.log1p(-(1.0 - base)))
        return torch.where(exponent == 0, 0.0, torch.where(base == 0, 1.0, value))
    if exponent == 0:
        return 0.0
    if base == 0.0:
        return 1.0
    return -math.expm1(exponent * math.log1p(-(1.0 - base)))


def expm1_log1p(x: Scalar, t: Scalar) -> Scalar:
    """``(1 + x)^t − 1`` without cancellation for small ``x``; floats or tensors."""
    if isinstance(x, Tensor) or isinstance(t, Tensor):
        return torch.expm1(
            torch.as_tensor(t, dtype=torch.float64) * torch.log1p(torch.as_tensor(x, dtype=torch.float64))
        )
    return math.expm1(t * math.log1p(x))


def is_zero(x: Scalar) -> bool:
    """True only for a Python number equal to 0: a tensor is never skipped (no data-dependent branch)."""
    return not isinstance(x, Tensor) and x == 0


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
