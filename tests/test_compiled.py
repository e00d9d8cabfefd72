"""The compiled step (optarena.compile_step): equal to eager, no recompiles, a clean fallback;
and the foreach paths' peak memory against the reference loops."""

from __future__ import annotations

import contextlib
import logging
import re
import warnings

import pytest
import torch
from torch._dynamo.utils import counters
from torch._inductor.utils import run_and_get_code

import optarena
from optarena.optim import OptarenaOptimizer, codegen, compiled, direct_call, transforms
from optarena.optim.registry import get_optimizer_info
from optarena.optim.wrapper import OptimizerWrapper

from .helpers import max_diff
from .test_invariants import CONFIGS, make

pytestmark = pytest.mark.skipif(not torch._dynamo.is_dynamo_supported(), reason="torch.compile is not supported here")


def engine_optimizer(opt):
    while isinstance(opt, OptimizerWrapper):
        opt = opt.optimizer
    return opt


ENGINE = [c for c in CONFIGS if issubclass(get_optimizer_info(c[1]).cls, OptarenaOptimizer)]
COMPILABLE = [c for c in ENGINE if get_optimizer_info(c[1]).cls.not_compilable is None]
# Every compilable registry entry with its defaults (the variants are in COMPILABLE).
COMPILABLE_ENTRIES = [name for cid, name, _ in COMPILABLE if cid == name]


def fixed_params(dtype: torch.dtype) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shapes = [(6, 4), (6,), (3, 6), (1,)]
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in shapes]


def set_grads(params: list[torch.Tensor], step: int) -> None:
    g = torch.Generator().manual_seed(100 + step)
    for p in params:
        # Gradients that pull towards 0 plus noise: the run stays bounded over 100 steps.
        p.grad = 0.5 * p.detach() + torch.randn(p.shape, generator=g, dtype=p.dtype)


def run(name: str, kwargs: dict, *, compile: bool, steps: int, dtype=torch.float64, on_step=None):
    params = fixed_params(dtype)
    opt = make(name, params, compile=compile, **kwargs)
    # OneCycleLR moves lr and β1 every step: both must reach the graph as data.
    schedule = torch.optim.lr_scheduler.OneCycleLR(engine_optimizer(opt), max_lr=2e-2, total_steps=steps)
    for k in range(steps):
        set_grads(params, k)
        opt.step()
        schedule.step()
        if on_step is not None:
            on_step(k)
    states = [t for p in params for t in engine_optimizer(opt).state[p].values() if isinstance(t, torch.Tensor)]
    return opt, [p.detach() for p in params] + states


@pytest.mark.parametrize("cid,name,kwargs", COMPILABLE, ids=[c[0] for c in COMPILABLE])
def test_compiled_step_equals_eager_and_never_recompiles(cid, name, kwargs):
    torch._dynamo.reset()  # every configuration starts from an empty graph cache
    counters.clear()
    graphs_after_first_step: list[int] = []

    def record(k: int) -> None:
        if k == 0:
            graphs_after_first_step.append(counters["stats"]["unique_graphs"])

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the eager fallback would warn
        opt, compiled_result = run(name, kwargs, compile=True, steps=100, on_step=record)
    assert engine_optimizer(opt)._compiled_step is not None and engine_optimizer(opt)._compiled_step.compiled_once
    assert graphs_after_first_step == [1]
    assert counters["stats"]["unique_graphs"] == 1  # 99 more steps, lr and β1 changing: no new graph
    assert not counters["recompiles"]
    _, eager_result = run(name, kwargs, compile=False, steps=100)
    assert max_diff(compiled_result, eager_result) <= 1e-12


@pytest.mark.parametrize("name", COMPILABLE_ENTRIES)
def test_compiled_per_tensor_lists_equal_eager(name):
    """The path of large groups (per-tensor lists, no flat buffers): one loop per tensor, the per-tensor scalars
    computed once by inductor's lowering of ``realize``; equal to the eager foreach step."""
    torch._dynamo.reset()
    _, compiled_result = run(name, {"flat": False}, compile=True, steps=20)
    _, eager_result = run(name, {"flat": False}, compile=False, steps=20)
    assert max_diff(compiled_result, eager_result) <= 1e-12


@pytest.mark.parametrize("name", COMPILABLE_ENTRIES)
def test_compiled_float32_matches_eager(name):
    torch._dynamo.reset()
    _, compiled_result = run(name, {}, compile=True, steps=20, dtype=torch.float32)
    _, eager_result = run(name, {}, compile=False, steps=20, dtype=torch.float32)
    assert max_diff(compiled_result, eager_result) <= 1e-5


def test_loop_reordering_is_off_only_where_torch_asserts_in_it(monkeypatch):
    """torch 2.11 asserts in inductor's loop reordering after fusion on AGR's graph on a GPU (pytorch#176591):
    there an optimizer's graph is compiled without that pass (and still equals the eager step); elsewhere, and for any
    other graph, inductor's setting is left as it is."""
    from torch._inductor import config as inductor_config

    default = inductor_config.loop_ordering_after_fusion
    monkeypatch.setattr(codegen, "LOOP_REORDERING_ASSERTS", False)
    with codegen.optimizer_codegen():
        assert inductor_config.loop_ordering_after_fusion == default
    monkeypatch.setattr(codegen, "LOOP_REORDERING_ASSERTS", True)
    with codegen.optimizer_codegen():
        assert inductor_config.loop_ordering_after_fusion is False
    assert inductor_config.loop_ordering_after_fusion == default
    torch._dynamo.reset()  # compile again, now without the pass
    _, compiled_result = run("adamw_agr", {}, compile=True, steps=6)
    _, eager_result = run("adamw_agr", {}, compile=False, steps=6)
    assert max_diff(compiled_result, eager_result) <= 1e-12


def test_compiled_step_follows_a_frozen_layer_and_maximize():
    torch._dynamo.reset()
    results = []
    for compile in (True, False):
        params = fixed_params(torch.float64)
        opt = optarena.create_optimizer(params, "adamw_agr", lr=1e-2, maximize=True, compile=compile)
        for k in range(6):
            set_grads(params, k)
            if k in (2, 3):
                params[2].grad = None  # a frozen layer: a new structure, compiled once more
            opt.step()
        results.append([p.detach() for p in params])
    assert max_diff(*results) <= 1e-12


