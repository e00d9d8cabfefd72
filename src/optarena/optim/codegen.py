"""How inductor generates the code of an optimizer's compiled step (:mod:`optarena.optim.compiled`).

Before the first graph, inductor's probes of the CPU's vector instruction sets start early and side by side
(:func:`start_instruction_set_probes`). Five changes, made only while an optimizer's graph is compiled
(:func:`optimizer_codegen`), never to a user's graph:

* before an input is written in place, only the values that read it and are still to be used are computed into
  buffers (:func:`realize_only_live_reads`): the same code, from 374 scheduler nodes instead of 994 (Adaburst's
  ResNet-18 graph);
* fewer fusion attempts per node (:data:`FUSION_PAIR_ATTEMPTS`): the same kernels in half the scheduling time;
* ``__restrict__`` on every kernel pointer no other argument reaches (:func:`restrict_unaliased_pointers`): the loops
  load their per-tensor scalars once, not once per vector;
* per-tensor scalars that are equal are computed and stored once (:class:`ShareEqualScalars`): where every tensor of
  a group has the same step count, a bias correction is one value, not one stacked entry (and one view) per tensor;
* and, in a graph called once per tensor, those one-value scalars are computed first, into one buffer
  (:func:`_pack_realized_scalars`): one allocation a call instead of one per scalar.
"""

from __future__ import annotations

import contextlib
import operator
import os
import platform
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch._inductor.codegen.common import KernelArgs
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files
from torch.torch_version import TorchVersion

#: How many later nodes inductor's scheduler tries to fuse with each node that reads a buffer (its default is 64).
#: Every tensor's loop reads the step's one hyperparameter buffer, so with the default each of a large group's
#: ~1,000 nodes is tried against 64 others of other tensors, fusions that the tensors' own buffers never allow:
#: half of a ResNet-18 graph's scheduling time. 8 still reaches every fusion of one tensor's update (the generated
#: code is unchanged, checked by tests/test_compiled.py) at half the scheduling time (docs/performance.md).
FUSION_PAIR_ATTEMPTS = 8

#: The least data (bytes) two loops with no producer between them must share for inductor to fuse them into one
#: (its default is 10). Two tensors' loops of one size share only the step's scalars (a bias correction, the
#: hyperparameters: 8 bytes each); fused, one loop streams both tensors' parameters, gradients and states at once,
#: which made a ResNet-18 step clearly slower on one thread. 128 bytes is more than all of a kernel's scalars and less
#: than the gradient of any tensor of 32 or more values, so a tensor's own loops still fuse.
SEPARATE_TENSORS_BELOW_BYTES = 128

#: Whether this torch's inductor asserts in its loop reordering after fusion once a foreach kernel has absorbed another
#: (pytorch/pytorch#176591, fixed by #176849: torch 2.13 has the fix; older ones are taken to lack it): a foreach
#: update beside per-tensor reductions of different shapes on a GPU — AGR's Σ|g| — trips it (AGR's whole graph on an
#: H200 with torch 2.11 stopped there, an ``AssertionError`` with no message). There an optimizer's graph is compiled
#: without that pass: its loops run over whole contiguous tensors and have no loop order to choose.
LOOP_REORDERING_ASSERTS = TorchVersion(torch.__version__) < (2, 13)


_PROBES: list[threading.Thread] = []  # this process's instruction-set probe thread, once started
_FIRST_VALID: list[Any] = []  # the first candidate the probes found valid, in inductor's order of preference


