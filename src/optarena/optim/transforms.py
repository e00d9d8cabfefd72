"""Gradient transforms: what happens to the gradients between ``backward()`` and the update, written once.

A transform is one function ``transform(grads, m_grads, steps, foreach, *options) -> (grads, m_grads)``.
``grads`` is the gradient every moment sees and ``m_grads`` the one the first moment sees: the same list
object unless a transform (AGR in the paper's mode) gives the first moment its own, so that kernels can
skip work when they are one. A transform returns new tensors and never writes into ``p.grad``.

A param group's *pipeline* is a tuple of ``(name, *options)`` entries in a fixed order, built by
:func:`pipeline` from the group's keys (:data:`TRANSFORM_OPTIONS`); :func:`apply_pipeline` runs it::

    maximize → clip_norm → clip_value → centralize → normalize → agr

Why this order: ``maximize`` only flips the sign, which every later transform commutes with. Clipping guards
the raw gradient against spikes, as ``torch.nn.utils.clip_grad_norm_`` / ``clip_grad_value_`` do between
``backward()`` and ``step()``; ``clip_norm``'s factor is optimizer-wide, from the raw gradients of every group
(:func:`global_clip_factor`). Centralization then normalization: normalizing first and centralizing after would
undo the unit norm. AGR, the method the others are compared with, comes last, so ``agr='paper'`` still gives
only the first moment the regularized gradient.

The eager step and the compiled step both call :func:`apply_pipeline` (the compiled one with the pipeline as a
static input of the graph and the clip factor as a tensor input), so the two cannot drift. ``steps`` are Python
floats in the eager step and 0-d tensors in the compiled one; a transform that depends on the step chooses per
tensor without a data-dependent branch when they are tensors. Torch's own optimizers get the same functions
through the :class:`~optarena.optim.transform_wrapper.GradientTransforms` wrapper.

Adding a transform: write its function here, register it in :data:`TRANSFORMS`, declare its keys in
:data:`TRANSFORM_OPTIONS`, and say in :func:`pipeline` where it goes in the order.

Weight decay is not a transform here: the papers put it at different points of the update (L2 into the
gradient the moments see, decoupled decay before the update, Adan's proximal decay after it), so each kernel
calls its form where its paper does — each form written once, in :mod:`optarena.optim.weight_decay`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from optarena.optim.agr import AGR_OPTIONS, agr_multi_tensor, agr_single_tensor, in_scope
from optarena.optim.functional import Scalar, global_l2_norm, has_symbolic_size, realize, sum_of_any_size
from optarena.validation import Constraint, OneOf, Real

Pipeline = tuple[tuple[Any, ...], ...]
Gradients = tuple[list[Tensor], list[Tensor]]

#: ``centralize=``: which tensors gradient centralization (Yong et al., ECCV 2020) re-centres. ``'weights'``:
#: every tensor of two or more dimensions (convolutional and fully connected weights: the paper's GC);
#: ``'conv'``: four or more (convolution kernels only: the paper's GCC).
CENTRALIZE_SCOPES: tuple[str, ...] = ("weights", "conv")
#: ``normalize=``: ``'norm'`` divides each tensor's gradient by its L2 norm (a unit-length direction per tensor,
#: "decoupling the length of gradients from their direction", as the AGR paper describes gradient
#: normalization); ``'std'`` divides it by its standard deviation + 1e-8 (pytorch-optimizer's
#: ``normalize_gradient``, Ranger21's).
NORMALIZE_KINDS: tuple[str, ...] = ("norm", "std")
CLIP_NORM_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s
NORMALIZE_STD_EPS = 1e-8  # pytorch-optimizer's normalize_gradient's

#: The keys of a param group (and of the wrapper) that turn the transforms on, with their allowed values.
TRANSFORM_OPTIONS: dict[str, Constraint] = {
    "clip_norm": Real(0.0, low_open=True, optional=True),
    "clip_value": Real(0.0, low_open=True, optional=True),
    "centralize": OneOf(CENTRALIZE_SCOPES, optional=True),
    "normalize": OneOf(NORMALIZE_KINDS, optional=True),
    **AGR_OPTIONS,
}
#: Every transform off (AGR's options at their defaults).
NO_TRANSFORMS: dict[str, Any] = {
    "maximize": False,
    "clip_norm": None,
    "clip_value": None,
    "centralize": None,
    "normalize": None,
    "agr": None,
    "agr_stop_step": None,
    "agr_official_edge_cases": False,
    "agr_scope": "weights",
}


def _on_both(fn: Callable[[list[Tensor]], list[Tensor]], grads: list[Tensor], m_grads: list[Tensor]) -> Gradients:
    """Apply an elementwise-in-spirit transform to the gradient of every moment (once when they are one list)."""
    done = fn(grads)
    return done, done if m_grads is grads else fn(m_grads)


def maximize(grads: list[Tensor], m_grads: list[Tensor], steps: Sequence[Scalar], foreach: bool) -> Gradients:
    """Ascend: every moment sees −g."""
    return _on_both(lambda gs: list(torch._foreach_neg(gs)), grads, m_grads)


def global_clip_factor(grads: Sequence[Tensor], max_norm: float) -> Tensor:
    """``min(1, max_norm / (‖g‖₂ + 1e-6))``, ‖g‖₂ over every tensor of ``grads``: ``clip_grad_norm_``'s coefficient.

    A 0-d float64 tensor (the sum of squares is accumulated in float64), computed without a host read.
    """
    return torch.clamp(max_norm / (global_l2_norm(grads) + CLIP_NORM_EPS), max=1.0)


def clip_norm(
    grads: list[Tensor], m_grads: list[Tensor], steps: Sequence[Scalar], foreach: bool, factor: Tensor
) -> Gradients:
    """Scale every gradient by the optimizer-wide ``factor`` of :func:`global_clip_factor` (as ``clip_grad_norm_``)."""
    return _on_both(lambda gs: [g * factor.to(device=g.device, dtype=g.dtype) for g in gs], grads, m_grads)


def clip_value(
    grads: list[Tensor], m_grads: list[Tensor], steps: Sequence[Scalar], foreach: bool, limit: float
) -> Gradients:
    """Clamp every element into ``[−limit, limit]`` (``torch.nn.utils.clip_grad_value_``)."""

    def clamp(gs: list[Tensor]) -> list[Tensor]:
        if foreach:
            return list(torch._foreach_clamp_min(torch._foreach_clamp_max(gs, limit), -limit))
        return [g.clamp(-limit, limit) for g in gs]

    return _on_both(clamp, grads, m_grads)


def centralize_single_tensor(grad: Tensor, scope: str = "weights") -> Tensor:
    """Gradient centralization of one tensor, as Yong et al. (2020) write it: ``g − mean(g)``, the mean over
    every dimension but the first (each output channel's or row's gradient is re-centred to zero mean).
    Tensors outside ``scope`` are returned as they are."""
    if grad.dim() < (4 if scope == "conv" else 2):
        return grad
    mean = grad.mean(dim=tuple(range(1, grad.dim())), keepdim=True)
    if torch.compiler.is_compiling():
        # A buffer of its own: inductor's CPU outer-loop fusion of this reduction with the optimizer's
        # elementwise kernel fails to compile in torch 2.13 (KeyError in try_outer_loop_fusion_with_local_buf).
        mean = realize(mean)
    return grad - mean


def centralize(
    grads: list[Tensor], m_grads: list[Tensor], steps: Sequence[Scalar], foreach: bool, scope: str
) -> Gradients:
    """Gradient centralization (:func:`centralize_single_tensor`) of the tensors in ``scope``."""
    return _on_both(lambda gs: [centralize_single_tensor(g, scope) for g in gs], grads, m_grads)


def normalize_single_tensor(grad: Tensor, kind: str = "norm") -> Tensor:
    """One tensor's gradient divided by its L2 norm (``'norm'``) or by its standard deviation + 1e-8 (``'std'``).

    ``'norm'`` leaves an all-zero gradient at zero; ``'std'`` leaves tensors of at most 2 elements alone, as
    pytorch-optimizer's ``normalize_gradient`` does (the unbiased std of so few values means little).
    """
    if kind == "std":
        return grad if grad.numel() <= 2 else grad / (_std(grad) + NORMALIZE_STD_EPS)
    if has_symbolic_size(grad):  # a graph shared by every size: its reductions through sum_of_any_size
        norm = sum_of_any_size(grad * grad).sqrt().to(grad.dtype)
    else:
        norm = torch.linalg.vector_norm(grad)
    return grad / torch.where(norm == 0, torch.ones_like(norm), norm)


def _std(grad: Tensor) -> Tensor:
    """The unbiased standard deviation of every value of ``grad``; in a graph shared by every size, in two passes
    through :func:`~optarena.optim.functional.sum_of_any_size` (``std`` there is inductor's Welford loop, far below
    memory speed for a symbolic size: docs/performance.md)."""
    if not has_symbolic_size(grad):
        return grad.std()
    n = grad.numel()
    centred = grad.to(torch.float64) - sum_of_any_size(grad) / n
    return (sum_of_any_size(centred * centred) / (n - 1)).sqrt().to(grad.dtype)


def normalize(
    grads: list[Tensor], m_grads: list[Tensor], steps: Sequence[Scalar], foreach: bool, kind: str
) -> Gradients:
    """Gradient normalization (:func:`normalize_single_tensor`) of every tensor (a reduction per tensor: one
    path for the reference and the foreach step)."""
    return _on_both(lambda gs: [normalize_single_tensor(g, kind) for g in gs], grads, m_grads)


def agr(
    grads: list[Tensor],
    m_grads: list[Tensor],
    steps: Sequence[Scalar],
    foreach: bool,
    mode: str,
    stop_step: int | None,
    official_edge_cases: bool,
    scope: str = "weights",
    *,
    scope_flags: Sequence[Tensor] | None = None,
) -> Gradients:
    """Adaptive gradient regularization (:mod:`optarena.optim.agr`) of ``m_grads``, for steps ``t ≤ stop_step``,
    on the tensors of ``scope`` (``'weights'``: two or more dimensions; ``'all'``).

    ``mode='code'``: every moment sees the regularized gradient; ``'paper'``: the first moment only.
    ``scope_flags``: whether each tensor is in ``scope``, as 0-d tensors (positive: in), for a compiled graph shared
    by every shape (``graphs='per_tensor'``), which sees each tensor as a flat view whose shape cannot tell.
    """
    compiled = len(steps) > 0 and isinstance(steps[0], Tensor)  # not bool(steps): torch 2.11's dynamo refuses it
    if scope_flags is not None and not compiled:
        raise RuntimeError("agr: scope_flags are for a compiled step (0-d tensor steps)")
    if scope_flags is not None:  # every tensor, the flags choosing which to keep
        scoped = list(range(len(m_grads)))
    else:
        scoped = [i for i, g in enumerate(m_grads) if in_scope(g, scope)]
    # Eagerly, only the tensors still within stop_step; compiled, all of them, the step picking which to keep.
    active = scoped if compiled else [i for i in scoped if stop_step is None or steps[i] <= stop_step]
    if not active:
        return grads, m_grads
    chosen = [m_grads[i] for i in active]
    if foreach or compiled:
        done = agr_multi_tensor(chosen, official_edge_cases=official_edge_cases)
    else:
        done = [agr_single_tensor(g, official_edge_cases=official_edge_cases) for g in chosen]
    if compiled and (stop_step is not None or scope_flags is not None):
        done = [torch.where(_kept(steps[i], stop_step, scope_flags, i), r, m_grads[i]) for i, r in zip(active, done)]
    regularized = list(m_grads)
    for i, r in zip(active, done):
        regularized[i] = r
    if mode == "paper":
        return grads, regularized
    return regularized, regularized


def _kept(step: Tensor, stop_step: int | None, scope_flags: Sequence[Tensor] | None, i: int) -> Tensor:
    """Whether a compiled step keeps tensor ``i``'s regularized gradient: its step within ``stop_step``, in scope."""
    keep = None if stop_step is None else step <= stop_step
    if scope_flags is not None:
        keep = scope_flags[i] > 0 if keep is None else keep & (scope_flags[i] > 0)
    assert keep is not None
    return keep


