"""The compiled step: an optimizer's whole multi-tensor update as one ``torch.compile``'d graph.

``compile_step(optimizer)`` makes every later ``optimizer.step()`` run the optimizer's foreach
kernel (with the gradient transforms) through ``torch.compile(fullgraph=True)``. Float
hyperparameters and the step counts reach the graph as one float64 tensor, so a scheduler that
changes the learning rate every step changes data, not code: nothing recompiles. Where the
platform cannot compile, the first step warns once and the optimizer goes on eagerly (foreach).
A small CPU group that qualifies for the flat step (:mod:`optarena.optim.flat`) enters the graph as its
buffers (a handful of inputs instead of one per tensor and state: dynamo's per-call guards and wrappers grow with
the inputs); its gradient transforms still see each tensor, as views of the gradient buffer.

Once a graph is compiled, later steps call inductor's compiled module directly (:mod:`optarena.optim.direct_call`):
dynamo's frame entry and guards cost more than the whole update of a 20k-parameter model, and a few per cent of a
ResNet-18's.
The engine checks what decides the graph itself; where a check fails, the step goes through dynamo.

Inductor compiles these graphs with five changes of :mod:`optarena.optim.codegen` (restricted pointers, per-tensor
scalars computed once where the steps are equal, and into one buffer in a per-tensor graph, fewer fusion attempts,
no buffer for a value no one reads again), never a user's graph.

The eager path stays the reference: the compiled update equals it within float rounding (the
kernels are the same functions; inductor only fuses them), which tests/test_compiled.py checks.
"""

from __future__ import annotations

import logging
import math
import types
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch._C._dynamo.eval_frame import _debug_get_cache_entry_list
from torch._dynamo import lookup_backend

from optarena.optim.agr import in_scope
from optarena.optim.base import GroupWork, OptarenaOptimizer
from optarena.optim.codegen import optimizer_codegen, start_instruction_set_probes
from optarena.optim.direct_call import DirectCall, PlainAndUnaliased, Single, Slice, TensorCalls
from optarena.optim.flat import FlatGroup
from optarena.optim.functional import group_by_device_and_dtype, lower_realize_in_inductor, scalar_value
from optarena.optim.transform_wrapper import AGR
from optarena.optim.transforms import Pipeline, agr_scope, apply_pipeline, pipeline, reads_shape, reduces_whole_tensors
from optarena.optim.wrapper import OptimizerWrapper

#: A compile that fails is a warning with the error's message; its traceback (inductor's frames) is logged here, at
#: INFO, for whoever needs to know where it failed (``logging.getLogger("optarena.optim.compiled")``).
log = logging.getLogger(__name__)

#: The float name of a per-tensor slice's AGR scope flag (1: in scope), for a graph shared by every shape
#: (``graphs='per_tensor'``), which sees a flat view of each tensor.
AGR_IN_SCOPE = "agr_in_scope"


def _update(kernel: Callable[..., Any], slices: list[Slice], run_by_run: bool = False) -> None:
    """The traced function: what :meth:`OptarenaOptimizer._update` does, for every slice at once.

    ``run_by_run`` (an elementwise kernel: each tensor's update reads only its own tensors): where the transforms
    reduce over each whole tensor (AGR's Σ|g|), a list slice's tensors are transformed and updated in runs of
    :data:`CACHE_RUN_BYTES` of gradient, one run after the other. Op by op, inductor runs every tensor's reduction
    before the first update, and on a model larger than the cache the update reads every gradient from memory a second
    time; run by run, the update reads gradients that their reductions have just brought into the cache. The same
    functions on the same values: the result is unchanged.
    """
    for static, names, transforms, shapes, params, grads, states, scalars, clip_factor in slices:
        values = scalars.unbind(0)
        hyper = dict(zip(names, values))
        steps = list(values[len(names) :])
        if len(steps) == 1:  # a flat group, or tensors that share one step count (codegen.ShareEqualScalars)
            steps = steps * len(params)  # not `*=`: torch 2.11's dynamo refuses a list's in-place repeat
        scope_flag = hyper.pop(AGR_IN_SCOPE, None)  # a graph shared by every shape: AGR's scope as data
        agr_in_scope = None if scope_flag is None else [scope_flag] * len(params)
        if run_by_run and shapes is None and len(params) > 1 and reduces_whole_tensors(transforms):
            for run in _cache_sized_runs(grads):
                grad, m_grad = apply_pipeline(
                    transforms,
                    grads[run],
                    steps[run],
                    foreach=True,
                    clip_factor=clip_factor,
                    agr_in_scope=None if agr_in_scope is None else agr_in_scope[run],
                )
                kernel(params[run], grad, m_grad, *[s[run] for s in states], steps=steps[run], **hyper, **dict(static))
            continue
        # The eager step's transforms, the same functions.
        if shapes is None:
            grads, m_grads = apply_pipeline(
                transforms, grads, steps, foreach=True, clip_factor=clip_factor, agr_in_scope=agr_in_scope
            )
        else:
            grads, m_grads = _flat_pipeline(transforms, grads[0], shapes, steps[0], clip_factor)
        kernel(params, grads, m_grads, *states, steps=steps, **hyper, **dict(static))