def start_instruction_set_probes() -> None:
    """Start inductor's probes of this CPU's vector instruction sets now, in a thread of their own, and only until
    the one inductor will pick is known (once a process; nothing where inductor would not run them as expected here).

    Why: before its first CPU kernel in a process, inductor picks the widest instruction set that both the CPU and
    the C++ compiler support by building and loading a small test library for each candidate
    (``torch._inductor.cpu_vec_isa``), one after the other, when it generates the first kernel's code, and then uses
    the first that passed. With an empty cache (a machine's first compile: a new container, a CI job) that is six
    builds here, three of which compile inductor's vector headers: 7-11 s of a first compiled ResNet-18 step on two
    cores, more than a per-tensor graph's own compile (``benchmarks/compile_time.py``, docs/performance.md). Started
    when a compiled step is made, they run while the user builds the model and data and while dynamo, AOT autograd
    and inductor's lowering work, at a lower priority (a nice value of 10, which the compiler processes inherit): the
    compile's own thread keeps its core. They probe the candidates in inductor's order and stop at the first that
    passes (on an AVX-512 machine, three builds instead of six): where neither ``cpp.simdlen`` nor
    ``ATEN_CPU_CAPABILITY`` chooses another, inductor picks that first one (``pick_vec_isa``), so inductor's list of
    instruction sets, which waits for the probes (:func:`wait_for_instruction_set_probes`), is that one; where they
    do choose, inductor's own list probes the rest, as it would have. With a filled cache each probe only loads its
    library. Only on x86-64 Linux, where inductor probes the instruction sets that the CPU's flags name
    (``x86_isa_checker``), and only where ``cpp.vec_isa_ok`` does not decide for it; if this torch's module lacks
    what this reads, inductor probes as usual."""
    if _PROBES or sys.platform != "linux" or platform.machine() != "x86_64":
        return
    if torch._inductor.config.cpp.vec_isa_ok is not None:
        return
    try:
        from torch._inductor import cpu_vec_isa

        flags = cpu_vec_isa.x86_isa_checker()
        candidates = [isa for isa in cpu_vec_isa.supported_vec_isa_list if all(f in flags for f in str(isa).split())]
        valid_list = cpu_vec_isa.valid_vec_isa_list
    except (ImportError, AttributeError):
        return
    name = "optarena-probe-instruction-sets"
    thread = threading.Thread(target=_probe_until_valid, args=(candidates,), name=name, daemon=True)
    thread.start()
    _PROBES.append(thread)
    if not getattr(valid_list, "_optarena_waits", False):

        def valid_vec_isa_list() -> Any:
            wait_for_instruction_set_probes()
            if _FIRST_VALID and torch._inductor.config.cpp.simdlen is None and not os.getenv("ATEN_CPU_CAPABILITY"):
                return list(_FIRST_VALID)  # what pick_vec_isa takes from inductor's whole list: its first
            return valid_list()

        valid_vec_isa_list._optarena_waits = True  # type: ignore[attr-defined]
        cpu_vec_isa.valid_vec_isa_list = valid_vec_isa_list  # pick_vec_isa looks it up here at every call


def _probe_until_valid(candidates: list[Any]) -> None:
    """Run the candidates' probes (each result is cached by inductor) at a lower priority, in order, up to the first
    that passes. A failure here is inductor's to report: it probes again, where it would have anyway, and raises or
    falls back there as without this thread."""
    with contextlib.suppress(OSError):  # a priority it may not lower: the probes run at the usual one
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)  # Linux: this thread and its children
    for isa in candidates:
        try:
            if bool(isa):
                _FIRST_VALID.append(isa)
                return
        except Exception:  # inductor's own probe reports it
            return


def wait_for_instruction_set_probes() -> None:
    """Return once the probes :func:`start_instruction_set_probes` started have finished."""
    for thread in _PROBES:
        thread.join()


def _storage_root(name: str) -> str | None:
    """The buffer whose memory a kernel argument points into (a view's or a stacked slice's base; a mutation's
    target), or None when inductor's IR does not say plainly (then nothing of that kernel is restricted)."""
    from torch._inductor import ir
    from torch._inductor.virtualized import V

    for _ in range(8):
        if view := re.match(r"(?:as_strided|reinterpret_tensor)\((\w+),", name):
            name = view.group(1)
        name = getattr(V.graph.scheduler, "mutation_real_name", {}).get(name, name)
        buffer = V.graph.try_get_buffer(name)
        try:
            layout = None if buffer is None else buffer.get_layout()
        except (AttributeError, NotImplementedError):
            return None
        if isinstance(layout, ir.NonOwningLayout):  # a slice of a stacked buffer: its base
            name = layout.view.get_name()
            continue
        if type(layout) in (ir.FixedLayout, ir.FlexibleLayout):
            return name
        return None
    return None


_RESTRICTING = threading.local()  # set while this thread compiles an optimizer's graph


