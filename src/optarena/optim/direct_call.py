"""Calling a compiled optimizer graph past dynamo, and the checks that make that sound.

Dynamo's per-call work (frame entry, guards on every input and constant) is there to decide which graph fits; for
the compiled step (:mod:`optarena.optim.compiled`) the engine knows most of that itself and checks the rest, so from
a graph's second step on it calls inductor's compiled module directly:

* :class:`DirectCall`: one graph, its inputs found in the step's slices, checked (every tensor's type, dtype,
  device, sizes and strides in one C++ call; a graph with symbolic sizes, its sizes against the trace's guards);
* :class:`TensorCalls`: ``graphs='per_tensor'``, a list slice's tensors, one graph call each, checked once a step
  for all of them;
* :class:`PlainAndUnaliased`: a list group's tensors are plain tensors of their slice's dtype and device, with no
  storage in common (what lets the graph's inputs be the user's tensors themselves).

Where a check fails, nothing is written and the step goes through dynamo, which finds or compiles the graph that fits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch._C._dynamo.guards import TensorGuards
from torch._dynamo.source import GetItemSource, LocalSource, TensorProperty, TensorPropertySource
from torch._inductor import utils as inductor_utils
from torch._inductor.output_code import CompiledFxGraph

from optarena.optim.transforms import Pipeline

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


class DirectCall:
    """A compiled graph called without dynamo: its inputs' places in the slices, and the callable.

    Dynamo's per-call work (frame entry, guards on every input and constant) is there to decide which graph fits.
    The engine knows most of that without it: the graph depends on the optimizer class and the slices' signature
    (static hyperparameters, float names, transforms, a flat group's shapes), which select the compiled update
    (:mod:`optarena.optim.compiled`), and on what its ``_layout`` records (per slice: flat or list, dtype, device,
    tensor count, how many step counts, the clip factor's dtype, unused states). A flat group's buffers are the
    engine's own, contiguous and unaliased. A list group's tensors are the user's: before each direct call the engine
    checks that they are plain tensors of the slice's dtype and device with no storage in common
    (:class:`PlainAndUnaliased`), and for every graph it checks each input's type, dtype, device, sizes and strides
    against those the graph was compiled for (dynamo's ``TensorGuards``, in one C++ call); where either fails, the
    step goes through dynamo, which finds or compiles the graph that fits. The graph must also leave nothing for
    dynamo to do after it (no outputs: every effect is an in-place write), and every input must be found in the
    slices by indexing.
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
        # giving the symbol); dynamo's guards of its frame (set by the compiled update), which decide the sizes it
        # serves (what the trace assumed of them: at least 2, a range, ...); which sizes passed them (the guards on
        # sizes are a function of the sizes: checked once per size, not at every call).
        self.sizes = [i for i, (_, dim) in enumerate(paths) if dim is not None]
        self.symbolic: list[tuple[int, int, int]] = []
        self.symbolic_strides: set[tuple[int, int]] = set()  # (input, dim): any stride (a size-1 dim's)
        self.frame_guards: Any = None  # set by the compiled update: its cache entry's guards
        self.arguments: dict[str, Any] = {}  # set by the compiled update: _update's arguments but the slices
        self.sizes_served: dict[tuple[int, ...], bool] = {}
        self.flat_places: list[int] | None = None  # set by guard(): each input's place in _flatten's list
        self.flat_length = 0

    @classmethod
    def of(cls, gm: torch.fx.GraphModule, compiled: Callable[..., Any]) -> DirectCall | None:
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
_GRADS, _SCALARS, _CLIP = 5, 7, 8
_FRESH = (_GRADS, _SCALARS, _CLIP)  # a Slice's fields that may be new tensors at every step


class TensorCalls:
    """``graphs='per_tensor'``: a list slice's tensors called directly one after the other, with the checks of
    :meth:`DirectCall.__call__` done once for the slice instead of once for every tensor (≈ 10 µs each).

    Built after a step in which every tensor of the slice was called directly: each tensor's graph and inputs are then
    known, and of those inputs only the gradient, the step's scalars and the clip factor can be other tensors at the
    next step (the parameters' and states' views are :meth:`CompiledStep.split_per_tensor`'s, one object kept while
    their data pointers stay). So a step checks that the views are that same object, the gradients, the first
    tensor's scalars and the clip factor against the ones it was built with (dynamo's ``TensorGuards``: type, dtype,
    device, sizes and strides, in one C++ call; every tensor's scalars are made alike), and that dynamo still holds
    every graph; then it calls each tensor's compiled module with its kept inputs and the step's three. Where a check
    fails, nothing is written and the slice takes the checked path, which builds the calls again.

    Each gradient reaches its module flat (the graph's input: the module may read its size): as it is where it has
    one dimension, else as a view made here with one ``view``; the checked path's view is also detached, which only
    dynamo needs (its trace would follow the view's base), at twice the cost."""

    def __init__(self, calls: list[DirectCall], views: Any, grads: list[Tensor], singles: list[Single]) -> None:
        self.calls = calls
        self.distinct = list({id(call): call for call in calls}.values())
        self.views = views
        # Per tensor: its module, its graph's inputs at the build with the fresh ones left None (a step's gradients
        # are not kept alive here), and where its gradient, scalars and clip factor go among them (None: not an input).
        self.modules = [call.inner.current_callable for call in calls]
        self.inputs: list[list[Any]] = []
        self.places: list[tuple[int | None, int | None, int | None]] = []
        # A gradient of more than one dimension gets a flat view at every call (≈ 1 µs); one of one dimension is its
        # own (the guards below fix every gradient's sizes).
        self.flatten = [grad.dim() != 1 for grad in grads]
        self.mutated: list[Tensor] = []
        self.aligned: list[tuple[int, int]] = []  # (tensor, Slice field) of fresh inputs the kernels assume aligned
        self.mutates_fresh = False  # a graph writes a gradient or scalar (not so today): no TensorCalls then
        for n, (call, (single, _, _)) in enumerate(zip(calls, singles)):
            inputs = call.inputs([single])
            place: dict[int, int] = {}
            for i, (path, dim) in enumerate(call.paths):
                if dim is None and path[1] in _FRESH:
                    place[path[1]] = i
                    inputs[i] = None
                    self.mutates_fresh = self.mutates_fresh or i in call.mutated
                    if i in call.aligned:
                        self.aligned.append((n, path[1]))
            self.mutated += [inputs[i] for i in call.mutated]
            self.inputs.append(inputs)
            self.places.append((place.get(_GRADS), place.get(_SCALARS), place.get(_CLIP)))
        first = singles[0][0]
        tensors = self.checked(grads, first[_SCALARS], first[_CLIP])
        self.guards, self.guarded = _tensor_guards(tensors), len(tensors)

    @classmethod
    def of(
        cls, served: list[DirectCall | None], views: Any, grads: list[Tensor], singles: list[Single]
    ) -> TensorCalls | None:
        """The slice's calls where every tensor was ``served`` directly by inductor's module; else None."""
        if not all(call is not None and call.inner is not None for call in served):
            return None
        calls = cls(served, views, grads, singles)  # type: ignore[arg-type]
        return None if calls.mutates_fresh else calls

    @staticmethod
    def checked(grads: list[Tensor], scalars: Tensor, clip: Tensor | None) -> list[Tensor]:
        """What a step checks of the fresh inputs: the gradients, the first tensor's scalars, the clip factor if any."""
        return [*grads, scalars] if clip is None else [*grads, scalars, clip]

    def __call__(
        self,
        live_calls: Callable[[list[DirectCall]], list[DirectCall]],
        views: Any,
        grads: list[Tensor],
        scalars: list[Tensor],
        clip: Tensor | None,
    ) -> bool:
        """Step every tensor of the slice (its gradient in ``grads``, its scalars in ``scalars``); False, with nothing
        written, where a check fails (see the class). ``live_calls``: those of the given calls whose graphs dynamo
        still holds (the compiled update's)."""
        tensors = self.checked(grads, scalars[0], clip)
        if views is not self.views or len(tensors) != self.guarded or not self.guards.check(*tensors):
            return False
        if len(live_calls(self.distinct)) < len(self.distinct):
            return False
        if self.aligned:
            fresh = {_GRADS: grads, _SCALARS: scalars, _CLIP: [clip] * len(grads)}
            if any(fresh[field][n].data_ptr() % _ALIGNMENT for n, field in self.aligned):
                return False
        calls = zip(self.modules, self.inputs, self.places, self.flatten, grads, scalars)
        for module, inputs, (g, s, c), flatten, grad, tensor_scalars in calls:
            args = inputs.copy()
            if g is not None:
                args[g] = grad.view(-1) if flatten else grad  # a contiguous gradient (checked)
            if s is not None:
                args[s] = tensor_scalars
            if c is not None:
                args[c] = clip
            module(args)  # a boxed call: it empties ``args``
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
    :attr:`DirectCall.aligned`). None otherwise, or if not found (another torch may wrap differently: the whole
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


#: The tensor types a direct call takes as they are (a subclass may change what an op does, which dynamo must see).
_PLAIN = (Tensor, torch.nn.Parameter)


class PlainAndUnaliased:
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
