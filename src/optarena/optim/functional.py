"""Shared tensor-list pieces used by every optimizer: grouping, reductions, foreach helpers.

Everything here is a pure function of its arguments. Scalars may be Python floats or 0-d
tensors. Per-tensor reductions go through :func:`per_tensor_l1` (and friends) only, so that
a sharded implementation (DTensor) can replace them in one place.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.distributed.tensor import DTensor
from torch.fx.experimental.symbolic_shapes import statically_known_true

Scalar = float | Tensor


def group_by_device_and_dtype(tensors: Sequence[Tensor]) -> list[list[int]]:
    """Indices of ``tensors`` grouped by (device, dtype), in first-seen order.

    foreach kernels need every list they touch to share a device and dtype.
    """
    keys = [(t.device, t.dtype) for t in tensors]
    if keys and keys.count(keys[0]) == len(keys):  # the usual case: one group
        return [list(range(len(keys)))]
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        groups[key].append(i)
    return list(groups.values())


def is_sharded(t: Tensor) -> bool:
    """True for a DTensor (FSDP2 parameters, gradients and the optimizer state made from them)."""
    return isinstance(t, DTensor)


def full_tensor(t: Tensor) -> Tensor:
    """The whole value of ``t``: gathered (or reduced, for a partial sum) across ranks if it is a DTensor."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def foreach_copy_(targets: list[Tensor], sources: list[Tensor]) -> None:
    """``targets[i].copy_(sources[i])``; DTensor has no sharding rule for ``_foreach_copy_`` (torch 2.13)."""
    if targets and is_sharded(targets[0]):
        for target, source in zip(targets, sources):
            target.copy_(source)
    else:
        torch._foreach_copy_(targets, sources)


def per_tensor_l1(tensors: Sequence[Tensor]) -> list[Tensor]:
    """``Σ|x|`` over all elements of each tensor (one 0-d tensor per input).

    The single reduction primitive of the library: a sharded version must return the
    global sum over all shards of each tensor.
    """
    if not tensors:
        return []
    if torch.compiler.is_compiling():  # inductor has no lowering for _foreach_norm; it fuses this one
        return [torch.linalg.vector_norm(t, 1) for t in tensors]
    return list(torch._foreach_norm(list(tensors), 1))


#: Inductor's CPU code sums more than this many float32 values through a cascade-summation helper whose one
#: accumulator goes through memory on every vector: about half of memory speed on one thread.
_CHUNK = 4096

#: A long tensor is summed as this many contiguous segments added elementwise first: one loop then reads that many
#: distant addresses at once, which a CPU core's prefetchers stream in parallel; a single read stream reaches only
#: part of one core's memory bandwidth.
_SEGMENTS = 4


def _sum_in_rows(flat: Tensor) -> Tensor:
    """Rows of ``_CHUNK`` values summed, then the row sums and the remainder (a 1-D tensor)."""
    n = flat.numel()
    whole = n // _CHUNK * _CHUNK
    if whole <= _CHUNK:
        return flat.sum()
    total = flat[:whole].view(-1, _CHUNK).sum(1).sum()
    return total + flat[whole:].sum() if whole < n else total


def _is_static(size: int) -> bool:
    """Whether a traced size is a number, not a symbol of a graph traced for every size; a test that adds no guard
    (``statically_known_true`` is False for what the trace cannot prove, where a comparison would specialize it)."""
    return statically_known_true(size % 2 == 0) or statically_known_true(size % 2 == 1)


def has_symbolic_size(x: Tensor) -> bool:
    """Whether ``x`` is being traced with a symbolic size: a graph shared by every size (``graphs='per_tensor'``),
    where a reduction must not branch on the size (the graph would be split into size ranges)."""
    return torch.compiler.is_compiling() and not _is_static(x.numel())