def _declare_unaliased_pointers_restrict(arg_defs: list[str], call_args: list[str], arg_types: list[str]) -> list[str]:
    """``arg_defs`` with ``__restrict__`` on every pointer whose storage root no other argument shares."""
    pointers = [i for i, t in enumerate(arg_types) if t.endswith("*")]
    roots = [_storage_root(call_args[i]) for i in pointers]
    if None in roots:
        return arg_defs
    arg_defs = list(arg_defs)
    for i, root in zip(pointers, roots):
        if roots.count(root) == 1:
            arg_defs[i] = arg_defs[i].replace("* ", "* __restrict__ ", 1)
    return arg_defs


def _install_restrict_patch() -> None:
    original = KernelArgs.cpp_argdefs
    if getattr(original, "_optarena_restrict", False):
        return

    def cpp_argdefs(self: KernelArgs, *args: Any, **kwargs: Any) -> tuple[list[str], list[str], list[str]]:
        arg_defs, call_args, arg_types = original(self, *args, **kwargs)
        if getattr(_RESTRICTING, "on", False):
            arg_defs = _declare_unaliased_pointers_restrict(arg_defs, call_args, arg_types)
        return arg_defs, call_args, arg_types

    cpp_argdefs._optarena_restrict = True  # type: ignore[attr-defined]
    KernelArgs.cpp_argdefs = cpp_argdefs  # type: ignore[method-assign]


@contextlib.contextmanager
def restrict_unaliased_pointers() -> Iterator[None]:
    """While inductor generates C++, declare ``__restrict__`` every pointer of a kernel whose memory no other of its
    pointers reaches.

    Why: a loop over a tensor reads per-tensor scalars (the step's hyperparameter buffer, the bias corrections) at
    a constant index, and inductor writes those loads inside the loop. Its vector stores go through intrinsics that
    may alias any type, so the C++ compiler must assume each store can change the scalars, and it reloads and
    converts every one of them for every vector: Adan's loop reloaded twelve. With ``__restrict__`` pointers they
    are loaded once per tensor (docs/performance.md).

    Why not every pointer: inductor may pass one buffer to a kernel twice (a mutated input read by one node and
    written by another) and views of one buffer as separate pointers (a stacked buffer and its slices); declared
    ``__restrict__``, Lamb's step went to inf. So a pointer is restricted only if no other argument of the kernel
    has the same storage root (:func:`_storage_root`), and none is restricted where a root is unknown. Buffers that
    are distinct in inductor's IR are distinct memory while the kernel runs (it reuses only freed buffers, and an
    in-place reuse inside a kernel is one ``in_out_ptr``); graph inputs that alias a mutated input are merged into
    one input by AOT autograd (its synthetic base); a direct call (:class:`DirectCall`) passes the engine's own
    unaliased flat buffers. Only the optimizer's graphs get it: inductor's argument list is wrapped once, and the
    wrapper acts only in the thread that has this context open, while it is open (a user's graph, even one compiled
    by another thread meanwhile, is left as inductor writes it).
    """
    _install_restrict_patch()
    with _switched_on(_RESTRICTING):
        yield


@contextlib.contextmanager
def _switched_on(flag: threading.local) -> Iterator[None]:
    """``flag.on`` is true in this thread while the context is open (then as it was: the contexts nest)."""
    before = getattr(flag, "on", False)
    flag.on = True
    try:
        yield
    finally:
        flag.on = before


_PRUNING = threading.local()  # set while this thread lowers an optimizer's graph


def _live_values(env: dict[Any, Any]) -> set[int]:
    """The ids of every IR value an FX interpreter still holds (lists and tuples opened: a foreach op's outputs)."""
    live: set[int] = set()
    stack = list(env.values())
    while stack:
        value = stack.pop()
        if isinstance(value, (list, tuple)):
            stack.extend(value)
        else:
            live.add(id(value))
    return live


def _install_live_reads_patch() -> None:
    from torch._inductor.graph import GraphLowering

    original = GraphLowering.mark_buffer_mutated
    if getattr(original, "_optarena_live_reads", False):
        return

    def mark_buffer_mutated(self: GraphLowering, name: str) -> None:
        readers = self.name_to_users.get(name)
        if readers and getattr(_PRUNING, "on", False) and self.garbage_collect_values:
            live = _live_values(self.env)
            self.name_to_users[name] = [value for value in readers if id(value) in live]
        original(self, name)

    mark_buffer_mutated._optarena_live_reads = True  # type: ignore[attr-defined]
    GraphLowering.mark_buffer_mutated = mark_buffer_mutated  # type: ignore[method-assign]