def test_compile_failure_warns_once_and_goes_on_eagerly(monkeypatch, caplog):
    class Broken:
        def direct_call(self, layout):
            return None

        def __call__(self, *args, **kwargs):
            raise RuntimeError("no C++ compiler")

    def broken(cls, signature=()):
        return Broken()

    monkeypatch.setattr(compiled, "_compiled_update_for", broken)
    params = fixed_params(torch.float64)
    opt = optarena.create_optimizer(params, "adaburst", lr=1e-2, total_steps=10, compile=True)
    with (
        caplog.at_level(logging.INFO, logger="optarena.optim.compiled"),
        pytest.warns(RuntimeWarning, match=r"torch\.compile failed .*no C\+\+ compiler.*eager foreach"),
    ):
        set_grads(params, 0)
        opt.step()
    assert opt._compiled_step is None
    # Where it failed, for whoever needs more than the message: the traceback, logged.
    (record,) = [r for r in caplog.records if r.name == "optarena.optim.compiled"]
    assert "torch.compile failed" in record.getMessage() and record.exc_info[0] is RuntimeError
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for k in range(1, 4):
            set_grads(params, k)
            opt.step()
    reference = fixed_params(torch.float64)
    eager = optarena.create_optimizer(reference, "adaburst", lr=1e-2, total_steps=10)
    for k in range(4):
        set_grads(reference, k)
        eager.step()
    assert max_diff([p.detach() for p in params], [p.detach() for p in reference]) == 0


def test_compile_step_without_dynamo_warns_and_stays_eager(monkeypatch):
    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    opt = optarena.create_optimizer(fixed_params(torch.float64), "lion", lr=1e-3)
    with pytest.warns(RuntimeWarning, match="not supported on this platform"):
        assert optarena.compile_step(opt) is opt
    assert opt._compiled_step is None


def test_compile_step_refuses_what_it_cannot_compile():
    params = fixed_params(torch.float64)
    with pytest.raises(ValueError, match="SWATS cannot be compiled: its switch test"):
        optarena.create_optimizer(params, "swats", compile=True)
    with pytest.raises(TypeError, match=r"not an optarena optimizer.*torch\.compile"):
        optarena.compile_step(torch.optim.AdamW(params))
    with pytest.raises(TypeError, match="AGR wrapper"):
        optarena.create_optimizer(params, "adamw", agr="code", compile=True)


def test_compile_step_reaches_through_lookahead():
    opt = optarena.create_optimizer(fixed_params(torch.float64), "adaburst", total_steps=10, lookahead=True)
    assert optarena.compile_step(opt) is opt
    assert opt.optimizer._compiled_step is not None


def test_reference_loop_is_never_compiled():
    torch._dynamo.reset()
    counters.clear()
    params = fixed_params(torch.float64)
    opt = optarena.create_optimizer(params, "adamnx", foreach=False, compile=True)
    set_grads(params, 0)
    opt.step()
    assert counters["stats"]["unique_graphs"] == 0


# --- peak memory: foreach against the reference loop ---------------------------------------------


def peak_extra_bytes(name: str, kwargs: dict, foreach: bool) -> tuple[int, int]:
    """Bytes allocated at the peak of a step beyond what was live before it, and the parameters' bytes."""
    from torch.distributed._tools.mem_tracker import MemTracker

    g = torch.Generator().manual_seed(0)
    shapes = [(128, 96), (96, 96), (96,), (96, 64), (64,), (1,)]
    params = [torch.randn(*s, generator=g).requires_grad_() for s in shapes]
    # The per-tensor (list) path: the flat step of small groups (optarena.optim.flat) trades a whole-group temporary
    # for fewer kernels, which its size limits cap at a few MiB.
    opt = make(name, params, foreach=foreach, **({"flat": False} if foreach else {}), **kwargs)
    for _ in range(2):  # the second step runs with every state already made
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        tracker = MemTracker()
        tracker.track_external(*params, *[p.grad for p in params], opt)
        with tracker:
            before = tracker.get_tracker_snapshot("current")[torch.device("cpu")]["Total"]
            opt.step()
        peak = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
    return peak - before, sum(p.numel() * p.element_size() for p in params)


@pytest.mark.parametrize("cid,name,kwargs", ENGINE, ids=[c[0] for c in ENGINE])
def test_foreach_peak_memory_within_one_parameter_buffer_of_the_loop(cid, name, kwargs):
    foreach_extra, param_bytes = peak_extra_bytes(name, kwargs, foreach=True)
    loop_extra, _ = peak_extra_bytes(name, kwargs, foreach=False)
    assert foreach_extra <= loop_extra + param_bytes, (foreach_extra / param_bytes, loop_extra / param_bytes)


@pytest.mark.parametrize("name", COMPILABLE_ENTRIES)
def test_compiled_step_is_fused_with_no_host_read(name):
    """Inductor's code for the step calls no unfused aten op and reads no value back to the host
    (an ``.item()`` would synchronise a GPU on every step)."""
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    params = fixed_params(torch.float32)
    opt = make(name, params, compile=True)
    set_grads(params, 0)
    _, code = run_and_get_code(opt.step)
    source = "\n".join(code)
    assert source  # a graph was compiled
    assert ".item()" not in source
    assert "torch.ops.aten." not in source, [line for line in source.splitlines() if "torch.ops.aten." in line]


@pytest.mark.parametrize("flat", [None, False], ids=["flat", "lists"])
@pytest.mark.parametrize("official_edge_cases", [False, True])
def test_compiled_agr_on_tensors_past_the_chunked_sum_equals_eager(official_edge_cases, flat):
    """Compiled, Σ|g| of a tensor over 4,096 values is summed in rows (functional.sum_in_chunks) and α = |g|·(1/Σ|g|):
    both within float64 rounding of the eager reference, remainders and an all-zero tensor included."""
    torch._dynamo.reset()
    # 7,000 values: rows plus a remainder; 24,591: segments plus rows and a remainder; exactly 4,096
    shapes = [(70, 100), (3, 8197), (64, 64), (5, 4)]
    results = []
    for compile in (True, False):
        g = torch.Generator().manual_seed(3)
        params = [torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes]
        opt = optarena.create_optimizer(
            params, "adamw_agr", lr=1e-2, agr_official_edge_cases=official_edge_cases, compile=compile, flat=flat
        )
        for k in range(4):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype) * 10.0 ** (k - 2)
            if not official_edge_cases:
                params[3].grad = torch.zeros_like(params[3])  # the floor keeps it at zero
            opt.step()
        results.append([p.detach().clone() for p in params])
    assert all(torch.isfinite(p).all() for p in results[0])
    assert max_diff(*results) <= 1e-12