#: Every transform by name: a pipeline entry ``(name, *options)`` calls ``TRANSFORMS[name](..., *options)``.
TRANSFORMS: dict[str, Callable[..., Gradients]] = {
    "maximize": maximize,
    "clip_norm": clip_norm,
    "clip_value": clip_value,
    "centralize": centralize,
    "normalize": normalize,
    "agr": agr,
}


def pipeline(group: dict[str, Any]) -> Pipeline:
    """The transforms a param group asks for, in their fixed order, as hashable ``(name, *options)`` tuples."""
    entries: list[tuple[Any, ...]] = []
    if group["maximize"]:
        entries.append(("maximize",))
    if group["clip_norm"] is not None:
        entries.append(("clip_norm",))  # its factor is the step's, from every group: apply_pipeline's clip_factor
    if group["clip_value"] is not None:
        entries.append(("clip_value", float(group["clip_value"])))
    if group["centralize"] is not None:
        entries.append(("centralize", group["centralize"]))
    if group["normalize"] is not None:
        entries.append(("normalize", group["normalize"]))
    if group["agr"] is not None:
        agr_options = (group["agr_stop_step"], bool(group["agr_official_edge_cases"]), group["agr_scope"])
        entries.append(("agr", group["agr"], *agr_options))
    return tuple(entries)