@contextlib.contextmanager
def realize_only_live_reads() -> Iterator[None]:
    """While inductor lowers a graph, a buffer about to be mutated has only its reads that are still needed computed
    into buffers of their own first, not every value that ever read it.

    Why: inductor keeps each lowered value lazy (a loop body, inlined where it is read) and, before a buffer is
    mutated, computes every lazy value that read its old contents into a buffer (``mark_buffer_mutated``), so that no
    later read sees the new ones. It keeps a list of every value that read the buffer, including the intermediate
    values of a chain whose last value was already inlined into its consumers. An optimizer's update mutates its
    parameter and states in place at the end of its graph, so each of a tensor's intermediate values became a buffer
    that nothing reads: the scheduler then built, analysed and removed a node for each (Adaburst's ResNet-18 graph:
    994 nodes, 620 of them dead; 10 of each tensor's 16). A value that the FX interpreter no longer holds
    (``env``: it drops a value after its last user has been lowered) can never be read again, so it is left lazy;
    every value still held is computed first, as before. The scheduler then removes nothing it did not remove before,
    and the generated code is the same (tests/test_compiled.py); a ResNet-18 graph compiles 1.7-3.3 s faster
    (docs/performance.md). Only in the thread that has this context open, while it is open, as
    :func:`restrict_unaliased_pointers`.
    """
    _install_live_reads_patch()
    with _switched_on(_PRUNING):
        yield


class ShareEqualScalars(CustomGraphPass):
    """An inductor post-grad pass: equal one-value computations become one, and a stack of one value becomes it.

    A compiled step passes one step count for a group whose tensors share it, and a kernel's per-tensor scalars
    (``[1 - beta2**t for t in steps]``) are then the same computation once per tensor, stacked into one buffer by
    :func:`~optarena.optim.functional.per_tensor` and read through a view per tensor. This pass merges computations
    with the same operator and inputs (one-value results only, within one region between mutations: the graph
    mutates its inputs in place, so a value read before a mutation is never merged with one read after), then
    replaces ``realize(stack([x, x, …]))[i]`` by one ``realize(x)``. The values are the same; the graph has one
    node where it had one per tensor, and the compiled module makes no view per tensor (docs/performance.md).

    ``pack=True`` (a graph called once per tensor: ``graphs='per_tensor'``): then computes those scalars first, into
    one buffer (:func:`_pack_realized_scalars`). Not in a whole graph, which allocates them once a step, and whose
    order of loops is chosen for the cache (AGR's runs: on ResNet-18 the pass made inductor run every run's sums
    before the first update, and the step 5 % slower).
    """

    def __init__(self, *, pack: bool = False) -> None:
        self.pack = pack

    def __call__(self, graph: torch.fx.Graph) -> None:
        _merge_equal_scalars(graph)
        _unstack_repeated_scalars(graph)
        graph.eliminate_dead_code()
        if self.pack:
            _pack_realized_scalars(graph)

    def uuid(self) -> bytes:  # FX graph cache key: this file's contents, and whether it packs
        return get_hash_for_files((__file__,)) + (b"-packed" if self.pack else b"")


def _merge_equal_scalars(graph: torch.fx.Graph) -> None:
    from torch._inductor.pattern_matcher import compute_mutation_region_ids

    compute_mutation_region_ids(graph)  # type: ignore[arg-type]
    seen: dict[Any, torch.fx.Node] = {}
    for node in list(graph.nodes):
        target = node.target
        value = node.meta.get("val")
        if (
            node.op != "call_function"
            or not isinstance(target, torch._ops.OpOverload)
            or target._schema.is_mutable
            or torch.Tag.nondeterministic_seeded in target.tags
            or "empty" in target._schema.name  # uninitialized memory: never one buffer for two (as AOT's own CSE)
            or not isinstance(value, Tensor)
            or value.numel() != 1
        ):
            continue
        try:
            key = (target, node.args, tuple(node.kwargs.items()), node.meta["mutation_region_id"])
            hash(key)
        except TypeError:  # an unhashable argument: left alone
            continue
        if key in seen:
            node.replace_all_uses_with(seen[key])
            graph.erase_node(node)
        else:
            seen[key] = node