#: The gradient bytes of one run of tensors transformed and updated together by ``_update``'s ``run_by_run``:
#: a quarter of a 32 MiB last-level cache, so that a run's gradients stay in it while its updates stream the
#: parameters and states. Runs rather than single tensors: dynamo traces the kernel once per run, and small tensors
#: gain nothing from their own (one run per tensor took 10 s more to compile AGR's ResNet-18 graph, 39 s against 29).
CACHE_RUN_BYTES = 8 << 20


def _cache_sized_runs(tensors: list[Tensor]) -> list[slice]:
    """Consecutive runs of ``tensors`` of at most :data:`CACHE_RUN_BYTES` each (a larger tensor alone)."""
    runs, start, size = [], 0, 0
    for i, t in enumerate(tensors):
        nbytes = t.numel() * t.element_size()
        if i > start and size + nbytes > CACHE_RUN_BYTES:
            runs.append(slice(start, i))
            start, size = i, 0
        size += nbytes
    runs.append(slice(start, len(tensors)))
    return runs


def _flat_pipeline(
    transforms: Pipeline,
    flat_grad: Tensor,
    shapes: tuple[tuple[int, ...], ...],
    step: Tensor,
    clip_factor: Tensor | None,
) -> tuple[list[Tensor], list[Tensor]]:
    """The transforms of a flat group: each tensor's transforms (AGR's sums, centralization) see its own slice of the
    gradient buffer, and the results are one buffer again (one list object for both moments when they share it)."""
    grads = [flat_grad]
    if not transforms:
        return grads, grads
    sizes = [math.prod(shape) for shape in shapes]
    views = [chunk.view(shape) for chunk, shape in zip(flat_grad.split(sizes), shapes)]
    per_tensor, per_tensor_m = apply_pipeline(
        transforms, views, [step] * len(views), foreach=True, clip_factor=clip_factor
    )
    grads = [torch.cat([g.reshape(-1) for g in per_tensor])]
    return grads, grads if per_tensor_m is per_tensor else [torch.cat([g.reshape(-1) for g in per_tensor_m])]