def reads_shape(transforms: Pipeline) -> bool:
    """Whether ``transforms`` read a tensor's shape beyond its values and AGR's scope (centralization's per-row means):
    a compiled step that gives each tensor to a graph shared by every size (``graphs='per_tensor'``) cannot take
    them, as a flat view of the values would not serve."""
    return any(name == "centralize" for name, *_ in transforms)


def reduces_whole_tensors(transforms: Pipeline) -> bool:
    """Whether ``transforms`` reduce over the whole of each tensor before its first value can be updated (AGR's Σ|g|,
    normalization's norm or standard deviation), so that the update reads the gradient a second time. Not
    centralization: its means are per row, which inductor fuses into the update's loop over rows."""
    return any(name in ("agr", "normalize") for name, *_ in transforms)


def agr_scope(transforms: Pipeline) -> str | None:
    """AGR's scope in ``transforms`` (None without AGR). Under ``'weights'`` a tensor's shape chooses whether AGR
    regularizes it: a graph shared by every shape gets that choice as data (``apply_pipeline``'s ``agr_in_scope``)."""
    return next((options[-1] for name, *options in transforms if name == "agr"), None)


def apply_pipeline(
    transforms: Pipeline,
    grads: list[Tensor],
    steps: Sequence[Scalar],
    *,
    foreach: bool,
    clip_factor: Tensor | None = None,
    agr_in_scope: Sequence[Tensor] | None = None,
) -> Gradients:
    """Run ``transforms`` on ``grads``; returns (gradient for every moment, gradient for the first moment).

    ``clip_factor`` is the step's :func:`global_clip_factor`, needed when the pipeline clips the norm;
    ``agr_in_scope``: AGR's scope as data, per tensor (see :func:`agr`'s ``scope_flags``).
    """
    m_grads = grads
    for name, *options in transforms:
        extra = {}
        if name == "clip_norm":
            if clip_factor is None:
                raise RuntimeError("apply_pipeline: the pipeline clips the global norm but got no clip_factor")
            options = [clip_factor]
        if name == "agr" and agr_in_scope is not None:
            extra = {"scope_flags": agr_in_scope}
        grads, m_grads = TRANSFORMS[name](grads, m_grads, steps, foreach, *options, **extra)
    return grads, m_grads