def sum_of_any_size(x: Tensor) -> Tensor:
    """``Σx`` as a float64 0-d tensor, for a graph with a symbolic size (:func:`has_symbolic_size`), at memory speed
    and with no branch that would split the graph into size ranges: ``_SEGMENTS`` equal contiguous parts added
    elementwise, then summed (one loop reading them all at once), plus the ``n mod _SEGMENTS`` values after them,
    read as the last ``_SEGMENTS`` values under a mask. Accumulated in float64: inductor sums a float32 reduction of
    more than ``_CHUNK`` values through its cascade helper (about half of memory speed), and for a symbolic size
    guards on which it is (a second graph); a float64 accumulator needs neither. Fewer than ``2 * _SEGMENTS``
    values: a plain sum (the comparison is a guard: such small tensors get a graph of their own)."""
    flat = x.reshape(-1)
    n = flat.numel()
    if n < 2 * _SEGMENTS:
        return flat.sum(dtype=torch.float64)
    length = n // _SEGMENTS
    added = flat[:length]
    for k in range(1, _SEGMENTS):
        added = added + flat[k * length : (k + 1) * length]
    last = flat[n - _SEGMENTS :]
    in_rest = torch.arange(_SEGMENTS, device=flat.device) >= _SEGMENTS - (n - _SEGMENTS * length)
    return added.sum(dtype=torch.float64) + torch.where(in_rest, last, 0).sum(dtype=torch.float64)


def sum_in_chunks(x: Tensor) -> Tensor:
    """``x.sum()`` for a compiled graph, in a summation order that runs at memory speed on a CPU core.

    ``_SEGMENTS`` contiguous segments are added elementwise (inductor fuses that into the next loop), their sum in
    rows of ``_CHUNK`` values, then the row sums and the remainder. Each reduction stays within inductor's plain
    vectorized loop (see ``_CHUNK``); the order is also a pairwise sum, as precise as the helper's. Eagerly,
    plain ``sum``.
    """
    if not torch.compiler.is_compiling():  # eagerly (and on a sharded DTensor, whose sum is a partial one): sum
        return x.sum()
    flat = x.reshape(-1)
    n = flat.numel()
    if not _is_static(n):  # a graph shared by every size (graphs='per_tensor'): branching would specialize it
        return sum_of_any_size(flat).to(flat.dtype)
    whole = n // (_SEGMENTS * _CHUNK) * (_SEGMENTS * _CHUNK)
    if whole == 0:
        return _sum_in_rows(flat)
    segments = flat[:whole].view(_SEGMENTS, -1).unbind(0)
    added = segments[0]
    for segment in segments[1:]:
        added = added + segment
    total = _sum_in_rows(added)
    return total + _sum_in_rows(flat[whole:]) if whole < n else total


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


# The op is defined with torch.library's low-level API rather than ``torch.library.custom_op``: the latter
# dispatches through an autograd wrapper in Python, ≈ 10× the cost of this one on every call of a compiled step.
_LIBRARY = torch.library.Library("optarena", "DEF")
_LIBRARY.define("realize(Tensor x) -> Tensor")
_LIBRARY.impl("realize", lambda x: x.clone(), "CompositeExplicitAutograd")


@torch.library.register_fake("optarena::realize")
def _(x: Tensor) -> Tensor:
    return torch.empty_like(x)


# Several one-value tensors as one buffer (codegen's _pack_realized_scalars puts the realized scalars of a compiled
# step there): what ``realize(torch.cat(...))`` would be, but lowered to one loop, as inductor does not on a CPU.
_LIBRARY.define("realize_scalars(Tensor[] values) -> Tensor")
_LIBRARY.impl("realize_scalars", lambda values: torch.cat([v.reshape(1) for v in values]), "CompositeExplicitAutograd")


@torch.library.register_fake("optarena::realize_scalars")
def _(values: list[Tensor]) -> Tensor:
    return values[0].new_empty(len(values))


def realize(x: Tensor) -> Tensor:
    """A copy of ``x`` that a compiled step computes once, as a buffer of its own.

    Inductor inlines scalar arithmetic into every loop that reads it; errno-preserving libm calls
    (``pow``, ``sqrt``, ``exp``) then run once per element, several times slower than the update
    on CPU. This op is a barrier to that inlining: opaque to dynamo and AOT autograd, and lowered by
    inductor to a buffer of its own (:func:`lower_realize_in_inductor`).
    """
    return torch.ops.optarena.realize(x)


_REALIZE_LOWERED = False