class _CompiledUpdate:
    """``torch.compile(_update)`` under a code object of its own, and the direct calls of its flat graphs."""

    def __init__(self, name: str, *, direct: bool = True, dynamic: bool = False, run_by_run: bool = False) -> None:
        """``direct=False``: configurations that differ beyond the flat layout share this code object (an
        unhashable option value), so no graph is called directly. ``dynamic=True``: graphs traced with symbolic
        sizes (one tensor's, for ``graphs='per_tensor'``), so that one graph serves every size.
        ``run_by_run``: see :func:`_update`."""
        self.allows_direct = direct
        self.dynamic = dynamic
        self.run_by_run = run_by_run
        self.code = _update.__code__.replace(co_name=name)
        self.graphs: list[DirectCall | None] = []  # every graph the backend compiled, in order
        self.direct: dict[tuple[Any, ...], DirectCall] = {}  # by flat layout
        self.by_sizes: dict[tuple[Any, ...], list[DirectCall]] = {}  # graphs with symbolic sizes, by layout
        inductor = lookup_backend("inductor")

        def backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
            lower_realize_in_inductor()
            with optimizer_codegen(per_tensor=dynamic):
                compiled = inductor(gm, example_inputs)
            self.graphs.append(DirectCall.of(gm, compiled))
            return compiled

        fn = types.FunctionType(self.code, _update.__globals__, name)
        self.through_dynamo = torch.compile(fn, fullgraph=True, dynamic=dynamic, backend=backend)

    def direct_call(self, layout: tuple[Any, ...]) -> DirectCall | None:
        """The graph for this layout, while dynamo still holds it (``torch._dynamo.reset()`` drops them all)."""
        if not self.allows_direct or layout not in self.direct:
            return None
        live = self.live_calls(list(self.direct.values()))
        if len(live) < len(self.direct):  # some dropped since (a reset drops all): those go through dynamo again
            self.direct = {key: call for key, call in self.direct.items() if call in live}
        return self.direct.get(layout)

    def sized_calls(self, layout: tuple[Any, ...]) -> list[DirectCall]:
        """The graphs with symbolic sizes of this layout, each to be tried in turn, while dynamo still holds them."""
        if not self.allows_direct or layout not in self.by_sizes:
            return []
        calls = self.by_sizes[layout] = self.live_calls(self.by_sizes[layout])
        return calls

    def live_calls(self, calls: list[DirectCall]) -> list[DirectCall]:
        """Those of ``calls`` whose graph dynamo still holds: a reset drops every graph, and the graphs compiled
        after it are new entries of the cache, so an entry's guards tell which graph is still in it."""
        live = {id(entry.guard_manager) for entry in _debug_get_cache_entry_list(self.code)}
        return [call for call in calls if id(call.frame_guards) in live]

    def __call__(self, kernel: Callable[..., Any], slices: list[Slice], layout: tuple[Any, ...]) -> None:
        """Through dynamo; a graph compiled here is kept for direct calls of its layout where it can have them (see
        :class:`DirectCall`): a list group's only if its tensors were plain and unaliased when it was traced."""
        compiled_before = len(self.graphs)
        # Symbolic sizes: the options' ints (AGR's stop step, a total step count) stay constants of the graph, as in a
        # graph traced for fixed sizes (dynamic=True would make each one a symbol, an input of the graph).
        with torch._dynamo.config.patch(specialize_int=self.dynamic):
            self.through_dynamo(kernel, slices, self.run_by_run)
        new = self.graphs[compiled_before:]
        if not (self.allows_direct and len(new) == 1 and new[0] is not None):
            return
        plain = not _has_lists(layout) or (new[0].inner is not None and PlainAndUnaliased()(slices))
        # dynamo's guards of the newest graph (cache entries: newest first): what a graph with symbolic sizes checks
        # a new size against, and what tells that dynamo still holds the graph (see live_calls)
        new[0].frame_guards = _debug_get_cache_entry_list(self.code)[0].guard_manager
        new[0].arguments = {"kernel": kernel, "run_by_run": self.run_by_run}
        if plain and new[0].guard(slices):
            if new[0].sizes:  # one layout, several graphs (the size ranges a trace branched on): each is tried
                self.by_sizes.setdefault(layout, []).append(new[0])
            else:
                self.direct[layout] = new[0]


_COMPILED: dict[tuple[Any, ...], _CompiledUpdate] = {}
#: ``compile_step``'s ``graphs``: one graph for a step's tensors, or one shared by every tensor's size.
COMPILE_GRAPHS = ("whole", "per_tensor")


def _compiled_update_for(cls: type, signature: tuple[Any, ...] = (), *, dynamic: bool = False) -> _CompiledUpdate:
    """The compiled update with a code object of its own for each optimizer class and graph signature.

    Dynamo caches graphs per code object, with a limit of eight each, past which it silently runs the
    function eagerly. The signature is what makes a different graph apart from the tensors' shapes (the
    static hyperparameters, the names of the float ones, the transforms of every slice), so comparing many
    optimizers, or one optimizer under many options, in one process never evicts a graph or falls back to
    eager; only the shapes of one configuration share a code object.
    """
    key, direct = (cls, signature, dynamic), True
    try:
        hash(key)
    except TypeError:  # an unhashable option value: such configurations share the class's code object
        key, direct = (cls, (), dynamic), False
    if key not in _COMPILED:
        name = f"_update_{cls.__name__}_{len(_COMPILED)}"
        elementwise = getattr(cls, "elementwise_kernel", False)
        _COMPILED[key] = _CompiledUpdate(name, direct=direct, dynamic=dynamic, run_by_run=elementwise)
    return _COMPILED[key]