def _unstack_repeated_scalars(graph: torch.fx.Graph) -> None:
    aten = torch.ops.aten
    for node in list(graph.nodes):
        if node.target is not torch.ops.optarena.realize.default:
            continue
        stacked = node.args[0]
        if not (
            isinstance(stacked, torch.fx.Node) and stacked.target is aten.cat.default and stacked.args[1:] in ((), (0,))
        ):
            continue
        parts = stacked.args[0]
        first = parts[0]
        if len(parts) < 2 or any(p is not first for p in parts) or first.target is not aten.unsqueeze.default:
            continue
        value = first.args[0]
        if first.args[1:] != (0,) or not isinstance(value, torch.fx.Node) or value.meta["val"].dim() != 0:
            continue
        unbinds = list(node.users)
        if not all(
            user.target is aten.unbind.int
            and user.args[1:] in ((), (0,))
            and all(item.target is operator.getitem for item in user.users)
            for user in unbinds
        ):
            continue
        with graph.inserting_after(node):
            one = graph.call_function(torch.ops.optarena.realize.default, (value,))
        one.meta["val"] = value.meta["val"].clone()
        for unbind in unbinds:
            for item in list(unbind.users):
                item.replace_all_uses_with(one)
                graph.erase_node(item)
            graph.erase_node(unbind)
        graph.erase_node(node)


#: The most one-value buffers :func:`_pack_realized_scalars` packs into one: inductor's limit for a concatenation
#: computed as one pointwise loop (``max_pointwise_cat_inputs``); past it, a concatenation is a buffer per input.
PACKED_SCALARS = 8


def _pack_realized_scalars(graph: torch.fx.Graph) -> None:
    """Every one-value ``realize(x)`` whose ``x`` is scalar arithmetic on the step's scalars
    (:func:`_scalar_arithmetic`), computed at the top of the graph into one buffer per :data:`PACKED_SCALARS` values,
    each read through ``select``.

    Each realized value is a buffer that inductor's module allocates at every call (≈ 0.4 µs each on a CPU): a graph
    called once per tensor (``graphs='per_tensor'``) pays that four or five times for each tensor of the model, for
    scalars (a bias correction, a step size) that need one buffer between them. Their computations are pure functions
    of the step's scalars, so they can run before anything else in the graph; the same operations on the same values.
    A value that reduces a tensor (AGR's Σ|g|) stays where it is: the graph computes it just before its update.
    """
    realize = torch.ops.optarena.realize.default
    mutated = _mutated_placeholders(graph)
    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    memo: dict[torch.fx.Node, bool] = {}
    candidates = [
        node
        for node in graph.nodes
        if node.target is realize
        and isinstance(node.meta.get("val"), Tensor)
        and node.meta["val"].numel() == 1
        and _scalar_arithmetic(node.args[0], mutated, memo)
    ]
    if len(candidates) < 2 or not placeholders:
        return
    by_kind: dict[tuple[Any, ...], list[torch.fx.Node]] = {}
    for node in candidates:
        value = node.meta["val"]
        by_kind.setdefault((value.dtype, value.device), []).append(node)
    chunks = [
        nodes[start : start + PACKED_SCALARS]
        for nodes in by_kind.values()
        for start in range(0, len(nodes), PACKED_SCALARS)
        if len(nodes) - start >= 2
    ]
    # The packed values' computations, in graph order, moved to just after the inputs.
    ancestors = _computed_from(node.args[0] for chunk in chunks for node in chunk)
    anchor = placeholders[-1]
    for node in [node for node in graph.nodes if node in ancestors]:
        anchor.append(node)
        anchor = node
    aten = torch.ops.aten
    for chunk in chunks:
        with graph.inserting_before(anchor.next):
            values = [node.args[0] for node in chunk]
            packed = graph.call_function(torch.ops.optarena.realize_scalars.default, (values,))
            packed.meta["val"] = torch.ops.optarena.realize_scalars(values=[v.meta["val"] for v in values])
            for i, node in enumerate(chunk):
                if node.meta["val"].dim() == 0:
                    item = graph.call_function(aten.select.int, (packed, 0, i))
                    item.meta["val"] = packed.meta["val"].select(0, i)
                else:
                    item = graph.call_function(aten.slice.Tensor, (packed, 0, i, i + 1))
                    item.meta["val"] = packed.meta["val"][i : i + 1]
                node.replace_all_uses_with(item)
        anchor = item
        for node in chunk:
            graph.erase_node(node)