def lower_realize_in_inductor() -> None:
    """Teach inductor :func:`realize`: compute ``x`` into a buffer of its own and let the loops read that buffer.

    The buffer is then computed by the same C++ kernel as the loop that reads it, once, before the loop. Without
    this lowering inductor calls the op's Python implementation from the compiled module (≈ 4 µs a call, two to
    four calls a step: most of a small model's compiled step). Done once, by the compiled step's backend before
    its first compilation (importing inductor's lowerings takes a second, which an eager user need not pay).
    """
    global _REALIZE_LOWERED
    if _REALIZE_LOWERED:
        return
    from torch._inductor.lowering import clone, pointwise_cat, register_lowering, view

    @register_lowering(torch.ops.optarena.realize.default)
    def _lowering(x: Any) -> Any:
        # A buffer of its own (inductor's realize: computed, never inlined into its readers), and one that owns its
        # memory: a stack realized alone is written through its slices, which alias it, so the loops' pointer to it
        # could not be declared unaliased (``codegen.restrict_unaliased_pointers``) and would be reloaded per vector.
        copy = clone(x)
        copy.realize()
        return copy

    @register_lowering(torch.ops.optarena.realize_scalars.default)
    def _lowering_scalars(values: list[Any]) -> Any:
        # One loop over the values, each computed where its index is (inductor's concatenation by masked loads,
        # which it keeps for GPUs: on a CPU its cat is a buffer per input, written through views of the result).
        packed = pointwise_cat([view(v, [1]) for v in values], 0)
        packed.realize()
        return packed

    _REALIZE_LOWERED = True


def _holds_tensor(values: Sequence[Scalar]) -> bool:
    return any(isinstance(v, Tensor) for v in values)


def per_tensor(values: Sequence[Scalar]) -> list[float] | list[Tensor]:
    """Per-tensor coefficients for a foreach op (``_foreach_mul_``, ``_div_``, ``lerp_``, clamps).

    Python numbers stay a list of floats. If any is a tensor (a compiled step passes 0-d tensor
    hyperparameters and steps), all become 0-d float64 tensors on that tensor's device; under
    ``torch.compile`` they are computed once, in one buffer (:func:`realize`).
    """
    if not _holds_tensor(values):
        return list(values)  # type: ignore[arg-type]
    device = next(v.device for v in values if isinstance(v, Tensor))
    tensors = [torch.as_tensor(v, dtype=torch.float64, device=device).reshape(()) for v in values]
    if torch.compiler.is_compiling():
        return list(realize(torch.stack(tensors)).unbind(0))
    return tensors


def foreach_addcdiv_(
    targets: list[Tensor], numerators: list[Tensor], denominators: list[Tensor], values: Sequence[Scalar]
) -> None:
    """``targets[i] += values[i] · numerators[i] / denominators[i]`` with per-tensor ``values``."""
    _foreach_addc(torch._foreach_addcdiv_, torch._foreach_div, targets, numerators, denominators, values)


def foreach_addcmul_(
    targets: list[Tensor], factors1: list[Tensor], factors2: list[Tensor], values: Sequence[Scalar]
) -> None:
    """``targets[i] += values[i] · factors1[i] · factors2[i]`` with per-tensor ``values``."""
    _foreach_addc(torch._foreach_addcmul_, torch._foreach_mul, targets, factors1, factors2, values)


def _foreach_addc(
    fused: Any, combine: Any, targets: list[Tensor], a: list[Tensor], b: list[Tensor], values: Sequence[Scalar]
) -> None:
    coefficients = per_tensor(values)
    if not _holds_tensor(coefficients):
        fused(targets, a, b, coefficients)
    elif torch.compiler.is_compiling():
        # The packed-tensor overload has no compiled form; inductor fuses these three ops into one loop.
        torch._foreach_add_(targets, combine(torch._foreach_mul(a, coefficients), b))
    else:
        fused(targets, a, b, torch.stack(coefficients))  # eager: one packed float64 tensor of coefficients


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