def _layout(slices: list[Slice]) -> tuple[Any, ...]:
    """Per slice, what selects its graph beyond the signature and the tensors' sizes and strides: flat or list, the
    tensors' dtype and device and count, how many step counts, the clip factor's dtype, which states are unused."""
    layout = []
    for _, _, _, shapes, params, _, states, scalars, clip_factor in slices:
        param = params[0]
        unused = tuple(tensors[0] is None for tensors in states)  # a state the group does not keep (AMSGrad off)
        clip_dtype = None if clip_factor is None else clip_factor.dtype
        layout.append((shapes is None, param.dtype, param.device, len(params), scalars.numel(), clip_dtype, unused))
    return tuple(layout)


def _has_lists(layout: tuple[Any, ...]) -> bool:
    """Whether a step's :func:`_layout` has a list slice (the user's tensors, not a flat group's own buffers)."""
    return any(is_list for is_list, *_ in layout)


class PerTensorSlice:
    """A list slice stepped tensor by tensor (``graphs='per_tensor'``): what a step passes to its tensors' direct
    calls (:class:`~optarena.optim.direct_call.TensorCalls`), and its tensors as slices of their own
    (:data:`~optarena.optim.direct_call.Single`), made only where the step takes the checked path."""

    def __init__(
        self,
        position: int,
        signature: tuple[Any, ...],
        views: list[tuple[list[Tensor], list[list[Tensor]], int, tuple[Any, ...]]],
        grads: list[Tensor],
        scalars: list[Tensor],
        clip: Tensor | None,
    ) -> None:
        self.position = position  # the slice's place in the step's slices
        self.signature = signature  # each tensor's graph signature: ((static, float names, transforms, None), dtype,
        # device), the first part a tensor's slice begins with
        self.views = views  # per tensor: CompiledStep.tensor_views
        self.grads = grads
        self.scalars = scalars  # per tensor (often one tensor, repeated)
        self.clip = clip

    def singles(self) -> list[Single]:
        """Each tensor as a slice of its own, with its graph signature and layout; its gradient as it is (its flat
        view is made where it is used: cheaper for the direct calls than for dynamo and the eager fallback)."""
        fields = self.signature[0]
        return [
            ((*fields, param, [grad], states, scalars, self.clip), self.signature, layout)
            for (param, states, _, layout), grad, scalars in zip(self.views, self.grads, self.scalars)
        ]


