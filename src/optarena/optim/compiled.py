"""The compiled step: an optimizer's whole multi-tensor update as one ``torch.compile``'d graph.

``compile_step(optimizer)`` makes every later ``optimizer.step()`` run the optimizer's foreach
kernel (with the gradient transforms) through ``torch.compile(fullgraph=True)``. Float
hyperparameters and the step counts reach the graph as one float64 tensor, so a scheduler that
changes the learning rate every step changes data, not code: nothing recompiles. Where the
platform cannot compile, the first step warns once and the optimizer goes on eagerly (foreach).
A small CPU group that qualifies for the flat step (:mod:`optarena.optim.flat`) enters the graph as its
buffers (a handful of inputs instead of one per tensor and state: dynamo's per-call guards and wrappers grow with
the inputs); its gradient transforms still see each tensor, as views of the gradient buffer.

Once a graph is compiled, later steps call inductor's compiled module directly (see :class:`_DirectCall`): dynamo's
frame entry and guards cost more than the whole update of a 20k-parameter model, and a few per cent of a ResNet-18's.
The engine checks what decides the graph itself; where a check fails, the step goes through dynamo.

Inductor compiles these graphs with three changes of :mod:`optarena.optim.codegen` (restricted pointers, per-tensor
scalars computed once where the steps are equal, fewer fusion attempts), never a user's graph.

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
from torch._C._dynamo.guards import TensorGuards
from torch._dynamo import lookup_backend
from torch._dynamo.source import GetItemSource, LocalSource, TensorProperty, TensorPropertySource
from torch._inductor import utils as inductor_utils
from torch._inductor.output_code import CompiledFxGraph

from optarena.optim.agr import in_scope
from optarena.optim.base import GroupWork, OptarenaOptimizer
from optarena.optim.codegen import optimizer_codegen
from optarena.optim.flat import FlatGroup
from optarena.optim.functional import group_by_device_and_dtype, lower_realize_in_inductor, scalar_value
from optarena.optim.transform_wrapper import AGR
from optarena.optim.transforms import Pipeline, agr_scope, apply_pipeline, pipeline, reads_shape, reduces_whole_tensors
from optarena.optim.wrapper import OptimizerWrapper

#: A compile that fails is a warning with the error's message; its traceback (inductor's frames) is logged here, at
#: INFO, for whoever needs to know where it failed (``logging.getLogger("optarena.optim.compiled")``).
log = logging.getLogger(__name__)

# One graph input per (device, dtype) slice of a param group, or per flat group (optarena.optim.flat):
# (static hyperparameters, float hyperparameter names, the gradient-transform pipeline (static),
#  the tensors' shapes for a flat group (static; None for lists),
#  params, grads, state lists (a flat group: one buffer each), float64 tensor of the float hyperparameters then
#  the step counts (one where every tensor of the slice has the same), the clip_norm factor (0-d tensor or None))
Slice = tuple[
    tuple[tuple[str, Any], ...],
    tuple[str, ...],
    Pipeline,
    tuple[tuple[int, ...], ...] | None,
    list[Tensor],
    list[Tensor],
    list[list[Tensor]],
    Tensor,
    Tensor | None,
]


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


class _DirectCall:
    """A compiled graph called without dynamo: its inputs' places in the slices, and the callable.

    Dynamo's per-call work (frame entry, guards on every input and constant) is there to decide which graph fits.
    The engine knows most of that without it: the graph depends on the optimizer class and the slices' signature
    (static hyperparameters, float names, transforms, a flat group's shapes), which select the
    :class:`_CompiledUpdate`, and on what :func:`_layout` records (per slice: flat or list, dtype, device, tensor
    count, how many step counts, the clip factor's dtype, unused states). A flat group's buffers are the engine's own,
    contiguous and unaliased. A list group's tensors are the user's: before each direct call the engine checks that
    they are plain tensors of the slice's dtype and device with no storage in common (:class:`_PlainAndUnaliased`),
    and for every graph it checks each input's type, dtype, device, sizes and strides against those the graph was
    compiled for (dynamo's ``TensorGuards``, in one C++ call); where either fails, the step goes through dynamo,
    which finds or compiles the graph that fits. The graph must also leave nothing for dynamo to do after it (no
    outputs: every effect is an in-place write), and every input must be found in the slices by indexing.
    """

    def __init__(self, paths: list[tuple[tuple[int, ...], int | None]], compiled: Callable[..., Any]) -> None:
        self.paths = paths  # per input: where it is in the slices, and which size of that tensor (None: the tensor)
        self.compiled = compiled
        # Inductor's module itself, past AOT autograd's runtime wrappers (≈ 10 µs a call: for this graph they only
        # bump the mutated inputs' version counters, done here), where that is sound; else the whole wrapper.
        self.inner = _inductor_module(compiled)
        self.mutated = [] if self.inner is None else sorted(self.inner.mutated_input_idxs)
        # Inputs the kernels assume aligned (a GPU graph's tensors; none on a CPU): inductor's wrappers copy one
        # that is not; a direct call leaves such a step to them instead.
        self.aligned = [] if self.inner is None else list(self.inner.inputs_to_check or ())
        self.tensors = [i for i, (_, dim) in enumerate(paths) if dim is None]
        self.tensor_guards: TensorGuards | None = None  # set by guard(), before the first direct call
        # A graph traced with symbolic sizes (per_tensor): each tensor size that is a symbol, as (input, dim, input
        # giving the symbol); dynamo's guards of its frame (set by _CompiledUpdate), which decide the sizes it
        # serves (what the trace assumed of them: at least 2, a range, ...); which sizes passed them (the guards on
        # sizes are a function of the sizes: checked once per size, not at every call).
        self.sizes = [i for i, (_, dim) in enumerate(paths) if dim is not None]
        self.symbolic: list[tuple[int, int, int]] = []
        self.symbolic_strides: set[tuple[int, int]] = set()  # (input, dim): any stride (a size-1 dim's)
        self.frame_guards: Any = None  # set by _CompiledUpdate: its cache entry's guards
        self.arguments: dict[str, Any] = {}  # set by _CompiledUpdate: _update's arguments but the slices
        self.sizes_served: dict[tuple[int, ...], bool] = {}
        self.flat_places: list[int] | None = None  # set by guard(): each input's place in _flatten's list
        self.flat_length = 0

    @classmethod
    def of(cls, gm: torch.fx.GraphModule, compiled: Callable[..., Any]) -> _DirectCall | None:
        """The direct call of a graph dynamo traced from ``_update``, or None where it cannot have one."""
        paths: list[tuple[tuple[int, ...], int | None]] = []
        values = []
        for node in gm.graph.nodes:
            if node.op == "output" and node.args != ((),):
                return None
            if node.op != "placeholder":
                continue
            path: list[int] = []
            source = getattr(node, "_dynamo_source", None)
            dim = None
            if isinstance(source, TensorPropertySource) and source.prop is TensorProperty.SIZE:
                source, dim = source.base, source.idx
            while isinstance(source, GetItemSource) and isinstance(source.index, int):
                path.append(source.index)
                source = source.base
            if not (isinstance(source, LocalSource) and source.local_name == "slices"):
                return None
            value = node.meta.get("example_value")
            if dim is None and not isinstance(value, Tensor):  # an int or float traced as a symbol: dynamo's own
                return None
            paths.append((tuple(reversed(path)), dim))
            values.append(value)
        direct = cls(paths, compiled)
        if direct.sizes and not direct.trace_sizes(values):
            return None
        return direct

    def trace_sizes(self, values: list[Any]) -> bool:
        """For a graph with symbolic sizes: which size input gives each tensor's symbolic sizes (traced ``values``).
        False where a tensor's size is an expression of the symbols, not one of them (no direct calls then)."""
        if self.inner is None:
            return False
        symbols = {values[i].node.expr: i for i in self.sizes}
        for i in self.tensors:
            for dim, size in enumerate(values[i].shape):
                if _is_symbol(size):
                    if size.node.expr not in symbols:
                        return False
                    self.symbolic.append((i, dim, symbols[size.node.expr]))
            self.symbolic_strides |= {(i, d) for d, n in enumerate(values[i].stride()) if _is_symbol(n)}
        return True

    def inputs(self, slices: list[Slice]) -> list[Any]:
        """The graph's inputs, found in ``slices``: by their places in :func:`_flatten`'s list where the graph has
        no size inputs and the slices are as long as when it was guarded (one C-level pick), else path by path."""
        if self.flat_places is not None:
            flat = _flatten(slices)
            if len(flat) == self.flat_length:
                return [flat[i] for i in self.flat_places]
        inputs = []
        for path, dim in self.paths:
            value: Any = slices
            for index in path:
                value = value[index]
            inputs.append(value if dim is None else value.size(dim))
        return inputs

    def guard(self, slices: list[Slice]) -> bool:
        """Record what the graph was compiled for from its inputs in ``slices`` (each tensor's type, dtype, device,
        sizes and strides; a symbolic size or stride: any), for :meth:`__call__` to check; False where an input is
        not a tensor (no direct calls)."""
        inputs = [x for i, x in enumerate(self.inputs(slices)) if i in self.tensors]
        if not all(type(x) in (Tensor, torch.nn.Parameter) for x in inputs):
            return False
        symbolic = {(i, dim) for i, dim, _ in self.symbolic}
        sizes, strides = [], []
        for i, x in zip(self.tensors, inputs):
            sizes.append([None if (i, d) in symbolic else n for d, n in enumerate(x.size())])
            strides.append([None if (i, d) in self.symbolic_strides else n for d, n in enumerate(x.stride())])
        self.tensor_guards = _tensor_guards(inputs, sizes, strides)
        if not self.sizes:
            self.flat_places, self.flat_length = _flat_places(slices, [path for path, _ in self.paths])
        return True

    def __call__(self, slices: list[Slice]) -> bool:
        """Run the graph on ``slices``; False, with nothing written, where an input's type, dtype, device, sizes or
        strides are not the ones it was compiled for (checked in one C++ call, as dynamo's own tensor guards) or, for
        a graph with symbolic sizes, where the sizes break the trace's shape guards."""
        inputs = self.inputs(slices)
        tensors = [inputs[i] for i in self.tensors] if self.sizes else inputs
        if self.tensor_guards is None or not self.tensor_guards.check(*tensors):
            return False
        if self.sizes:
            if any(inputs[i].size(dim) != inputs[s] for i, dim, s in self.symbolic):
                return False
            sizes = tuple(inputs[i] for i in self.sizes)
            served = self.sizes_served.get(sizes)
            if served is None:
                served = self.frame_guards is not None and self.frame_guards.check({**self.arguments, "slices": slices})
                self.sizes_served[sizes] = served
            if not served:
                return False
        if self.inner is None:
            self.compiled(*inputs)
            return True
        if any(inputs[i].data_ptr() % _ALIGNMENT for i in self.aligned):
            return False
        mutated = [inputs[i] for i in self.mutated]
        self.inner.current_callable(inputs)  # a boxed call: it empties ``inputs``
        torch.autograd.graph.increment_version(mutated)
        return True


#: ``graphs='per_tensor'``: one tensor's slice, its graph signature and its layout.
Single = tuple[Slice, tuple[Any, ...], tuple[Any, ...]]
_SCALARS, _CLIP = 7, 8
_FRESH = (5, _SCALARS, _CLIP)  # a Slice's fields that may be new tensors at every step: gradients, scalars, clip


class _TensorCalls:
    """``graphs='per_tensor'``: a list slice's tensors called directly one after the other, with the checks of
    :meth:`_DirectCall.__call__` done once for the slice instead of once for every tensor (≈ 10 µs each).

    Built after a step in which every tensor of the slice was called directly: each tensor's graph and inputs are then
    known, and of those inputs only the gradient, the step's scalars and the clip factor can be other tensors at the
    next step (the parameters' and states' views are :meth:`CompiledStep.split_per_tensor`'s, one object kept while
    their data pointers stay). So a step checks that the views are that same object, the gradients, the first
    tensor's scalars and the clip factor against the ones it was built with (dynamo's ``TensorGuards``: type, dtype,
    device, sizes and strides, in one C++ call; every tensor's scalars are made alike), and that dynamo still holds
    every graph; then it calls each tensor's compiled module. Where a check fails, nothing is written and the slice
    takes the checked path, which builds the calls again."""

    def __init__(self, calls: list[_DirectCall], views: Any, grads: list[Tensor], singles: list[Single]) -> None:
        self.calls = calls
        self.distinct = list({id(call): call for call in calls}.values())
        self.views = views
        self.inputs: list[list[Any]] = []  # per tensor, its graph's inputs at the build; the fresh ones replaced
        self.fresh: list[list[tuple[int, int, int | None]]] = []  # per tensor: (input, Slice field, index in it)
        self.mutated: list[Tensor] = []
        self.aligned: list[tuple[int, int]] = []  # (tensor, input) of fresh inputs the kernels assume aligned
        for n, (call, (single, _, _)) in enumerate(zip(calls, singles)):
            inputs = call.inputs([single])
            fresh = [(i, path[1], path[2] if len(path) > 2 else None)
                     for i, (path, dim) in enumerate(call.paths) if dim is None and path[1] in _FRESH]  # fmt: skip
            self.inputs.append(inputs)
            self.fresh.append(fresh)
            self.mutated += [inputs[i] for i in call.mutated]
            self.aligned += [(n, i) for i, _, _ in fresh if i in call.aligned]
        tensors = [*grads, *self.checked(singles[0][0])]
        self.guards, self.guarded = _tensor_guards(tensors), len(tensors)

    @classmethod
    def of(
        cls, served: list[_DirectCall | None], views: Any, grads: list[Tensor], singles: list[Single]
    ) -> _TensorCalls | None:
        """The slice's calls where every tensor was ``served`` directly by inductor's module; else None."""
        if not all(call is not None and call.inner is not None for call in served):
            return None
        return cls(served, views, grads, singles)  # type: ignore[arg-type]

    @staticmethod
    def checked(single: Slice) -> list[Tensor]:
        """The first tensor's slice's fresh inputs besides the gradient: its scalars, the clip factor if any."""
        return [single[_SCALARS]] if single[_CLIP] is None else [single[_SCALARS], single[_CLIP]]

    def __call__(self, update: _CompiledUpdate, views: Any, grads: list[Tensor], singles: list[Single]) -> bool:
        """Step every tensor of the slice; False, with nothing written, where a check fails (see the class)."""
        tensors = [*grads, *self.checked(singles[0][0])]
        if views is not self.views or len(tensors) != self.guarded or not self.guards.check(*tensors):
            return False
        if len(update.live_calls(self.distinct)) < len(self.distinct):
            return False
        arguments = []
        for inputs, fresh, (single, _, _) in zip(self.inputs, self.fresh, singles):
            args = inputs.copy()
            for i, field, index in fresh:
                args[i] = single[field] if index is None else single[field][index]
            arguments.append(args)
        if any(arguments[n][i].data_ptr() % _ALIGNMENT for n, i in self.aligned):
            return False
        for call, args in zip(self.calls, arguments):
            call.inner.current_callable(args)  # a boxed call: it empties ``args``
        torch.autograd.graph.increment_version(self.mutated)
        return True


def _tensor_guards(
    tensors: list[Tensor], sizes: list[list[int | None]] | None = None, strides: list[list[int | None]] | None = None
) -> TensorGuards:
    """Dynamo's guards of each tensor's type, dtype, device, sizes and strides (None in ``sizes`` or ``strides``: any
    size or stride there; by default those of ``tensors``), checked in one C++ call."""
    sizes = [list(t.size()) for t in tensors] if sizes is None else sizes
    strides = [list(t.stride()) for t in tensors] if strides is None else strides
    return TensorGuards(*tensors, dynamic_dims_sizes=sizes, dynamic_dims_strides=strides)


def _flatten(slices: list[Slice]) -> list[Any]:
    """Every tensor (or None) of ``slices`` in one list: per slice, its params, grads, each state list, scalars and
    clip factor. Built by list extends, it is cheaper than walking each input's path (hundreds in a large group)."""
    flat: list[Any] = []
    for s in slices:
        flat += s[4]
        flat += s[5]
        for states in s[6]:
            flat += states
        flat.append(s[7])
        flat.append(s[8])
    return flat


def _flat_places(slices: list[Slice], paths: list[tuple[int, ...]]) -> tuple[list[int] | None, int]:
    """Each path's place in ``_flatten(slices)`` and that list's length; None where a path is not one of its items."""
    places: dict[tuple[int, ...], int] = {}
    for i, s in enumerate(slices):
        fields = [((i, 4), s[4]), ((i, 5), s[5]), *(((i, 6, k), states) for k, states in enumerate(s[6]))]
        for prefix, items in fields:
            for j in range(len(items)):
                places[(*prefix, j)] = len(places)
        places[(i, 7)] = len(places)
        places[(i, 8)] = len(places)
    if not all(path in places for path in paths):
        return None, 0
    return [places[path] for path in paths], len(places)


#: The bytes inductor's GPU kernels assume an input's address is a multiple of (its ``inputs_to_check``).
_ALIGNMENT: int = getattr(inductor_utils, "ALIGNMENT", 16)


def _is_symbol(size: Any) -> bool:
    """Whether a traced size or stride is symbolic (not a plain int, nor a symbol the trace specialized)."""
    return isinstance(size, torch.SymInt) and not size.node.expr.is_number


def _inductor_module(compiled: Callable[..., Any]) -> Any:
    """The one ``CompiledFxGraph`` inside AOT autograd's wrappers of ``compiled``, when calling it alone does all the
    wrappers would: no outputs (so no mutation or alias for the wrappers to apply afterwards), no lifted parameters
    prepended to the inputs (the inputs whose alignment the kernels assume are checked by the direct call:
    :attr:`_DirectCall.aligned`). None otherwise, or if not found (another torch may wrap differently: the whole
    wrapper is then called)."""
    graphs, extra_inputs, seen = [], [], set()
    pending: list[tuple[Any, int]] = [(compiled, 0)]
    while pending:
        obj, depth = pending.pop()
        if id(obj) in seen or depth > 12:
            continue
        seen.add(id(obj))
        if isinstance(obj, CompiledFxGraph):
            graphs.append(obj)
            continue
        code = getattr(obj, "__code__", None)
        for name, cell in zip(code.co_freevars if code else (), getattr(obj, "__closure__", None) or ()):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if name == "params_buffers_flat":
                extra_inputs.append(value)
            elif callable(value) or isinstance(value, CompiledFxGraph):
                pending.append((value, depth + 1))
        for attr in ("__wrapped__", "compiled_fn", "_inner_compiled_fn"):
            if (value := getattr(obj, attr, None)) is not None:
                pending.append((value, depth + 1))
    if len({id(g) for g in graphs}) != 1 or any(extra_inputs):
        return None
    graph = graphs[0]
    if graph.current_callable is None or graph.output_strides != []:
        return None
    return graph


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
        self.graphs: list[_DirectCall | None] = []  # every graph the backend compiled, in order
        self.direct: dict[tuple[Any, ...], _DirectCall] = {}  # by flat layout
        self.by_sizes: dict[tuple[Any, ...], list[_DirectCall]] = {}  # graphs with symbolic sizes, by layout
        inductor = lookup_backend("inductor")

        def backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
            lower_realize_in_inductor()
            with optimizer_codegen():
                compiled = inductor(gm, example_inputs)
            self.graphs.append(_DirectCall.of(gm, compiled))
            return compiled

        fn = types.FunctionType(self.code, _update.__globals__, name)
        self.through_dynamo = torch.compile(fn, fullgraph=True, dynamic=dynamic, backend=backend)

    def direct_call(self, layout: tuple[Any, ...]) -> _DirectCall | None:
        """The graph for this layout, while dynamo still holds it (``torch._dynamo.reset()`` drops them all)."""
        if not self.allows_direct or layout not in self.direct:
            return None
        live = self.live_calls(list(self.direct.values()))
        if len(live) < len(self.direct):  # some dropped since (a reset drops all): those go through dynamo again
            self.direct = {key: call for key, call in self.direct.items() if call in live}
        return self.direct.get(layout)

    def sized_calls(self, layout: tuple[Any, ...]) -> list[_DirectCall]:
        """The graphs with symbolic sizes of this layout, each to be tried in turn, while dynamo still holds them."""
        if not self.allows_direct or layout not in self.by_sizes:
            return []
        calls = self.by_sizes[layout] = self.live_calls(self.by_sizes[layout])
        return calls

    def live_calls(self, calls: list[_DirectCall]) -> list[_DirectCall]:
        """Those of ``calls`` whose graph dynamo still holds: a reset drops every graph, and the graphs compiled
        after it are new entries of the cache, so an entry's guards tell which graph is still in it."""
        live = {id(entry.guard_manager) for entry in _debug_get_cache_entry_list(self.code)}
        return [call for call in calls if id(call.frame_guards) in live]

    def __call__(self, kernel: Callable[..., Any], slices: list[Slice], layout: tuple[Any, ...]) -> None:
        """Through dynamo; a graph compiled here is kept for direct calls of its layout where it can have them (see
        :class:`_DirectCall`): a list group's only if its tensors were plain and unaliased when it was traced."""
        compiled_before = len(self.graphs)
        # Symbolic sizes: the options' ints (AGR's stop step, a total step count) stay constants of the graph, as in a
        # graph traced for fixed sizes (dynamic=True would make each one a symbol, an input of the graph).
        with torch._dynamo.config.patch(specialize_int=self.dynamic):
            self.through_dynamo(kernel, slices, self.run_by_run)
        new = self.graphs[compiled_before:]
        if not (self.allows_direct and len(new) == 1 and new[0] is not None):
            return
        plain = not _has_lists(layout) or (new[0].inner is not None and _PlainAndUnaliased()(slices))
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


#: The tensor types a direct call takes as they are (a subclass may change what an op does, which dynamo must see).
_PLAIN = (Tensor, torch.nn.Parameter)


class _PlainAndUnaliased:
    """Whether every tensor of a step's list slices is a plain tensor of its slice's dtype and device, and no two
    share storage: what dynamo's guards would check (with the sizes and strides, which inductor's module checks), and
    what lets the graph's inputs be the tensors themselves (AOT autograd merges aliased inputs into one).

    Cheap from the second step on: parameters and states keep their storage from step to step, so their full check is
    redone only where one of their data pointers moved (a new tensor, ``p.data = …``, a loaded state; a tensor cannot
    change dtype or device, or come to share another's storage, without its data pointer moving). The gradients,
    often new tensors every step, are checked in full every time."""

    def __init__(self) -> None:
        self.owned_pointers: list[int] | None = None
        self.owned_storages: set[int] = set()

    def __call__(self, slices: list[Slice]) -> bool:
        lists = [s for s in slices if s[3] is None]  # a flat group's buffers are the engine's own
        owned = [
            (s[4][0].dtype, s[4][0].device, [*s[4], *(t for ts in s[6] for t in ts if t is not None)]) for s in lists
        ]
        pointers = [t.data_ptr() for _, _, tensors in owned for t in tensors]
        if pointers != self.owned_pointers:
            self.owned_pointers, self.owned_storages = None, set()
            if not all(_add_storages(tensors, dtype, device, self.owned_storages) for dtype, device, tensors in owned):
                return False
            self.owned_pointers = pointers
        # A gradient's dtype and device are its parameter's (torch's own rule for ``.grad``), and a direct call's
        # tensor guards check them again: what is left to check here is that it is plain and shares no storage.
        grads = [g for s in lists for g in s[5]]
        if not all(type(g) in _PLAIN for g in grads):
            return False
        storages = {g.untyped_storage().data_ptr() for g in grads}
        return len(storages) == len(grads) and storages.isdisjoint(self.owned_storages)


def _add_storages(tensors: list[Tensor], dtype: torch.dtype, device: torch.device, storages: set[int]) -> bool:
    """Add each tensor's storage to ``storages``; False at the first that is not a plain tensor of this dtype and
    device, or whose storage is there already."""
    for t in tensors:
        if type(t) not in _PLAIN or t.dtype != dtype or t.device != device:
            return False
        storage = t.untyped_storage().data_ptr()
        if storage in storages:
            return False
        storages.add(storage)
    return True


class CompiledStep:
    """Runs an optimizer's groups through its compiled update; falls back to eager on failure."""

    def __init__(self, optimizer: OptarenaOptimizer, *, per_tensor: bool = False) -> None:
        self.optimizer = optimizer
        self.per_tensor = per_tensor and optimizer.elementwise_kernel
        self.compiled_once = False
        self.plain_and_unaliased = _PlainAndUnaliased()
        # graphs='per_tensor': per list slice (by position), the views of split_per_tensor and what they were made of,
        # and its tensors' direct calls (None: not every tensor was called directly in the last checked step)
        self.views: dict[int, tuple[Any, list[int], list[Any]]] = {}
        self.tensor_calls: dict[int, _TensorCalls | None] = {}

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
        singles = [single for _, _, slice_singles in by_slice for single in slice_singles]
        stepped_whole, done = False, 0  # what an eager fallback must not step again
        try:  # a failure to compile raises before its graph writes any tensor (a flat group's own buffers aside)
            if whole:
                update = _compiled_update_for(cls, tuple(s[:4] for s in whole))
                layout = _layout(whole)
                if not self.called_directly(update.direct_call(layout), whole, layout):
                    update(cls.multi_tensor_kernel, whole, layout)
                stepped_whole = True
            sized: dict[tuple[int, tuple[Any, ...]], list[_DirectCall]] = {}  # this step's, by update and layout
            for k, grads, slice_singles in by_slice:
                update = _compiled_update_for(cls, slice_singles[0][1], dynamic=True)
                tensor_calls = self.tensor_calls.get(k)
                if tensor_calls is not None and tensor_calls(update, self.views[k], grads, slice_singles):
                    done += len(slice_singles)
                    continue
                served: list[_DirectCall | None] = []
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
                self.tensor_calls[k] = _TensorCalls.of(served, self.views[k], grads, slice_singles)
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
            _update(cls.multi_tensor_kernel, [single for single, _, _ in singles[done:]])
        self.compiled_once = True
        for flat in flats:
            flat.store()

    def split_per_tensor(self, slices: list[Slice]) -> tuple[list[Slice], list[tuple[int, list[Tensor], list[Single]]]]:
        """``graphs='per_tensor'``: each list slice whose tensors are plain, unaliased and contiguous, and whose
        transforms read no shape (:func:`~optarena.optim.transforms.reads_shape`), becomes one slice per tensor, each
        with its graph signature and layout: its parameter, gradient and states as flat views of their values
        (:func:`_values_view`; a parameter's and its states' kept from step to step while their data pointers stay),
        AGR's ``'weights'`` scope as a float of its own (:data:`AGR_IN_SCOPE`); returned per list slice with its
        place and gradients. The other slices stay together for the whole graph."""
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
            one_step = scalars.numel() == floats + 1  # one step count for every tensor, or one each
            by_flag: list[Tensor] = []
            if flagged and one_step:  # two scalar tensors for all: out of scope, in scope
                by_flag = [torch.cat((scalars[:floats], scalars.new_full((1,), f), scalars[floats:])) for f in (0, 1)]
            singles: list[Single] = []
            for i, (param, tensor_states, scoped, single_layout) in enumerate(cached[2]):
                if one_step:
                    single_scalars = by_flag[scoped] if flagged else scalars
                else:
                    flag = (scalars.new_full((1,), scoped),) if flagged else ()  # new_tensor would wait for the device
                    single_scalars = torch.cat((scalars[:floats], *flag, scalars[floats + i :][:1]))
                grad = [_values_view(grads[i], (grads[i].numel(),))]
                single = (static, single_names, transforms, None, param, grad, tensor_states, single_scalars, clip)
                singles.append((single, signature, single_layout))
            by_slice.append((k, grads, singles))
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

    def called_directly(self, direct: _DirectCall | None, slices: list[Slice], layout: tuple[Any, ...]) -> bool:
        """Run ``direct`` on ``slices`` where its checks pass (list slices: :class:`_PlainAndUnaliased`; every
        input: :meth:`_DirectCall.__call__`); False, with nothing written, where there is none or a check fails."""
        if direct is None:
            return False
        if _has_lists(layout) and not self.plain_and_unaliased(slices):
            return False
        return direct(slices)


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
    return optimizer