def foreach_lerp_(starts: list[Tensor], ends: list[Tensor], weights: Scalar | Sequence[Scalar]) -> None:
    """``starts[i] += w_i · (ends[i] − starts[i])``, with one weight or one per tensor.

    Compiled, a tensor weight is written out as that sum: ``_foreach_lerp_`` with a list of tensor weights has no
    inductor lowering (it runs as a separate, materializing op), and with one tensor weight inductor lowers ATen's
    decomposition, which picks between two formulas per vector (a blend, two more multiplications) where the sum
    needs a subtraction, a multiplication and an addition. Eagerly it is torch's lerp.
    """
    single = not isinstance(weights, (list, tuple))
    if torch.compiler.is_compiling() and (isinstance(weights, Tensor) if single else _holds_tensor(weights)):
        factors = [weights] * len(starts) if single else per_tensor(weights)  # type: ignore[list-item]
        torch._foreach_add_(starts, torch._foreach_mul(torch._foreach_sub(ends, starts), factors))
    else:
        torch._foreach_lerp_(starts, ends, weights if single else per_tensor(weights))  # type: ignore[arg-type]


def foreach_div_scalars_(tensors: list[Tensor], divisors: Scalar | Sequence[Scalar]) -> None:
    """``tensors[i] /= d_i``, with one divisor or one per tensor. Compiled, a multiplication by the reciprocal,
    computed once (per tensor) in float64 (a vector division costs several multiplications, and this one would run for
    every element); the results differ from the eager division by at most a rounding of the reciprocal."""
    if not isinstance(divisors, (list, tuple)):
        if torch.compiler.is_compiling() and isinstance(divisors, Tensor):
            torch._foreach_mul_(tensors, per_tensor([1 / divisors]) * len(tensors))  # once, before the loops
        else:
            torch._foreach_div_(tensors, divisors)
    elif torch.compiler.is_compiling() and _holds_tensor(divisors):
        torch._foreach_mul_(tensors, per_tensor([1 / d for d in divisors]))
    else:
        torch._foreach_div_(tensors, per_tensor(divisors))


def foreach_add_scalar_(tensors: list[Tensor], value: Scalar) -> None:
    """``tensors[i] += value``. A tensor ``value`` goes in as a per-tensor list: compiled, torch 2.13
    lowers the single-tensor overload with a host read (``.item()``), which would sync a GPU every step."""
    if isinstance(value, Tensor):
        torch._foreach_add_(tensors, [value] * len(tensors))
    else:
        torch._foreach_add_(tensors, value)


def foreach_add_scalar(tensors: list[Tensor], value: Scalar) -> list[Tensor]:
    """New tensors ``tensors[i] + value`` (see :func:`foreach_add_scalar_`)."""
    if isinstance(value, Tensor):
        return list(torch._foreach_add(tensors, [value] * len(tensors)))
    return list(torch._foreach_add(tensors, value))


def foreach_add_scaled_(targets: list[Tensor], tensors: list[Tensor], alpha: Scalar) -> None:
    """``targets[i] += alpha · tensors[i]``.

    A tensor ``alpha`` is multiplied in explicitly: compiled, ``_foreach_add_(..., alpha=<tensor>)``
    rounds the tensor to float32 (torch 2.13), which costs float64 its precision.
    """
    if isinstance(alpha, Tensor):
        torch._foreach_add_(targets, torch._foreach_mul(tensors, alpha))
    else:
        torch._foreach_add_(targets, tensors, alpha=alpha)


def foreach_add_scaled(xs: list[Tensor], ys: list[Tensor], alpha: Scalar) -> list[Tensor]:
    """New tensors ``xs[i] + alpha · ys[i]`` (see :func:`foreach_add_scaled_`)."""
    if isinstance(alpha, Tensor):
        return list(torch._foreach_add(xs, torch._foreach_mul(ys, alpha)))
    return list(torch._foreach_add(xs, ys, alpha=alpha))


def sqrt(x: Scalar) -> Scalar:
    """``√x`` of a Python float (``math.sqrt``, correctly rounded) or of a tensor."""
    return x.sqrt() if isinstance(x, Tensor) else math.sqrt(x)


def is_zero(x: Scalar) -> bool:
    """True only for a Python number equal to 0: a tensor is never skipped (no data-dependent branch)."""
    return not isinstance(x, Tensor) and x == 0
