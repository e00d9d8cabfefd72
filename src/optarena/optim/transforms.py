"""Gradient transforms: what happens to the gradients between ``backward()`` and the update, written once.

A transform is one function ``transform(grads, m_grads, steps, foreach, *options) -> (grads, m_grads)``.
``grads`` is the gradient every moment sees and ``m_grads`` the one the first moment sees: the same list
object unless a transform (AGR in the paper's mode) gives the first moment its own, so that kernels can
skip work when they are one. A transform returns new tensors and never writes into ``p.grad``.

A param group's *pipeline* is a tuple of ``(name, *options)`` entries in a fixed order —
``maximize``, then ``agr`` — built by :func:`pipeline`; :func:`apply_pipeline` runs it. The eager step
and the compiled step both call :func:`apply_pipeline` (the compiled one with the pipeline as a static
input of the graph), so the two cannot drift. ``steps`` are Python floats in the eager step and 0-d
tensors in the compiled one; a transform that depends on the step chooses per tensor without a
data-dependent branch when they are tensors.

Adding a transform: write its function here, register it in :data:`TRANSFORMS`, and say in
:func:`pipeline` which group keys turn it on and where it goes in the order.

Weight decay is not a transform here: the papers put it at different points of the update (L2 into the
gradient the moments see, decoupled decay before the update, Adan's proximal decay after it), so each kernel
calls its form where its paper does — each form written once, in :mod:`optarena.optim.weight_decay`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from optarena.optim.agr import agr_multi_tensor, agr_single_tensor, in_scope
from optarena.optim.functional import Scalar

Pipeline = tuple[tuple[Any, ...], ...]
Gradients = tuple[list[Tensor], list[Tensor]]


def maximize(grads: list[Tensor], m_grads: list[Tensor], steps: Sequence[Scalar], foreach: bool) -> Gradients:
    """Ascend: every moment sees −g."""
    negated = list(torch._foreach_neg(grads))
    return negated, negated if m_grads is grads else list(torch._foreach_neg(m_grads))


def agr(
    grads: list[Tensor],
    m_grads: list[Tensor],
    steps: Sequence[Scalar],
    foreach: bool,
    mode: str,
    stop_step: int | None,
    official_edge_cases: bool,
    scope: str = "weights",
) -> Gradients:
    """Adaptive gradient regularization (:mod:`optarena.optim.agr`) of ``m_grads``, for steps ``t ≤ stop_step``,
    on the tensors of ``scope`` (``'weights'``: two or more dimensions; ``'all'``).

    ``mode='code'``: every moment sees the regularized gradient; ``'paper'``: the first moment only.
    """
    scoped = [i for i, g in enumerate(m_grads) if in_scope(g, scope)]
    compiled = bool(steps) and isinstance(steps[0], Tensor)
    # Eagerly, only the tensors still within stop_step; compiled, all of them, the step picking which to keep.
    active = scoped if compiled else [i for i in scoped if stop_step is None or steps[i] <= stop_step]
    if not active:
        return grads, m_grads
    chosen = [m_grads[i] for i in active]
    if foreach or compiled:
        done = agr_multi_tensor(chosen, official_edge_cases=official_edge_cases)
    else:
        done = [agr_single_tensor(g, official_edge_cases=official_edge_cases) for g in chosen]
    if compiled and stop_step is not None:
        done = [torch.where(steps[i] <= stop_step, r, m_grads[i]) for i, r in zip(active, done)]
    regularized = list(m_grads)
    for i, r in zip(active, done):
        regularized[i] = r
    if mode == "paper":
        return grads, regularized
    return regularized, regularized


#: Every transform by name: a pipeline entry ``(name, *options)`` calls ``TRANSFORMS[name](..., *options)``.
TRANSFORMS: dict[str, Callable[..., Gradients]] = {"maximize": maximize, "agr": agr}


def pipeline(group: dict[str, Any]) -> Pipeline:
    """The transforms a param group asks for, in their fixed order, as hashable ``(name, *options)`` tuples."""
    entries: list[tuple[Any, ...]] = []
    if group["maximize"]:
        entries.append(("maximize",))
    if group["agr"] is not None:
        agr_options = (group["agr_stop_step"], bool(group["agr_official_edge_cases"]), group["agr_scope"])
        entries.append(("agr", group["agr"], *agr_options))
    return tuple(entries)


def apply_pipeline(transforms: Pipeline, grads: list[Tensor], steps: Sequence[Scalar], *, foreach: bool) -> Gradients:
    """Run ``transforms`` on ``grads``; returns (gradient for every moment, gradient for the first moment)."""
    m_grads = grads
    for name, *options in transforms:
        grads, m_grads = TRANSFORMS[name](grads, m_grads, steps, foreach, *options)
    return grads, m_grads