class CompiledStep:
    """Runs an optimizer's groups through its compiled update; falls back to eager on failure."""

    def __init__(self, optimizer: OptarenaOptimizer, *, per_tensor: bool = False) -> None:
        self.optimizer = optimizer
        self.per_tensor = per_tensor and optimizer.elementwise_kernel
        self.compiled_once = False
        self.plain_and_unaliased = PlainAndUnaliased()
        # graphs='per_tensor': per list slice (by position), the views of split_per_tensor and what they were made of,
        # and its tensors' direct calls (None: not every tensor was called directly in the last checked step)
        self.views: dict[int, tuple[Any, list[int], list[Any]]] = {}
        self.tensor_calls: dict[int, TensorCalls | None] = {}

    def accepts(self, work: GroupWork) -> bool:
        """False where the reference loop was asked for (``foreach=False``): it runs eagerly."""
        return work.group["foreach"] is not False

    def slices(self, work: GroupWork, flats: list[FlatGroup]) -> list[Slice]:
        """The group's graph inputs; a flat group's buffers are loaded here and appended to ``flats`` (to store)."""
        group = work.group
        hyper = self.optimizer._kernel_hyperparameters(group)
        floats = {k: scalar_value(v) for k, v in hyper.items() if _is_float(v)}
        static = tuple((k, v) for k, v in hyper.items() if k not in floats)
        transforms = pipeline(group)
        clip_factor = self.optimizer._global_clip
        flat = self.optimizer._flat_group(work)
        if flat is not None:  # few graph inputs: dynamo's per-call cost grows with them
            flat.load(work.grads)
            flats.append(flat)
            scalars = flat.scalars([*floats.values(), work.step_values[0]])
            states = [[buffer] for buffer in flat.state_flat]
            return [(static, tuple(floats), transforms, flat.shapes, [flat.param_flat], [flat.grad_flat], states,
                     scalars, clip_factor)]  # fmt: skip
        out = []
        groups = group_by_device_and_dtype(work.params)
        for idx in groups:
            if len(groups) == 1:  # one device and dtype (the usual case): the lists as gathered
                params, grads, states, steps = work.params, work.grads, work.states, work.step_values
            else:
                params = [work.params[i] for i in idx]
                grads = [work.grads[i] for i in idx]
                states = [[lst[i] for i in idx] for lst in work.states]
                steps = [work.step_values[i] for i in idx]
            if steps.count(steps[0]) == len(steps):  # one step for all: their per-tensor scalars are computed once
                steps = steps[:1]
            scalars = _device_scalars([*floats.values(), *steps], params[0].device)
            clip = None if clip_factor is None else clip_factor.to(params[0].device)
            out.append((static, tuple(floats), transforms, None, params, grads, states, scalars, clip))
        return out

    def __call__(self, works: list[GroupWork]) -> None:
        flats: list[FlatGroup] = []
        slices = [s for work in works for s in self.slices(work, flats)]
        cls = type(self.optimizer)
        whole, by_slice = self.split_per_tensor(slices) if self.per_tensor else (slices, [])
        stepped_whole, done = False, 0  # what an eager fallback must not step again
        try:  # a failure to compile raises before its graph writes any tensor (a flat group's own buffers aside)
            if whole:
                update = _compiled_update_for(cls, tuple(s[:4] for s in whole))
                layout = _layout(whole)
                if not self.called_directly(update.direct_call(layout), whole, layout):
                    update(cls.multi_tensor_kernel, whole, layout)
                stepped_whole = True
            sized: dict[tuple[int, tuple[Any, ...]], list[DirectCall]] = {}  # this step's, by update and layout
            for per_tensor in by_slice:
                k, grads = per_tensor.position, per_tensor.grads
                update = _compiled_update_for(cls, per_tensor.signature, dynamic=True)
                tensor_calls = self.tensor_calls.get(k)
                if tensor_calls is not None and tensor_calls(
                    update.live_calls, self.views[k], grads, per_tensor.scalars, per_tensor.clip
                ):
                    done += len(grads)
                    continue
                slice_singles = [_flat_grad(single) for single in per_tensor.singles()]
                served: list[DirectCall | None] = []
                for single, _, layout in slice_singles:
                    calls = sized.get((id(update), layout))
                    if calls is None:  # the graphs with symbolic sizes; a specialized one (a 1-value tensor's) too
                        fixed = update.direct_call(layout)
                        calls = update.sized_calls(layout) + ([] if fixed is None else [fixed])
                        sized[id(update), layout] = calls
                    # Plain and unaliased tensors: checked by split_per_tensor.
                    served.append(next((direct for direct in calls if direct([single])), None))
                    if served[-1] is None:
                        update(cls.multi_tensor_kernel, [single], layout)
                        sized.pop((id(update), layout))  # it may have compiled a graph
                    done += 1
                self.tensor_calls[k] = TensorCalls.of(served, self.views[k], grads, slice_singles)
        except Exception as error:
            if self.compiled_once:
                raise
            log.info("%s: torch.compile failed", cls.__name__, exc_info=error)
            warnings.warn(
                f"{cls.__name__}: torch.compile failed ({type(error).__name__}: {error}); "
                "running the eager foreach step instead (the traceback: logger optarena.optim.compiled, INFO)",
                RuntimeWarning,
                stacklevel=3,
            )
            self.optimizer._compiled_step = None
            if not stepped_whole and done == 0:
                for work in works:
                    self.optimizer._update(work)
                return
            # Some tensors are stepped already: the others get the same functions, eagerly.
            singles = [single for per_tensor in by_slice for single in per_tensor.singles()]
            _update(cls.multi_tensor_kernel, [_flat_grad(single)[0] for single in singles[done:]])
        self.compiled_once = True
        for flat in flats:
            flat.store()

    def split_per_tensor(self, slices: list[Slice]) -> tuple[list[Slice], list[PerTensorSlice]]:
        """``graphs='per_tensor'``: each list slice whose tensors are plain, unaliased and contiguous, and whose
        transforms read no shape (:func:`~optarena.optim.transforms.reads_shape`), is stepped tensor by tensor
        (:class:`PerTensorSlice`): its parameters and states as flat views of their values (:func:`_values_view`,
        kept from step to step while their data pointers stay), AGR's ``'weights'`` scope as a float of its own
        (:data:`AGR_IN_SCOPE`). The other slices stay together for the whole graph."""
        lists = [s for s in slices if s[3] is None]
        if not lists or not self.plain_and_unaliased(lists):
            return slices, []
        whole, by_slice = [], []
        for k, (s, layout) in enumerate(zip(slices, _layout(slices))):
            static, names, transforms, shapes, params, grads, states, scalars, clip = s
            owned = [*params, *(t for ts in states for t in ts if t is not None)]
            if shapes is not None or reads_shape(transforms) or not all(t.is_contiguous() for t in [*owned, *grads]):
                whole.append(s)
                continue
            scope = agr_scope(transforms)
            flagged = scope not in (None, "all")  # AGR chooses by shape, which a flat view hides: a flag per tensor
            single_names = (*names, AGR_IN_SCOPE) if flagged else names
            signature = ((static, single_names, transforms, None), params[0].dtype, params[0].device)
            pointers = [t.data_ptr() for t in owned]
            cached = self.views.get(k)
            if cached is None or cached[0] != signature or cached[1] != pointers:
                cached = self.views[k] = (signature, pointers, self.tensor_views(params, states, layout, scope))
            floats = len(names)
            if scalars.numel() == floats + 1:  # one step count for every tensor: one scalar tensor for all
                if flagged:  # or two: out of AGR's scope, in it
                    by_flag = [
                        torch.cat((scalars[:floats], scalars.new_full((1,), f), scalars[floats:])) for f in (0, 1)
                    ]
                    tensor_scalars = [by_flag[scoped] for _, _, scoped, _ in cached[2]]
                else:
                    tensor_scalars = [scalars] * len(params)
            else:  # one step count each (new_full rather than new_tensor, which would wait for the device)
                flags = [(scalars.new_full((1,), scoped),) if flagged else () for _, _, scoped, _ in cached[2]]
                tensor_scalars = [torch.cat((scalars[:floats], *flag, scalars[floats + i :][:1]))
                                  for i, flag in enumerate(flags)]  # fmt: skip
            by_slice.append(PerTensorSlice(k, signature, cached[2], grads, tensor_scalars, clip))
        if len(self.views) > len(slices):  # slices gone (a group removed): their views would keep old tensors alive
            self.views = {k: v for k, v in self.views.items() if k < len(slices)}
            self.tensor_calls = {k: v for k, v in self.tensor_calls.items() if k < len(slices)}
        return whole, by_slice

    @staticmethod
    def tensor_views(
        params: list[Tensor], states: list[list[Tensor]], layout: tuple[Any, ...], scope: str | None
    ) -> list[tuple[list[Tensor], list[list[Tensor]], int, tuple[Any, ...]]]:
        """Per tensor of a list slice: its parameter's and states' flat views, whether it is in AGR's ``scope`` (by
        its real shape; None: no AGR), and its per-tensor layout (a 1-value tensor's graph is its own: dynamo
        specializes size 1)."""
        scope = scope or "all"
        out = []
        for i, p in enumerate(params):
            view = (p.numel(),)
            tensor_states = [[None] if ts[i] is None else [_values_view(ts[i], view)] for ts in states]
            single_layout = ((*layout[:3], min(p.numel(), 2), 1, *layout[5:]),)
            out.append(([_values_view(p, view)], tensor_states, int(in_scope(p, scope)), single_layout))
        return out

    def called_directly(self, direct: DirectCall | None, slices: list[Slice], layout: tuple[Any, ...]) -> bool:
        """Run ``direct`` on ``slices`` where its checks pass (list slices: :class:`PlainAndUnaliased`; every
        input: :meth:`DirectCall.__call__`); False, with nothing written, where there is none or a check fails."""
        if direct is None:
            return False
        if _has_lists(layout) and not self.plain_and_unaliased(slices):
            return False
        return direct(slices)