def _computed_from(values: Iterable[torch.fx.Node]) -> set[torch.fx.Node]:
    """``values`` and every operation they are computed from (the graph's inputs left out)."""
    found: set[torch.fx.Node] = set()
    pending = list(values)
    while pending:
        node = pending.pop()
        if node.op == "call_function" and node not in found:
            found.add(node)
            pending += node.all_input_nodes
    return found


def _mutated_placeholders(graph: torch.fx.Graph) -> set[torch.fx.Node]:
    """The graph's inputs that an op writes, directly or through a view."""
    written = set()
    for node in graph.nodes:
        target = node.target
        if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload) or not target._schema.is_mutable:
            continue
        for argument, value in zip(target._schema.arguments, node.args):
            if argument.alias_info is not None and argument.alias_info.is_write:
                values = value if isinstance(value, (list, tuple)) else [value]
                written.update(_base(v) for v in values if isinstance(v, torch.fx.Node))
    return {node for node in written if node.op == "placeholder"}


def _base(node: torch.fx.Node) -> torch.fx.Node:
    """The node a chain of views starts from."""
    while isinstance(node.target, torch._ops.OpOverload) and node.target.is_view and node.args:
        node = node.args[0]
    return node


def _scalar_arithmetic(node: Any, mutated: set[torch.fx.Node], memo: dict[torch.fx.Node, bool]) -> bool:
    """Whether ``node`` is computed by pure, deterministic operations on one-value tensors (or symbolic sizes), which
    read the graph's inputs only element by element (a ``select``, an ``unbind``: views) and only inputs that no op
    writes: a step's scalars, never a reduction over a tensor (memoized in ``memo``)."""
    if not isinstance(node, torch.fx.Node):
        return True
    if node in memo:
        return memo[node]
    target = node.target
    ok = (
        node.op == "call_function"
        and _one_value(node.meta.get("val"))
        and not (
            isinstance(target, torch._ops.OpOverload)
            and (target._schema.is_mutable or torch.Tag.nondeterministic_seeded in target.tags)
        )
    )
    for argument in node.all_input_nodes if ok else ():
        if argument.op == "placeholder":
            by_element = isinstance(target, torch._ops.OpOverload) and target.is_view
            ok = argument not in mutated and (by_element or not isinstance(argument.meta.get("val"), Tensor))
        else:
            ok = _scalar_arithmetic(argument, mutated, memo)
        if not ok:
            break
    memo[node] = ok
    return ok


def _one_value(value: Any) -> bool:
    """A one-value tensor, a list of them (an ``unbind``), or a number (a symbolic size)."""
    if isinstance(value, (list, tuple)):
        return all(_one_value(v) for v in value)
    return value.numel() == 1 if isinstance(value, Tensor) else isinstance(value, (int, float, torch.SymInt))


@contextlib.contextmanager
def optimizer_codegen(*, per_tensor: bool = False) -> Iterator[None]:
    """While inductor compiles an optimizer's graph: the five changes of the module docstring, the last one only for
    a graph called once per tensor (``per_tensor``), and no size asserts in the module (every call is checked before
    it, by dynamo's guards or by direct_call.DirectCall's), and no loop reordering after fusion where torch asserts in
    it (:data:`LOOP_REORDERING_ASSERTS`)."""
    with (
        torch._inductor.config.patch(
            max_fusion_buffer_group_pairwise_attempts=FUSION_PAIR_ATTEMPTS,
            score_fusion_memory_threshold=SEPARATE_TENSORS_BELOW_BYTES,
            size_asserts=False,  # one assert per input; direct_call.DirectCall checks all of them in one C++ call
            post_grad_custom_pre_pass=ShareEqualScalars(pack=per_tensor),
            **({"loop_ordering_after_fusion": False} if LOOP_REORDERING_ASSERTS else {}),
        ),
        restrict_unaliased_pointers(),
        realize_only_live_reads(),
    ):
        yield