@pytest.mark.parametrize(
    "name,transform", [("adamw_agr", {}), ("adan_agr", {}), ("adamw_agr", {"agr": None, "normalize": "std"})]
)
@pytest.mark.parametrize(("run_bytes", "expected"), [(1, "RURURU"), (4 * (2000 + 2100), "RURU"), (None, "RU")])
def test_compiled_transforms_that_reduce_each_tensor_run_it_just_before_its_update(
    name, transform, run_bytes, expected, monkeypatch
):
    """A list group whose transforms reduce over each whole tensor (AGR's Σ|g|, normalization's std) is transformed and
    updated in runs of at most ``CACHE_RUN_BYTES`` of gradient (compiled._update's ``run_by_run``): in the
    generated C++, each run's reduction loops come right before its update loops, never every reduction first (which
    re-reads each gradient from memory once the model outgrows the cache). Runs of one tensor, of two then one, and by
    default (8 MiB) the three small tensors as one run."""
    monkeypatch.setattr(compiled, "_COMPILED", {})
    if run_bytes is not None:
        monkeypatch.setattr(compiled, "CACHE_RUN_BYTES", run_bytes)
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(*shape, generator=g).requires_grad_() for shape in [(40, 50), (30, 70), (20, 90)]]
    opt = optarena.create_optimizer(params, name, compile=True, flat=False, **transform)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)
    with torch._inductor.config.patch(fx_graph_cache=False), torch._functorch.config.patch(enable_autograd_cache=False):
        _, codes = run_and_get_code(opt.step)
    lines = "\n".join(codes).splitlines()
    events = [
        "R" if "vec_reduce_all" in line else "U" for line in lines if "vec_reduce_all" in line or ".store(" in line
    ]
    runs = "".join(kind for i, kind in enumerate(events) if i == 0 or events[i - 1] != kind)
    assert runs == expected


def test_sum_in_chunks_equals_sum_in_float64_and_compiles():
    from optarena.optim.functional import sum_in_chunks

    g = torch.Generator().manual_seed(0)
    for n in (1, 4095, 4096, 4097, 8192, 3 * 4096 + 17, 4 * 4096, 4 * 4096 + 1, 9 * 4096 + 5, 40 * 4096):
        x = torch.randn(n, generator=g, dtype=torch.float64)
        assert sum_in_chunks(x).item() == x.sum().item()  # eagerly, plain sum
        torch._dynamo.reset()  # one graph per length: more lengths than dynamo keeps graphs for one function
        compiled_sum = torch.compile(sum_in_chunks, fullgraph=True, dynamic=False)
        assert abs(compiled_sum(x).item() - x.sum().item()) <= 1e-12 * x.abs().sum().item()


def test_many_configurations_of_one_class_each_keep_a_compiled_graph():
    """Dynamo keeps eight graphs per code object and then runs the function eagerly, with only a log line: ten
    configurations of one optimizer class in one process must each still run compiled, with no recompile."""
    torch._dynamo.reset()
    counters.clear()
    options = [{"agr": None, "eps": 1e-8}] + [{"agr": None, "clip_value": 0.1 * k} for k in range(1, 10)]
    for kwargs in options:
        params = fixed_params(torch.float64)
        opt = optarena.create_optimizer(params, "adamw_agr", lr=1e-2, compile=True, **kwargs)
        for k in range(3):
            set_grads(params, k)
            opt.step()
        assert opt._compiled_step is not None and opt._compiled_step.compiled_once
    assert counters["stats"]["unique_graphs"] == len(options)
    assert not counters["recompiles"]  # each configuration compiled once, under a code object of its own


def _only_update():
    """The compiled update of a test that compiles one optimizer configuration (on an emptied registry)."""
    (update,) = compiled._COMPILED.values()
    return update


def test_flat_groups_after_the_first_step_bypass_dynamo_and_equal_eager(monkeypatch):
    """A small group is stepped on flat buffers (optarena.optim.flat): from the second step on, its compiled graph
    is called without dynamo, with lr and β1 changing as data, and the result is the eager step's."""
    torch._dynamo.reset()
    monkeypatch.setattr(compiled, "_COMPILED", {})
    entered_dynamo = []

    def record(k):
        if k == 0:
            update = _only_update()
            assert len(update.direct) == 1  # the flat layout's graph was kept at its compilation
            (direct,) = update.direct.values()
            # inductor's module is called past AOT autograd's wrappers (which have nothing to do for this graph)
            assert direct.inner is not None and direct.mutated
            through = update.through_dynamo

            def counted(*args, **kwargs):
                entered_dynamo.append(k)
                return through(*args, **kwargs)

            update.through_dynamo = counted

    opt, compiled_result = run("adaburst", {"total_steps": 100}, compile=True, steps=30, on_step=record)
    assert entered_dynamo == []  # 29 steps, none through dynamo
    # the in-place writes are seen by autograd's version counters, as the eager step's are
    assert all(state["exp_avg"]._version >= 29 for state in opt.state.values())
    _, eager_result = run("adaburst", {"total_steps": 100}, compile=False, steps=30)
    assert max_diff(compiled_result, eager_result) <= 1e-12


def test_realize_is_computed_in_the_compiled_kernel_not_called_back(monkeypatch):
    """``realize`` (the barrier that keeps per-tensor scalars out of the element loop) is lowered by inductor to a
    buffer computed in the C++ kernel: the compiled module never calls back into Python for it, and the bias
    corrections it guards are not recomputed per element (the step equals eager)."""
    torch._dynamo.reset()
    monkeypatch.setattr(compiled, "_COMPILED", {})
    with torch._inductor.config.patch(fx_graph_cache=False), torch._functorch.config.patch(enable_autograd_cache=False):
        _, compiled_result = run("adamnx", {}, compile=True, steps=5)
    (update,) = compiled._COMPILED.values()
    (direct,) = update.direct.values()
    source = direct.inner.source_code
    assert "def call(" in source and "optarena.realize" not in source
    _, eager_result = run("adamnx", {}, compile=False, steps=5)
    assert max_diff(compiled_result, eager_result) <= 1e-12


def test_a_compiled_callable_without_one_inductor_module_is_called_whole():
    assert direct_call._inductor_module(print) is None
    assert direct_call._inductor_module(lambda *args: None) is None


def test_direct_calls_follow_the_dtype_and_a_dynamo_reset(monkeypatch):
    """The same shapes in another dtype get a graph of their own (not the other dtype's direct call), and
    ``torch._dynamo.reset()`` drops the direct calls: the next step compiles again."""
    torch._dynamo.reset()
    monkeypatch.setattr(compiled, "_COMPILED", {})
    counters.clear()
    results = {}
    for dtype in (torch.float64, torch.float32):
        for compile in (True, False):
            params = fixed_params(dtype)
            opt = optarena.create_optimizer(params, "adax", lr=1e-2, compile=compile, flat=True)
            for k in range(4):
                set_grads(params, k)
                opt.step()
            results[dtype, compile] = [p.detach() for p in params]
    update = _only_update()
    assert len(update.direct) == 2 and counters["stats"]["unique_graphs"] == 2
    assert max_diff(results[torch.float64, True], results[torch.float64, False]) <= 1e-12
    assert max_diff(results[torch.float32, True], results[torch.float32, False]) <= 1e-6
    torch._dynamo.reset()
    params = fixed_params(torch.float64)
    opt = optarena.create_optimizer(params, "adax", lr=1e-2, compile=True, flat=True)
    set_grads(params, 0)
    opt.step()
    assert counters["stats"]["unique_graphs"] == 3  # compiled again after the reset
    assert len(update.direct) == 1


