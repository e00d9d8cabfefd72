"""The base class of every optarena optimizer.

A subclass declares its per-parameter state tensors (``state_names``), validates its
hyperparameters (``_validate_group``), turns a param group into kernel keyword arguments
(``_kernel_hyperparameters``) and names two pure update kernels:

* ``single_tensor_kernel(param, grad, m_grad, *state, step=..., **hyper)`` — the reference,
  written to read like the paper's pseudocode, one tensor at a time;
* ``multi_tensor_kernel(params, grads, m_grads, *state_lists, steps=..., **hyper)`` — the fast
  path over lists with ``torch._foreach_*`` ops, which must equal the reference (float64,
  ≤1e-12; the invariant suite checks it for every registered optimizer).

``grad`` is the gradient every moment sees; ``m_grad`` is the one the *first* moment sees. They
are the same tensor unless AGR runs in the paper's mode. The base class does everything else
once: lazy state, the step counter, the gradient transforms (``maximize``, clipping, centralization,
normalization, AGR: see :mod:`optarena.optim.transforms`), complex parameters (as ``view_as_real``), sparse-gradient
refusal, the closure, and choosing the path (``foreach``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from optarena.optim.flat import FlatGroup, qualifies, state_keys
from optarena.optim.functional import group_by_device_and_dtype, scalar_value
from optarena.optim.guarded import GuardedOptimizer
from optarena.optim.step_counters import StepCounters
from optarena.optim.transforms import TRANSFORM_OPTIONS, apply_pipeline, global_clip_factor, pipeline
from optarena.validation import NON_NEGATIVE, Constraint, Flag, betas, check_range

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]]


# Keywords and ranges of the Adam family, declared once (see optarena.validation).
ADAM_HYPERPARAMETERS: dict[str, Constraint] = {
    "lr": NON_NEGATIVE,
    "betas": betas(2),
    "eps": NON_NEGATIVE,
    "weight_decay": NON_NEGATIVE,
}


def adam_kernel_hyperparameters(group: dict[str, Any]) -> dict[str, Any]:
    """lr, beta1, beta2, eps and weight_decay of a group as the kernels take them."""
    beta1, beta2 = group["betas"]
    return dict(
        lr=scalar_value(group["lr"]),
        beta1=scalar_value(beta1),
        beta2=scalar_value(beta2),
        eps=group["eps"],
        weight_decay=group["weight_decay"],
    )


#: A state tensor of this many bytes or more starts where its parameter starts within a page (:func:`zeros_state`);
#: glibc's default also maps blocks from this size on their own pages, where every tensor starts alike.
PLACED_STATE_MIN_BYTES = 128 * 1024
#: Bytes of a CPU page: where a tensor starts within one decides which of its loads can stall behind another
#: tensor's stores (4K aliasing: a CPU matches a load against the stores in flight by the low 12 address bits first).
PAGE = 4096


def empty_at_page_offset(
    shape: torch.Size | tuple[int, ...], dtype: torch.dtype, device: torch.device, offset: int
) -> Tensor:
    """An uninitialized contiguous tensor whose first element starts ``offset`` bytes past a page boundary: a view
    into a buffer of its own, less than a page longer (``offset`` a multiple of the element size)."""
    numel = torch.Size(shape).numel()
    size = dtype.itemsize
    buffer = torch.empty(numel + PAGE // size - 1, dtype=dtype, device=device)
    start = (offset - buffer.data_ptr()) % PAGE // size
    return buffer[start : start + numel].view(shape)


def zeros_state(p: Tensor) -> Tensor:
    """A zero state tensor for ``p``: its dtype, device, shape and strides.

    On a CPU, a large contiguous one starts where ``p`` starts within a 4 KiB page (at the cost of less than a page
    of memory). An elementwise step streams ``p`` and its states side by side, one vector of each at a time, and a
    CPU first matches a load against the stores in flight by the low 12 address bits: where a state starts 64 bytes
    after another, as a heap puts the states of a page-multiple size allocated one after the other at the first
    step, the loads of one keep waiting for the other's stores of the iteration before (4K aliasing): up to a tenth
    of a compiled ResNet-18 step against the states at their parameter's place, while torch's fused AdamW does not
    slow down (``benchmarks/layout.py``, ``docs/performance.md``)."""
    if not _placed(p):
        return torch.zeros_like(p, memory_format=torch.preserve_format)
    return empty_at_page_offset(p.shape, p.dtype, p.device, p.data_ptr() % PAGE).zero_()


def place_state(p: Tensor, state: Tensor) -> Tensor:
    """``state`` where :func:`zeros_state` would have made it: where ``p``'s states are placed and ``state`` (a loaded
    one, where the loader put it) is a contiguous plain tensor of ``p``'s shape, dtype and device that starts
    elsewhere within a page, a copy starting at ``p``'s place; else ``state`` itself."""
    if not (_placed(p) and type(state) is Tensor and state.shape == p.shape and state.dtype == p.dtype):
        return state
    if state.device != p.device or not state.is_contiguous() or state.data_ptr() % PAGE == p.data_ptr() % PAGE:
        return state
    return empty_at_page_offset(p.shape, p.dtype, p.device, p.data_ptr() % PAGE).copy_(state)