def _flat_grad(single: Single) -> Single:
    """``single`` with its gradient as a flat view of its values (:func:`_values_view`), as its graph takes it."""
    s, signature, layout = single
    grad = s[5][0]
    return ((*s[:5], [_values_view(grad, (grad.numel(),))], *s[6:]), signature, layout)  # type: ignore[return-value]


def _values_view(tensor: Tensor, shape: tuple[int, ...]) -> Tensor:
    """``tensor``'s values as a contiguous tensor of ``shape`` sharing its storage and version counter, detached
    (no view of an autograd leaf) and with no base (dynamo would trace the base's shape: one graph per shape)."""
    return tensor.view(shape).detach()


def _device_scalars(values: list[float], device: torch.device) -> Tensor:
    """``values`` as a float64 tensor on ``device``, without waiting for it: ``torch.tensor(values, device=cuda)``
    copies from pageable memory, which blocks the host until the device has run all the work queued before (the
    backward pass), every step. From pinned memory the copy is queued like a kernel; torch's pinned-memory cache
    keeps the buffer until the copy has run. (CUDA only: the device checked for it, tests/device_check.py.)"""
    if device.type == "cuda":
        return torch.tensor(values, dtype=torch.float64, pin_memory=True).to(device, non_blocking=True)
    return torch.tensor(values, dtype=torch.float64, device=device)