def test_a_direct_call_leaves_a_misaligned_input_the_kernels_assume_aligned_to_dynamo(monkeypatch):
    """On a GPU inductor's kernels assume some inputs 16-byte aligned (``inputs_to_check``) and its wrappers copy one
    that is not: a direct call checks those inputs' addresses and leaves a misaligned step to dynamo. Here (a CPU,
    where no input is checked) one parameter is marked as such an input, then moved to an address 8 bytes off and
    to one 16 bytes off; every step equals eager."""
    monkeypatch.setattr(compiled, "_COMPILED", {})
    torch._dynamo.reset()
    entered: list[int] = []
    original = compiled._CompiledUpdate.__call__

    def counted(self, kernel, slices, layout):
        entered.append(1)
        return original(self, kernel, slices, layout)

    monkeypatch.setattr(compiled._CompiledUpdate, "__call__", counted)

    def moved(p: torch.Tensor, offset: int) -> torch.Tensor:  # p's values at ``offset`` float64 values into a buffer
        buffer = torch.empty(p.numel() + offset, dtype=p.dtype)
        return buffer[offset:].view(p.shape).copy_(p.detach())

    def run(compile: bool) -> tuple[list[torch.Tensor], list[int]]:
        params = fixed_params(torch.float64)
        opt = optarena.create_optimizer(params, "adax", lr=1e-2, compile=compile, flat=False)
        through_dynamo = []
        for k, offset in enumerate([None, None, 1, 2, None]):
            if offset is not None:
                params[0].data = moved(params[0], offset)
            if compile and k == 1:
                (direct,) = _only_update().direct.values()
                direct.aligned = [direct.paths.index(((0, 4, 0), None))]  # the first parameter
            set_grads(params, k)
            before = len(entered)
            opt.step()
            through_dynamo.append(len(entered) - before)
        return [p.detach() for p in params], through_dynamo

    result, through_dynamo = run(compile=True)
    assert through_dynamo == [1, 0, 1, 0, 0]  # compiled; direct; misaligned: dynamo; aligned again: direct
    assert max_diff(result, run(compile=False)[0]) <= 1e-12


def test_a_graph_with_an_output_or_an_input_from_elsewhere_has_no_direct_call():
    """Nor one with an input that is a number traced as a symbol (not a tensor's size): dynamo's to find."""

    def graph_with(source, output, value=None):
        graph = torch.fx.Graph()
        x = graph.placeholder("x")
        x._dynamo_source = source
        x.meta["example_value"] = torch.zeros(2) if value is None else value
        graph.output((x,) if output else ())
        return torch.fx.GraphModule(torch.nn.Module(), graph)

    from torch._dynamo.source import GetItemSource, GlobalSource, LocalSource

    inside = GetItemSource(GetItemSource(LocalSource("slices"), 0), 4)
    direct = direct_call.DirectCall.of(graph_with(inside, output=False), print)
    assert direct is not None and direct.paths == [((0, 4), None)]  # the tensor itself, not one of its sizes
    assert direct_call.DirectCall.of(graph_with(inside, output=True), print) is None
    assert direct_call.DirectCall.of(graph_with(GlobalSource("table"), output=False), print) is None
    assert direct_call.DirectCall.of(graph_with(LocalSource("kernel"), output=False), print) is None
    assert direct_call.DirectCall.of(graph_with(inside, output=False, value=2), print) is None


def test_configurations_sharing_a_code_object_are_never_called_directly(monkeypatch):
    """An unhashable option value makes configurations share one code object (dynamo's guards tell their graphs
    apart), so none of them may take another's graph by the flat layout alone: here every signature is made
    unhashable, and AGR's two modes (different graphs, the same flat layout) must each equal eager."""
    torch._dynamo.reset()
    monkeypatch.setattr(compiled, "_COMPILED", {})
    original = compiled._compiled_update_for
    monkeypatch.setattr(compiled, "_compiled_update_for", lambda cls, signature=(): original(cls, (signature, [])))
    for agr in ("code", "paper"):
        results = []
        for compile in (True, False):
            params = fixed_params(torch.float64)
            opt = optarena.create_optimizer(params, "adamw_agr", lr=1e-2, agr=agr, compile=compile, flat=True)
            for k in range(4):
                set_grads(params, k)
                opt.step()
            results.append([p.detach() for p in params])
        assert max_diff(*results) <= 1e-12
    update = _only_update()
    assert not update.allows_direct and not update.direct


#: The tensor sizes of :func:`_kernel_sources`'s list group: several of one size, so that inductor also fuses loops
#: across tensors.
KERNEL_SOURCE_SIZES = (300, 300, 500, 70, 300, 500, 90, 300, 120, 300, 500, 64)


def _kernel_sources(name: str) -> str:
    """The generated code of one compiled step of a list group of :data:`KERNEL_SOURCE_SIZES`, without the cache
    paths that name it."""
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(n, generator=g).requires_grad_() for n in KERNEL_SOURCE_SIZES]
    opt = optarena.create_optimizer(params, name, compile=True, flat=False)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)
    with torch._inductor.config.patch(fx_graph_cache=False), torch._functorch.config.patch(enable_autograd_cache=False):
        _, codes = run_and_get_code(opt.step)
    names = ("torchinductor", "AOT ID")
    return "\n".join(line for code in codes for line in code.splitlines() if not any(n in line for n in names))


@pytest.mark.parametrize("name", ["adamnx", "adamw_agr", "lamb"])
def test_a_mutation_realizes_only_the_reads_still_needed_and_the_code_is_the_same(monkeypatch, name):
    """``codegen.realize_only_live_reads``: before the graph writes a tensor in place, inductor computes into buffers
    only the values that read it and are still to be used, not every intermediate value of the update (each of which
    the scheduler then built a node for and removed): the scheduler gets at least one node fewer a tensor, and
    the generated code is the same but for the buffers' numbers. Lamb: a norm over the parameter it then writes."""
    from torch._inductor.scheduler import Scheduler

    scheduled: list[int] = []
    scheduler_init = Scheduler.__init__

    def count_nodes(self, nodes, *args, **kwargs):
        scheduled.append(len(nodes))
        scheduler_init(self, nodes, *args, **kwargs)

    monkeypatch.setattr(Scheduler, "__init__", count_nodes)

    def numbered_in_order(source: str) -> str:
        """Buffers renumbered in order of appearance; each run of ``del`` lines sorted (inductor orders the frees
        at a point by the buffers' names)."""
        names: dict[str, str] = {}
        source = re.sub(r"\bbuf\d+\b", lambda m: names.setdefault(m.group(0), f"buf{len(names)}"), source)
        return re.sub(r"(?:^ *del \w+\n)+", lambda m: "".join(sorted(m.group(0).splitlines(True))), source, flags=re.M)

    monkeypatch.setattr(compiled, "_COMPILED", {})
    ours = numbered_in_order(_kernel_sources(name))
    monkeypatch.setattr(codegen, "realize_only_live_reads", contextlib.nullcontext)
    monkeypatch.setattr(compiled, "_COMPILED", {})
    every_read = numbered_in_order(_kernel_sources(name))
    assert "cpp_fused" in ours and ours == every_read
    fewer = len(KERNEL_SOURCE_SIZES)  # at least one node fewer a tensor
    assert len(scheduled) == 2 and 0 < scheduled[0] <= scheduled[1] - fewer, scheduled