def _placed(p: Tensor) -> bool:
    """Whether ``p``'s states start at its place within a page: a large contiguous plain CPU tensor (a subclass, a
    DTensor or a quantized weight, allocates its own)."""
    large = p.numel() * p.element_size() >= PLACED_STATE_MIN_BYTES
    plain = type(p) in (Tensor, torch.nn.Parameter)
    return large and plain and p.device.type == "cpu" and p.layout == torch.strided and p.is_contiguous()


# --- the base class ---------------------------------------------------------------------------


class OptarenaOptimizer(GuardedOptimizer):
    """Shared machinery; see the module docstring for what a subclass provides.

    Keyword options every optimizer accepts (a subclass passes them on as ``**options``):
        foreach: ``True`` for the multi-tensor path, ``False`` for the reference loop, ``None``
            (default) for the fast path where it is supported.
        flat: on the multi-tensor path, step a small CPU group on one buffer per tensor role
            (:mod:`optarena.optim.flat`): ``None`` (default) where it pays (the size limits there), ``True`` whatever
            the size, ``False`` never (one kernel per tensor, as ``torch._foreach_*``).
        maximize: maximize the objective instead of minimizing it.
        agr: ``None``, ``'code'`` (AGR'd gradient feeds every moment, as the authors' code) or
            ``'paper'`` (it feeds the first moment only; the raw gradient feeds the rest).
        agr_stop_step: apply AGR only for steps ``t <= agr_stop_step`` (the paper's ablation).
        agr_official_edge_cases: reproduce the authors' NaN on all-zero gradients and freezing
            of 1-element tensors (default: leave those gradients unchanged).
        agr_scope: which tensors AGR regularizes: ``'weights'`` (two or more dimensions: the weights of
            linear and convolutional layers, as the paper; default) or ``'all'`` (the authors' optimizers).
        clip_norm: scale every gradient by ``min(1, clip_norm / (‖g‖₂ + 1e-6))``, the norm over every
            parameter of the optimizer (``torch.nn.utils.clip_grad_norm_``; optimizer-wide, so every group keeps
            the constructor's value). None (default): no clipping.
        clip_value: clamp every gradient element into ``[−clip_value, clip_value]`` (``clip_grad_value_``).
        centralize: gradient centralization (Yong et al. 2020): ``'weights'`` (tensors of two or more
            dimensions, GC), ``'conv'`` (four or more, GCC) or None (default).
        normalize: gradient normalization per tensor: ``'norm'`` (g/‖g‖₂), ``'std'`` (g/(std(g) + 1e-8)) or None.
            The transforms run in the order maximize → clip_norm → clip_value → centralize → normalize → agr
            (see :mod:`optarena.optim.transforms`).
        nonfinite: what a NaN or infinite gradient does — ``'propagate'`` (default), ``'skip'`` the
            step (counted in ``skipped_steps``) or ``'raise'``; see :mod:`optarena.optim.guarded`.
    """

    hyperparameters: ClassVar[dict[str, Constraint]] = {
        "foreach": Flag(optional=True),
        "flat": Flag(optional=True),
        "maximize": Flag(),
        **TRANSFORM_OPTIONS,
    }
    identity_keys: ClassVar[tuple[str, ...]] = ("agr",)
    state_names: ClassVar[tuple[str, ...]] = ()
    #: Whether ``multi_tensor_kernel`` is elementwise given one step count, so that a small CPU group can be stepped
    #: on one buffer per tensor role (:mod:`optarena.optim.flat`).
    elementwise_kernel: ClassVar[bool] = False
    #: Why :func:`~optarena.optim.compiled.compile_step` refuses this optimizer (None: it compiles).
    not_compilable: ClassVar[str | None] = None
    _compiled_step: StepRunner | None = None  # set by optarena.optim.compiled.compile_step
    supports_complex: ClassVar[bool] = True
    single_tensor_kernel: ClassVar[Callable[..., None]]
    multi_tensor_kernel: ClassVar[Callable[..., None]]

    def __init__(
        self,
        params: ParamsT,
        defaults: dict[str, Any],
        *,
        foreach: bool | None = None,
        flat: bool | None = None,
        maximize: bool = False,
        agr: str | None = None,
        agr_stop_step: int | None = None,
        agr_official_edge_cases: bool = False,
        agr_scope: str = "weights",
        clip_norm: float | None = None,
        clip_value: float | None = None,
        centralize: str | None = None,
        normalize: str | None = None,
        nonfinite: str = "propagate",
    ) -> None:
        self._set_nonfinite_policy(nonfinite)
        self._global_clip: Tensor | None = None  # this step's clip_norm factor (see _apply_step)
        defaults = dict(
            defaults,
            foreach=foreach,
            flat=flat,
            maximize=maximize,
            agr=agr,
            agr_stop_step=agr_stop_step,
            agr_official_edge_cases=agr_official_edge_cases,
            agr_scope=agr_scope,
            clip_norm=clip_norm,
            clip_value=clip_value,
            centralize=centralize,
            normalize=normalize,
        )
        super().__init__(params, defaults)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # The stamp of the class's state_dicts; set before the base registers it.
        if "state_owner" not in vars(cls):
            cls.state_owner = f"optarena.{cls.__name__}"
        super().__init_subclass__(**kwargs)
        # A concrete optimizer must name its kernels and say how to read its groups.
        required = ("single_tensor_kernel", "multi_tensor_kernel", "_kernel_hyperparameters")
        missing = [name for name in required if not hasattr(cls, name)]
        if missing:
            raise TypeError(f"{cls.__name__} must define {', '.join(missing)}")

    def load_state_dict(self, state_dict: dict[str, Any], *, convert: bool = False) -> None:
        """See :meth:`GuardedOptimizer.load_state_dict`; the loaded states then sit where a fresh run's would
        (:func:`place_state`), so a resumed run steps as fast as the run that saved them."""
        super().load_state_dict(state_dict, convert=convert)
        for p, state in self.state.items():
            for key, value in state.items():
                if isinstance(value, Tensor):
                    state[key] = place_state(p, value)

    def _backfill(self, group: dict[str, Any]) -> None:
        group.setdefault("agr_scope", "all")  # saved before AGR had a scope: it ran on every tensor
        group.setdefault("flat", None)  # saved before the flat step
        for key in ("clip_norm", "clip_value", "centralize", "normalize"):  # saved before these transforms
            group.setdefault(key, None)

    def _validate_group(self, group: dict[str, Any]) -> None:
        super()._validate_group(group)
        if group.get("weight_decay_mode") == "unscaled":  # θ(1 − λ): λ above 1 flips the sign of every weight
            check_range("weight_decay", group["weight_decay"], 0.0, 1.0)
        if "clip_norm" in group and group["clip_norm"] != self.defaults["clip_norm"]:
            raise ValueError(
                f"Invalid clip_norm: {group['clip_norm']!r}; the norm is the optimizer's, over every parameter, so "
                f"a param group must keep the constructor's value {self.defaults['clip_norm']!r}"
            )

    # -- state -------------------------------------------------------------------------------

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        """Fresh state for ``p``: a step counter and one zero tensor per state name."""
        state: dict[str, Tensor] = {"step": torch.tensor(0.0, dtype=torch.float32)}
        for name in self.state_names:
            state[name] = zeros_state(p)
        return state

    # -- the step ----------------------------------------------------------------------------

    def _use_foreach(self, group: dict[str, Any]) -> bool:
        foreach = group["foreach"]
        if foreach is None:  # fast path wherever it is supported
            return not torch.jit.is_scripting()
        return foreach

    def _gather(self, group: dict[str, Any]) -> tuple[list[Tensor], list[Tensor], list[list[Tensor]], list[Tensor]]:
        """Parameters with a gradient, their gradients, state lists and step counters."""
        params = [p for p in group["params"] if p.grad is not None]
        grads = [p.grad for p in params]
        if not any(g.is_sparse or g.is_complex() for g in grads):  # the usual case, in list comprehensions
            state_of = self.state
            state_dicts = [state_of[p] for p in params]
            if not all(state_dicts):
                for p, state in zip(params, state_dicts):
                    if len(state) == 0:
                        state.update(self._init_state(p, group))
            states = [[state[key] for state in state_dicts] for key in self.state_names]
            return params, grads, states, [state["step"] for state in state_dicts]
        return self._gather_each(group)

    def _gather_each(
        self, group: dict[str, Any]
    ) -> tuple[list[Tensor], list[Tensor], list[list[Tensor]], list[Tensor]]:
        """:meth:`_gather` one parameter at a time: sparse gradients refused, complex parameters as real views."""
        params: list[Tensor] = []
        grads: list[Tensor] = []
        states: list[list[Tensor]] = [[] for _ in self.state_names]
        steps: list[Tensor] = []
        names = self.state_names
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            if grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            is_complex = p.is_complex()
            if is_complex and not self.supports_complex:
                raise RuntimeError(f"{type(self).__name__} does not support complex parameters")
            state = self.state[p]
            if len(state) == 0:
                state.update(self._init_state(p, group))
            if is_complex:  # stepped as real views
                params.append(torch.view_as_real(p))
                grads.append(torch.view_as_real(grad))
                for lst, key in zip(states, names):
                    lst.append(torch.view_as_real(state[key]))
            else:
                params.append(p)
                grads.append(grad)
                for lst, key in zip(states, names):
                    lst.append(state[key])
            steps.append(state["step"])
        return params, grads, states, steps

    def _apply_step(self, **kwargs: Any) -> None:
        """The update of every group, after the closure and the ``nonfinite`` policy (see ``step``)."""
        self._before_step()
        self._global_clip = self._clip_factor_of_step()
        compiled: list[GroupWork] = []
        for group in self.param_groups:
            work = self._prepare(group)
            if work is None:
                continue
            if self._compiled_step is not None and self._compiled_step.accepts(work):
                compiled.append(work)
            else:
                self._update(work)
        if compiled:
            self._compiled_step(compiled)  # type: ignore[misc]
        self._global_clip = None
        self._after_step()

    def _clip_factor_of_step(self) -> Tensor | None:
        """``clip_norm``'s factor, from the raw gradients of every group (None when it is off)."""
        max_norm = self.defaults["clip_norm"]
        if max_norm is None:
            return None
        grads = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                grads.append(torch.view_as_real(p.grad) if p.grad.is_complex() else p.grad)
        return global_clip_factor(grads, float(max_norm))

    def _prepare(self, group: dict[str, Any]) -> GroupWork | None:
        """Gather a group's tensors and advance their step counters; None if nothing has a gradient."""
        params, grads, states, steps = self._gather(group)
        if not params:
            return None
        counters = self._step_counters(group, steps)
        if counters is not None:  # the counters are views of one buffer: one add
            return GroupWork(group, params, grads, states, counters.advance())
        torch._foreach_add_(steps, 1)
        return GroupWork(group, params, grads, states, [s.item() for s in steps])

    def _step_counters(self, group: dict[str, Any], steps: list[Tensor]) -> StepCounters | None:
        """The group's gathered step counters in one buffer (made or remade here), or None where they cannot be."""
        banks: dict[int, StepCounters] = self.__dict__.setdefault("_counters", {})  # not pickled: remade
        counters = banks.get(id(group))
        if counters is not None and counters.counts(steps):
            return counters
        banks.pop(id(group), None)
        if not StepCounters.can_hold(steps):
            return None
        # The states of the gathered parameters, in _gather's order (a complex one's state is keyed by itself).
        counters = banks[id(group)] = StepCounters([self.state[p] for p in group["params"] if p.grad is not None])
        return counters

    def _update(self, work: GroupWork) -> None:
        """The eager update of one group: the foreach kernel per (device, dtype), or the reference loop."""
        group, params, states, step_values = work.group, work.params, work.states, work.step_values
        foreach = self._use_foreach(group)
        grads, m_grads = apply_pipeline(
            pipeline(group), work.grads, step_values, foreach=foreach, clip_factor=self._global_clip
        )
        hyper = self._kernel_hyperparameters(group)
        if foreach and (flat := self._flat_group(work)) is not None:
            flat.step(type(self).multi_tensor_kernel, grads, m_grads, step_values[0], hyper)
        elif foreach:
            for idx in group_by_device_and_dtype(params):
                grads_sub = [grads[i] for i in idx]
                # The same list object when the moments share a gradient, so kernels can skip work.
                m_grads_sub = grads_sub if m_grads is grads else [m_grads[i] for i in idx]
                type(self).multi_tensor_kernel(
                    [params[i] for i in idx],
                    grads_sub,
                    m_grads_sub,
                    *[[lst[i] for i in idx] for lst in states],
                    steps=[step_values[i] for i in idx],
                    **hyper,
                )
        else:
            for i in range(len(params)):
                type(self).single_tensor_kernel(
                    params[i],
                    grads[i],
                    m_grads[i],
                    *[lst[i] for lst in states],
                    step=step_values[i],
                    **hyper,
                )

    def _flat_group(self, work: GroupWork) -> FlatGroup | None:
        """The group's flat buffers when it can be stepped on them (made or remade here), else None."""
        steps = work.step_values
        wanted = work.group.get("flat")
        if wanted is False or not self.elementwise_kernel or steps.count(steps[0]) != len(steps):
            return None
        flats: dict[int, FlatGroup] = self.__dict__.setdefault("_flat_groups", {})  # not pickled: remade
        flat = flats.get(id(work.group))
        if flat is not None and flat.holds(work.group, work.params, work.states):
            return flat
        flats.pop(id(work.group), None)
        if not qualifies(work.group["params"], work.params, work.grads, work.states, any_size=wanted is True):
            return None
        keys = state_keys(work.params, work.states, self.state)
        if keys is None:
            return None
        flat = flats[id(work.group)] = FlatGroup(work.group, work.params, work.states, self.state, keys)
        for i, views in enumerate(flat.state_views):  # the work now names the state's new tensors too
            if views is not None:
                work.states[i] = list(views)
        return flat

    def _before_step(self) -> None:
        """Hook for optimizer-wide work before the groups are updated (e.g. a schedule)."""

    def _after_step(self) -> None:
        """Hook for optimizer-wide work after the groups are updated (e.g. a clock)."""


class StepRunner(Protocol):
    """What runs some groups' updates instead of :meth:`OptarenaOptimizer._update` (the compiled step)."""

    def accepts(self, work: GroupWork) -> bool: ...

    def __call__(self, works: list[GroupWork]) -> None: ...


@dataclass
class GroupWork:
    """One param group's tensors for one step: what the eager and the compiled updates consume."""

    group: dict[str, Any]
    params: list[Tensor]
    grads: list[Tensor]
    states: list[list[Tensor]]
    step_values: list[float]