def _is_float(value: Any) -> bool:
    if isinstance(value, Tensor):
        return value.numel() == 1 and value.is_floating_point()
    return isinstance(value, float)


def compile_step(optimizer: Any, *, graphs: str = "whole") -> Any:
    """Make ``optimizer.step()`` run its multi-tensor update as compiled graphs; returns it.

    ``graphs='whole'``: one graph for all of a step's tensors, specialized to their shapes: the fastest step, but
    its compile time grows with the tensor count (tens of seconds for a ResNet-18 on two cores). ``'per_tensor'``:
    an optimizer with an elementwise kernel runs each tensor through one graph traced with a symbolic size, shared
    by every tensor of a dtype and device (AGR's ``'weights'`` scope reaches it as data; tensors of one value, and
    with AGR of 2 to 7, get one more each): a compile time that does not grow with the model, for one kernel call
    per tensor a step; groups this cannot take (centralization, which reads each tensor's shape; a non-contiguous or
    aliased tensor) use the whole graph. Both compute the same
    update (tests/test_compiled.py); benchmarks/compile_time.py and benchmarks/step_time.py measure the trade.

    Works on any optarena optimizer (and through Lookahead to the one inside). Raises
    ``ValueError`` for an optimizer whose step is not an elementwise kernel (its
    ``not_compilable`` says why) or for an unknown ``graphs``, and ``TypeError`` for one that is not an optarena
    optimizer (compile a torch optimizer's step with ``torch.compile`` itself). Where this platform cannot
    compile, it warns and leaves the optimizer eager.
    """
    if graphs not in COMPILE_GRAPHS:
        raise ValueError(f"Invalid graphs: {graphs!r}; expected one of {', '.join(map(repr, COMPILE_GRAPHS))}")
    inner = optimizer
    while isinstance(inner, OptimizerWrapper) and not isinstance(inner, OptarenaOptimizer):
        if isinstance(inner, AGR):
            raise TypeError(
                "compile_step: the AGR wrapper runs around a torch optimizer, which optarena cannot compile; "
                "use an optarena optimizer with agr='code' or agr='paper' instead"
            )
        inner = inner.optimizer
    if not isinstance(inner, OptarenaOptimizer):
        raise TypeError(
            f"compile_step: {type(inner).__name__} is not an optarena optimizer; "
            "use torch.compile(optimizer.step) for torch's own optimizers"
        )
    if inner.not_compilable is not None:
        raise ValueError(f"compile_step: {type(inner).__name__} cannot be compiled: {inner.not_compilable}")
    if not torch._dynamo.is_dynamo_supported():
        warnings.warn(
            "compile_step: torch.compile is not supported on this platform; the optimizer stays eager",
            RuntimeWarning,
            stacklevel=2,
        )
        return optimizer
    inner._compiled_step = CompiledStep(inner, per_tensor=graphs == "per_tensor")
    if any(p.device.type == "cpu" for group in inner.param_groups for p in group["params"]):
        start_instruction_set_probes()  # from now on, beside the user's work and the compile's first phases
    return optimizer