@pytest.mark.parametrize("name", ["adamw_agr", "adan"])
def test_fewer_fusion_attempts_generate_inductors_default_code(monkeypatch, name):
    """``FUSION_PAIR_ATTEMPTS`` halves the scheduling time of a large group's graph; the kernels are the ones
    inductor's default (64 attempts) generates."""
    monkeypatch.setattr(compiled, "_COMPILED", {})
    ours = _kernel_sources(name)
    monkeypatch.setattr(codegen, "FUSION_PAIR_ATTEMPTS", 64)
    monkeypatch.setattr(compiled, "_COMPILED", {})
    default = _kernel_sources(name)
    assert "cpp_fused" in ours and ours == default


@pytest.mark.parametrize("cls", [optarena.AdamW, optarena.Yogi, optarena.Lamb])
def test_compiled_first_moment_is_a_sum_not_atens_lerp(cls):
    """``m ← m + (1 − β1)(g − m)`` compiles to a subtraction, a multiplication and an addition per vector; with a
    tensor weight, ATen's lerp decomposition would blend between two formulas per vector (``functional.foreach_lerp_``).
    """
    torch._dynamo.reset()
    params = fixed_params(torch.float32)
    opt = optarena.compile_step(cls(params, lr=1e-3))
    set_grads(params, 0)
    with torch._inductor.config.patch(fx_graph_cache=False), torch._functorch.config.patch(enable_autograd_cache=False):
        _, code = run_and_get_code(opt.step)
    source = "\n".join(code)
    sign = ("auto left =", "auto right =")  # Yogi's sign(v − g²) is a pair of blends of its own
    blends = [line for line in source.splitlines() if "blendv" in line and not any(s in line for s in sign)]
    assert "cpp_fused" in source and not blends


def test_kernels_restrict_only_unaliased_pointers_and_only_the_optimizers_do():
    """The compiled step's kernels take ``__restrict__`` pointers where no other argument reaches the same memory,
    so the loops load the per-tensor scalars once, not once per vector (``compiled.restrict_unaliased_pointers``).
    Lamb's graph passes mutated inputs twice and slices of one stacked buffer as separate pointers: restricting
    those made its step inf, so there they stay plain. A user's own ``torch.compile`` is left as inductor writes
    it."""
    for name in ("adan", "lamb"):
        source = _kernel_sources(name)
        calls = re.findall(r"cpp_fused\w*\(([^()]*)\)\n", source)  # the kernels' calls, in the wrapper
        declared = re.findall(r"extern \"C\"[^(]*\(([^)]*)\)", source)
        assert calls and len(calls) == len(declared)
        split = [[part.strip() for part in text.split(",")] for text in (*calls, *declared)]
        kernels = list(zip(split[: len(calls)], split[len(calls) :]))  # (arguments, parameters) per kernel
        for arguments, parameters in kernels:
            for argument, parameter in zip(arguments, parameters):
                if "__restrict__" in parameter:  # never a buffer the kernel also reaches through another pointer
                    assert arguments.count(argument) == 1, (argument, parameter)
        assert "__restrict__" in source
        if name == "lamb":  # the case the rule is for: a buffer passed twice
            assert any(arguments.count(a) > 1 for arguments, _ in kernels for a in arguments)
    for name, kwargs in (("adan", {}), ("lamb", {"bias_correction": False, "weight_norm_bounds": (0.0, 10.0)})):
        _, compiled_result = run(name, kwargs, compile=True, steps=20)
        _, eager_result = run(name, kwargs, compile=False, steps=20)
        assert max_diff(compiled_result, eager_result) <= 1e-12

    def user_function(x, y):
        return x * 2 + y

    with torch._inductor.config.patch(fx_graph_cache=False), torch._functorch.config.patch(enable_autograd_cache=False):
        _, codes = run_and_get_code(torch.compile(user_function), torch.randn(64), torch.randn(64))
    user_source = "\n".join(codes)
    assert "cpp_fused" in user_source and "__restrict__" not in user_source


def test_equal_per_tensor_scalars_are_computed_once_and_each_tensor_keeps_its_own_loops():
    """Where every tensor of a group has the same step, a bias correction is computed and stored once, not once per
    tensor into a stack read through a view per tensor (``codegen.ShareEqualScalars``); and loops of same-sized
    tensors, which then share those scalars, are not fused into one (``codegen.SEPARATE_TENSORS_BELOW_BYTES``)."""
    source = _kernel_sources("adamnx")
    assert "cpp_fused" in source and "reinterpret_tensor(" not in source
    loops_over_300 = re.findall(r"for\(int64_t x0=static_cast<int64_t>\(0L\); x0<static_cast<int64_t>\(30\dL\)", source)
    assert len(loops_over_300) >= 5  # five tensors of 300 values: one loop each (inductor may split one in two)


def test_realized_scalars_of_pure_scalar_arithmetic_are_packed_into_one_buffer_and_nothing_else_moves():
    """``codegen._pack_realized_scalars`` on a graph built by hand: two realized values computed from the step's
    scalars (an input no op writes, read element by element) become one ``realize_scalars`` buffer computed right
    after the inputs; a realized reduction over a tensor, and a value read from an input the graph writes, stay
    where they are; the graph computes the same before and after."""
    aten, ops = torch.ops.aten, torch.ops.optarena
    graph = torch.fx.Graph()
    values = {
        "scalars": torch.tensor([0.9, 0.999, 3.0], dtype=torch.float64),
        "param": torch.randn(5, dtype=torch.float64),
        "grad": torch.randn(5, dtype=torch.float64),
    }
    nodes = {name: graph.placeholder(name) for name in values}
    for name, node in nodes.items():
        node.meta["val"] = values[name]

    def add(name, target, *args):
        """A node computing ``target`` on earlier nodes (by name) or constants, with its value as its meta value."""
        node = nodes[name] = graph.call_function(
            target, tuple(nodes.get(a, a) if isinstance(a, str) else a for a in args)
        )
        node.meta["val"] = target(*(n.meta["val"] if isinstance(n, torch.fx.Node) else n for n in node.args))

    add("beta1", aten.select.int, "scalars", 0, 0)
    add("beta2", aten.select.int, "scalars", 0, 1)
    add("step", aten.select.int, "scalars", 0, 2)
    add("c1", aten.pow.Tensor_Tensor, "beta1", "step")
    add("first", ops.realize.default, "c1")
    add("update", aten.mul.Tensor, "grad", "first")
    add("abs", aten.abs.default, "grad")
    add("total", aten.sum.default, "abs")  # a reduction over a tensor
    add("r", aten.reciprocal.default, "total")
    add("inverse", ops.realize.default, "r")
    add("first_param", aten.select.int, "param", 0, 0)  # read from an input the graph writes
    add("p2", aten.mul.Tensor, "first_param", 2.0)
    add("read", ops.realize.default, "p2")
    add("c2", aten.pow.Tensor_Tensor, "beta2", "step")
    add("second", ops.realize.default, "c2")
    add("scaled", aten.mul.Tensor, "update", "second")
    add("scaled2", aten.mul.Tensor, "scaled", "inverse")
    add("scaled3", aten.mul.Tensor, "scaled2", "read")
    add("new_param", aten.sub.Tensor, "param", "scaled3")
    graph.call_function(aten.copy_.default, (nodes["param"], nodes["new_param"]))
    graph.output(())

    def run():
        module = torch.fx.GraphModule(torch.nn.Module(), graph)
        param = values["param"].clone()
        module(values["scalars"], param, values["grad"])
        return param

    before = run()
    codegen._pack_realized_scalars(graph)
    graph.lint()
    after = run()
    assert torch.equal(before, after) and not torch.equal(before, values["param"])
    order = {node: i for i, node in enumerate(graph.nodes)}
    packed = [node for node in graph.nodes if node.target is ops.realize_scalars.default]
    assert len(packed) == 1 and packed[0].args[0] == [nodes["c1"], nodes["c2"]]
    assert order[packed[0]] < order[nodes["update"]]  # computed before the first reader of either value
    assert nodes["first"] not in order and nodes["second"] not in order
    assert [node for node in graph.nodes if node.target is ops.realize.default] == [nodes["inverse"], nodes["read"]]
    assert order[nodes["total"]] > order[nodes["update"]]  # the reduction was not moved up


@pytest.mark.parametrize(("name", "before"), [("adan", 5), ("adamnx", 4)])
def test_a_per_tensor_graph_allocates_its_realized_scalars_once_per_call(name, before, monkeypatch):
    """A per-tensor graph (``graphs='per_tensor'``: one call per tensor, every step) computes its scalars (bias
    corrections, step sizes: ``before`` buffers of one value each before ``codegen._pack_realized_scalars``) into one
    buffer: its module allocates at most two (one shared intermediate inductor keeps) per call; it equals eager. A
    whole graph is compiled without the packing."""
    monkeypatch.setattr(compiled, "_COMPILED", {})
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(n, generator=g).requires_grad_() for n in (300, 500, 70)]
    opt = optarena.create_optimizer(params, name, compile="per_tensor", flat=False)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)
    with torch._inductor.config.patch(fx_graph_cache=False), torch._functorch.config.patch(enable_autograd_cache=False):
        _, codes = run_and_get_code(opt.step)
    calls = [code.split("def call(self, args):")[1].split("return ()")[0] for code in codes]
    assert len(calls) == 1
    assert 1 <= calls[0].count("empty_strided_cpu(") <= 2 < before
    for per_tensor in (False, True):  # a whole graph keeps its order (AGR's runs): its scalars are not packed
        with codegen.optimizer_codegen(per_tensor=per_tensor):
            assert torch._inductor.config.post_grad_custom_pre_pass.pack is per_tensor
    shapes = [(300,), (500,), (70,)]
    result = run_per_tensor(name, shapes, 4, compile=True)
    assert max_diff(result, run_per_tensor(name, shapes, 4, compile=False)) <= 1e-12


@pytest.mark.parametrize("name", ["yogi", "acprop", "adabelief", "adan", "adamnx"])
def test_compiled_list_group_with_unequal_steps_equals_eager(name):
    """A parameter without a gradient for two steps falls behind the others' count: the group's steps differ, each
    tensor's scalars are its own (one stacked entry each); compiled equals eager."""
    torch._dynamo.reset()
    results = []
    for compile in (True, False):
        params = fixed_params(torch.float64)
        opt = optarena.create_optimizer(params, name, lr=1e-2, compile=compile, flat=False)
        for k in range(6):
            set_grads(params, k)
            if k in (1, 2):
                params[0].grad = None
            opt.step()
        assert [engine_optimizer(opt).state[p]["step"].item() for p in params] == [4.0, 6.0, 6.0, 6.0]
        results.append([p.detach() for p in params])
    assert max_diff(*results) <= 1e-12


def test_list_groups_are_called_directly_and_through_dynamo_where_a_check_fails(monkeypatch):
    """A per-tensor list group's graph is called past dynamo from the second step on (``direct_call.DirectCall``). A
    gradient with other strides fails the input check (TensorGuards) before anything is written, and gradients
    that share storage fail the engine's aliasing check: both steps go through dynamo, and every step equals the
    eager one."""
    torch._dynamo.reset()
    monkeypatch.setattr(compiled, "_COMPILED", {})
    results, entered_dynamo, step = [], [], [0]
    for compile in (True, False):
        params = fixed_params(torch.float64)
        opt = optarena.create_optimizer(params, "adamnx", lr=1e-2, compile=compile, flat=False)
        for k in range(9):
            step[0] = k
            set_grads(params, k)
            if k >= 3:  # from step 3 on, the first gradient (6 × 4) is column-major: other strides
                params[0].grad = params[0].grad.t().contiguous().t()
            if k == 6:  # the second gradient (6 values) is a view of the first one's storage
                params[1].grad = params[0].grad.t().reshape(-1)[:6]
            opt.step()
            if compile and k == 0:
                update = _only_update()
                assert len(update.direct) == 1
                through = update.through_dynamo

                def counted(*args, through=through, **kwargs):
                    entered_dynamo.append(step[0])
                    return through(*args, **kwargs)

                update.through_dynamo = counted
        results.append([p.detach() for p in params])
    assert entered_dynamo == [3, 6]
    assert max_diff(*results) <= 1e-12


PER_TENSOR = [name for name in COMPILABLE_ENTRIES if get_optimizer_info(name).cls.elementwise_kernel]


def run_per_tensor(
    name: str, shapes: list[tuple[int, ...]], steps: int, *, compile: bool, dtype=torch.float64, **kwargs
):
    """``steps`` steps of a list group (no flat buffers) of these shapes, compiled with ``graphs='per_tensor'``
    or eager; the parameters and states after them."""
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in shapes]
    opt = make(name, params, flat=False, **kwargs)
    if compile:
        optarena.compile_step(opt, graphs="per_tensor")
    for k in range(steps):
        set_grads(params, k)
        opt.step()
    states = [t for p in params for t in engine_optimizer(opt).state[p].values() if isinstance(t, torch.Tensor)]
    return [p.detach() for p in params] + states


@pytest.mark.parametrize("name", PER_TENSOR)
def test_per_tensor_graphs_equal_eager_and_do_not_grow_with_the_tensors(name, monkeypatch):
    """``graphs='per_tensor'``: every tensor of two or more values runs through one graph with a symbolic size (a
    1-value tensor through one of its own: dynamo specializes sizes 0 and 1), so twelve tensors of eight sizes
    compile no more graphs than four; equal to the eager step."""
    monkeypatch.setattr(compiled, "_COMPILED", {})
    torch._dynamo.reset()
    counters.clear()
    shapes = [(6, 4), (6,), (3, 6), (1,), (5, 5, 3, 3), (7,), (2, 9), (6, 4), (11,), (6,), (4, 4, 1, 1), (13, 2)]
    result = run_per_tensor(name, shapes, 6, compile=True)
    graphs = counters["stats"]["unique_graphs"]
    assert max_diff(result, run_per_tensor(name, shapes, 6, compile=False)) <= 1e-12
    torch._dynamo.reset()
    counters.clear()
    run_per_tensor(name, shapes[:4], 1, compile=True)
    # One for every size of two or more values, one for 1; AGR's Σ|g| one more for fewer than 8 (sum_in_chunks).
    agr = get_optimizer_info(name).defaults.get("agr") is not None
    assert graphs == counters["stats"]["unique_graphs"] <= (3 if agr else 2)


@pytest.mark.parametrize("name", ["lion", "adamw_agr"])
def test_per_tensor_one_value_tensors_are_called_directly_after_their_first_step(name, monkeypatch):
    """A 1-value tensor's graph is specialized (dynamo's size 1), not one of symbolic sizes: it is called directly
    too, so from the second step on no tensor goes through dynamo (before, every 1-value tensor did, every step);
    equal to eager."""
    monkeypatch.setattr(compiled, "_COMPILED", {})
    torch._dynamo.reset()
    shapes = [(6, 4), (1,), (5,), (), (1, 1), (9, 3), (1,)]
    entered: list[int] = []
    original = compiled._CompiledUpdate.__call__

    def counted(self, kernel, slices, layout):
        entered.append(slices[0][4][0].numel())
        return original(self, kernel, slices, layout)

    monkeypatch.setattr(compiled._CompiledUpdate, "__call__", counted)
    result = run_per_tensor(name, shapes, 1, compile=True)
    first_step = len(entered)
    assert 1 in entered  # a 1-value tensor was compiled through dynamo on the first step
    monkeypatch.setattr(compiled, "_COMPILED", {})
    torch._dynamo.reset()
    entered.clear()
    result = run_per_tensor(name, shapes, 5, compile=True)
    assert len(entered) == first_step  # the first step only
    assert max_diff(result, run_per_tensor(name, shapes, 5, compile=False)) <= 1e-12


def test_per_tensor_slices_check_once_a_step_and_take_the_checked_path_where_a_check_fails(monkeypatch):
    """After a step in which every tensor of a per-tensor list slice was called directly, the next steps run the slice
    through ``direct_call.TensorCalls``: one check for the slice (the gradients, the scalars and clip_norm's factor in
    one C++ call; the kept views; the graphs dynamo still holds), no per-tensor ``DirectCall`` check. A gradient with
    other strides (a size-1 dimension's, so still contiguous and per tensor) and ``torch._dynamo.reset()`` fail it:
    that step takes the checked path (after the reset, dynamo, which compiles again), nothing stepped twice, and the
    step after it is called directly again; every step equals eager."""
    monkeypatch.setattr(compiled, "_COMPILED", {})
    torch._dynamo.reset()
    step, by_slice, per_tensor = [0], {}, {}
    original_slice, original_tensor = direct_call.TensorCalls.__call__, direct_call.DirectCall.__call__

    def slice_checked(self, *args):
        by_slice.setdefault(step[0], []).append(original_slice(self, *args))
        return by_slice[step[0]][-1]

    def tensor_checked(self, slices):
        per_tensor[step[0]] = per_tensor.get(step[0], 0) + 1
        return original_tensor(self, slices)

    monkeypatch.setattr(direct_call.TensorCalls, "__call__", slice_checked)
    monkeypatch.setattr(direct_call.DirectCall, "__call__", tensor_checked)
    results = []
    for compile in (True, False):
        g = torch.Generator().manual_seed(0)
        shapes = [(6, 1), (5,), (1,), (3, 4)]
        params = [torch.randn(s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes]
        opt = make("adabelief", params, flat=False, clip_norm=0.5)
        if compile:
            optarena.compile_step(opt, graphs="per_tensor")
        for k in range(8):
            step[0] = k
            set_grads(params, k)
            if k >= 3:  # the same values, another stride for the size-1 dimension
                params[0].grad = params[0].grad.as_strided((6, 1), (1, 6))
            if k == 5 and compile:
                torch._dynamo.reset()
            opt.step()
        results.append([p.detach() for p in params])
        if compile:
            # Steps 0 and 5 compile (no slice calls after them); 1, 3 and 6 check each tensor and build the slice's.
            assert by_slice == {2: [True], 3: [False], 4: [True], 5: [False], 7: [True]}
            assert per_tensor.keys().isdisjoint({2, 4, 7}) and per_tensor[1] == per_tensor[3] == per_tensor[6] == 4
    assert max_diff(*results) <= 1e-12


@pytest.mark.parametrize(
    ("agr_scope", "dtype"), [("weights", torch.float64), ("all", torch.float64), ("weights", torch.float32)]
)
def test_per_tensor_agr_across_the_chunked_sums_branches_is_called_directly_and_equals_eager(
    agr_scope, dtype, monkeypatch
):
    """AGR's Σ|g| of a whole graph branches on the size (``sum_in_chunks``); a graph shared by every size does not (it
    would be specialized): one graph for every tensor, whichever the scope ('weights' gives it as data), over sizes
    on both sides of each branch (in float32 also of inductor's choice of a cascade sum, over 4,096 values). Each
    tensor is called directly on the graph whose dynamo guards its size passed (checked once per size): from the
    second step on nothing goes through dynamo; every step equals eager."""
    monkeypatch.setattr(compiled, "_COMPILED", {})
    torch._dynamo.reset()
    counters.clear()
    # Sizes on both sides of the whole graph's branches, and every remainder modulo sum_in_chunks' four segments.
    shapes = [(64, 3, 7, 7), (64,), (128, 64, 1, 1), (300, 70), (5000,), (40, 40, 3, 3), (20000,), (37, 3), (4097,),
              (9,), (2, 5)]  # fmt: skip
    entered: list[int] = []
    original = compiled._CompiledUpdate.__call__

    def counted(self, kernel, slices, layout):
        entered.append(len(slices[0][4][0]))
        return original(self, kernel, slices, layout)

    monkeypatch.setattr(compiled._CompiledUpdate, "__call__", counted)
    result = run_per_tensor("adamw_agr", shapes, 4, compile=True, agr_scope=agr_scope, dtype=dtype)
    assert len(entered) <= len(shapes)  # the first step only: each tensor at most once through dynamo
    assert counters["stats"]["unique_graphs"] == 1
    eager = run_per_tensor("adamw_agr", shapes, 4, compile=False, agr_scope=agr_scope, dtype=dtype)
    assert max_diff(result, eager) <= (1e-12 if dtype == torch.float64 else 1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", ["norm", "std"])
def test_per_tensor_normalization_sums_without_splitting_the_graph_and_equals_eager(kind, dtype, monkeypatch):
    """Normalization's reductions (the norm; the standard deviation's mean and sum of squares) in a graph shared by
    every size go through ``sum_of_any_size``: one graph for every tensor of 8 values or more (one for fewer: the
    sum's guard; 'std' leaves 2 values alone, a guard too; one for 1 value), each size called directly, and every
    step equal to eager."""
    monkeypatch.setattr(compiled, "_COMPILED", {})
    torch._dynamo.reset()
    counters.clear()
    shapes = [(64, 3, 7, 7), (64,), (300, 70), (20000,), (37, 3), (4097,), (9,), (6,), (2,), (1,), ()]
    result = run_per_tensor("adabelief", shapes, 4, compile=True, normalize=kind, dtype=dtype)
    assert counters["stats"]["unique_graphs"] <= 4
    eager = run_per_tensor("adabelief", shapes, 4, compile=False, normalize=kind, dtype=dtype)
    assert max_diff(result, eager) <= (1e-12 if dtype == torch.float64 else 1e-6)


def run_per_tensor_changing(shapes: list[tuple[int, ...]], *, compile: bool, **kwargs):
    """Four steps of AdaBelief with AGR on a list group, compiled per tensor or eager: the first step without the
    vectors' gradients (their step counts lag: one step count per tensor), then, before the third, a new tensor for
    one parameter, a state loaded from its own dict (new state tensors) and AGR's scope switched to 'all'."""
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes]
    opt = make("adabelief", params, flat=False, **kwargs)
    if compile:
        optarena.compile_step(opt, graphs="per_tensor")
    for k in range(4):
        set_grads(params, k)
        if k == 0:
            for p in params:
                if p.dim() == 1:
                    p.grad = None
        if k == 2:
            params[0].data = params[0].data.clone()
            opt.load_state_dict(opt.state_dict())
            engine_optimizer(opt).param_groups[0]["agr_scope"] = "all"
        opt.step()
    states = [t for p in params for t in engine_optimizer(opt).state[p].values() if isinstance(t, torch.Tensor)]
    return [p.detach() for p in params] + states


@pytest.mark.parametrize(
    "agr_kwargs",
    [{"agr": "paper", "agr_stop_step": 2}, {"agr": "code", "agr_official_edge_cases": True}],
    ids=["paper-stop-step", "code-official-edges"],
)
def test_per_tensor_agr_scope_as_data_equals_eager_as_tensors_states_and_options_change(agr_kwargs, monkeypatch):
    """AGR's 'weights' scope reaches the per-tensor graph as a flag per tensor (a flat view has no shape to tell a
    vector from a weight), combined with ``agr_stop_step``, through per-tensor step counts, a 1-value weight and
    vector (official edge cases: the weight frozen, the vector left), a parameter's new tensor, a loaded state and a
    switch of scope mid-run: the views the step keeps are remade where a tensor changed, and every step equals
    eager."""
    monkeypatch.setattr(compiled, "_COMPILED", {})
    torch._dynamo.reset()
    counters.clear()
    shapes = [(6, 4), (6,), (1, 1), (1,), (3, 3, 2, 2), (5,), (2, 9)]
    result = run_per_tensor_changing(shapes, compile=True, **agr_kwargs)
    assert max_diff(result, run_per_tensor_changing(shapes, compile=False, **agr_kwargs)) <= 1e-12
    # The 'weights' scope and the 'all' scope each: one graph for 8 values or more, one for 2 to 7 (AGR's Σ|g|), one
    # for 1.
    assert counters["stats"]["unique_graphs"] == 6


def test_agr_scope_flags_are_for_a_compiled_step_only():
    """The flags stand for a shape a compiled graph cannot see; eagerly the shape is there, and flags are refused."""
    with pytest.raises(RuntimeError, match="scope_flags are for a compiled step"):
        transforms.agr([torch.ones(3)], [torch.ones(3)], [1.0], True, "code", None, False, scope_flags=[torch.ones(())])


def test_per_tensor_leaves_centralization_to_the_whole_graph_and_rejects_unknown_graphs(monkeypatch):
    """Centralization reads each tensor's shape: such a group keeps the whole graph (equal to eager). An unknown
    ``graphs`` (or ``compile`` of create_optimizer) is refused, naming the choices."""
    monkeypatch.setattr(compiled, "_COMPILED", {})
    torch._dynamo.reset()
    shapes = [(6, 4), (6,), (3, 6)]
    result = run_per_tensor("adabelief", shapes, 4, compile=True, centralize="weights")
    assert [key[2] for key in compiled._COMPILED] == [False]  # no graph with symbolic sizes
    assert max_diff(result, run_per_tensor("adabelief", shapes, 4, compile=False, centralize="weights")) <= 1e-12
    opt = optarena.create_optimizer([torch.zeros(2, requires_grad=True)], "adamw")
    with pytest.raises(ValueError, match="Invalid graphs: 'fast'; expected one of 'whole', 'per_tensor'"):
        optarena.compile_step(opt, graphs="fast")
    with pytest.raises(ValueError, match="Invalid compile: 'fast'; expected True, False or one of 'whole', 'per_t"):
        optarena.create_optimizer([torch.zeros(2, requires_grad=True)], "adamw", compile="fast")
    per_tensor = optarena.create_optimizer([torch.zeros(2, requires_grad=True)], "adabelief", compile="per_tensor")
    assert per_tensor._compiled_step.per_tensor


def test_a_per_tensor_compile_failure_steps_the_rest_eagerly_and_nothing_twice(monkeypatch):
    """With graphs='per_tensor' a step's tensors go through their graphs one by one: where a later tensor's graph fails
    to compile (here the 1-value tensor's, which needs a graph of its own), the tensors already stepped are left and
    the others step eagerly, as does every later step; the run equals the eager one."""
    calls: list[int] = []
    original = compiled._CompiledUpdate.__call__

    def failing_second(self, kernel, slices, layout):
        calls.append(len(calls))
        if len(calls) == 2:
            raise RuntimeError("no C++ compiler")
        return original(self, kernel, slices, layout)

    monkeypatch.setattr(compiled, "_COMPILED", {})
    monkeypatch.setattr(compiled._CompiledUpdate, "__call__", failing_second)
    torch._dynamo.reset()
    shapes = [(6, 4), (6,), (1,), (3, 6)]
    with pytest.warns(RuntimeWarning, match=r"torch\.compile failed .*no C\+\+ compiler"):
        result = run_per_tensor("adabelief", shapes, 4, compile=True)
    assert calls == [0, 1]  # the first tensor compiled its graph, the second took it directly, the third failed
    assert max_diff(result, run_per_tensor("adabelief", shapes, 4, compile=False)) <= 1e-12
