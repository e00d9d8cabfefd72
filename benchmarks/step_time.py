"""Optimizer step time and memory, as ratios to torch's own AdamW measured in the same run.

Times ``optimizer.step()`` of every optarena engine optimizer (and, on request, the torch baselines
and the Lookahead wrappers) in each execution mode — ``for-loop`` (``foreach=False``, the reference
path), ``foreach`` (``foreach=True``) and, where a constructor accepts it, ``compiled`` or ``fused`` —
on fixed parameter sets shaped like real models. torch.optim.AdamW(fused=True) and
torch.optim.AdamW(foreach=True) are timed in the same process, interleaved with the candidates, so
that the machine's noise (other processes, frequency changes) hits reference and candidate alike:

* every configuration takes ``--warmup`` untimed steps (state allocation, first touch of memory);
* then ``--rounds`` rounds visit every configuration, plus a memory-copy probe, in a fresh random
  order; each visit takes one untimed step (caches) and times ``--steps`` single steps;
* on a CPU, each round first moves every large tensor a step touches (parameters, gradients, each
  configuration's state) to a new place within a 4 KiB page, drawn for the round and the same for every
  configuration (``--layout random``, :func:`relayout`). Where a loop's streams sit relative to one another
  changes its speed by up to ±10 % (a load that looks like a recent store's address to the CPU waits for it:
  4K aliasing), and a configuration's states land wherever the allocator put them at its first step: one
  draw for the whole run, which interleaving cannot average out;
* the result is, per round, the ratio of the median step times, and its median over the rounds (with
  the interquartile range).

The result columns are ratios, an effective bandwidth set against the copy bandwidth measured in the
same run, the optimizer-state bytes per parameter and the peak temporary memory of one step. A
median time alone is an intermediate: on a shared machine it changes from run to run by more than
the differences it is meant to show. See ``docs/performance.md``.

Run ``python benchmarks/step_time.py --help`` from the repository root.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib.util
import inspect
import logging
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

import optarena
from optarena.optim.base import PAGE, OptarenaOptimizer, empty_at_page_offset
from optarena.optim.hooks import LoopContext
from optarena.optim.info import OptimizerInfo
from optarena.optim.registry import create_optimizer, get_optimizer_info
from optarena.optim.wrapper import OptimizerWrapper

Shape = tuple[int, ...]
DEFAULT_OUT = Path("benchmarks/results/step_time.md")
MIB = 2**20

# --- parameter sets -----------------------------------------------------------------------------


def resnet18_shapes(num_classes: int = 1000) -> list[Shape]:
    """The 62 parameter shapes of torchvision's ``resnet18()`` (11,689,512 values), in module order.

    Written out rather than imported: torchvision is not installable beside the torch CPU build
    this project uses, and only the shapes matter to an optimizer step.
    """
    shapes: list[Shape] = [(64, 3, 7, 7), (64,), (64,)]  # conv1, bn1
    in_ch = 64
    for out_ch in (64, 128, 256, 512):  # layer1..layer4, two BasicBlocks each
        for block in range(2):
            downsample = block == 0 and out_ch != in_ch
            shapes += [(out_ch, in_ch, 3, 3), (out_ch,), (out_ch,), (out_ch, out_ch, 3, 3), (out_ch,), (out_ch,)]
            if downsample:
                shapes += [(out_ch, in_ch, 1, 1), (out_ch,), (out_ch,)]
            in_ch = out_ch
    shapes += [(num_classes, 512), (num_classes,)]  # fc
    return shapes


def transformer_shapes(blocks: int = 6, d: int = 512, mlp_ratio: int = 4) -> list[Shape]:
    """GPT-2-style blocks (ln1, fused qkv, attention proj, ln2, mlp up and down) and a final layernorm.

    No embedding: its gradient is dense here, and a vocabulary-sized matrix would dominate the set.
    """
    shapes: list[Shape] = []
    for _ in range(blocks):
        shapes += [(d,), (d,), (3 * d, d), (3 * d,), (d, d), (d,)]  # ln1, attn.qkv, attn.proj
        shapes += [(d,), (d,), (mlp_ratio * d, d), (mlp_ratio * d,), (d, mlp_ratio * d), (d,)]  # ln2, mlp
    return [*shapes, (d,), (d,)]


def tiny_shapes(count: int = 2000, size: int = 64) -> list[Shape]:
    """Many small tensors: the set where per-tensor overhead (Python, kernel launches) dominates."""
    return [(size,)] * count


def small_cnn_shapes() -> list[Shape]:
    """The arena's Fashion-MNIST CNN (two 3x3 convolutions, 16 and 32 channels, and a linear layer; 20,634
    values in 6 tensors): the set where the arena lives, and where per-step overhead (gathering, packing
    hyperparameters, dynamo's guards) rather than memory decides."""
    return [(16, 1, 3, 3), (16,), (32, 16, 3, 3), (32,), (10, 1568), (10,)]


def huge_shapes() -> list[Shape]:
    """One 4096 x 4096 tensor (16.8M values): the set where memory bandwidth alone decides."""
    return [(4096, 4096)]


PARAM_SETS: dict[str, Callable[[], list[Shape]]] = {
    "resnet18": resnet18_shapes,
    "transformer": transformer_shapes,
    "tiny": tiny_shapes,
    "small_cnn": small_cnn_shapes,
    "huge": huge_shapes,
}


def scale_shapes(shapes: Iterable[Shape], scale: float) -> list[Shape]:
    """Shrink (or grow) each tensor's leading dimension by ``scale``, keeping at least 1.

    The tensor count stays, so the per-tensor overhead a set is meant to show stays too; only
    the bytes each step moves change.
    """
    if scale == 1.0:
        return list(shapes)
    return [(max(1, round(s[0] * scale)), *s[1:]) for s in shapes]


def numel(shapes: Iterable[Shape]) -> int:
    return sum(math.prod(s) for s in shapes)


# --- execution modes ----------------------------------------------------------------------------


def flat_capable(info: OptimizerInfo) -> bool:
    """Whether the optimizer's foreach step can run on flat buffers (an engine optimizer with an elementwise kernel)."""
    return issubclass(info.cls, OptarenaOptimizer) and info.cls.elementwise_kernel


def accepts(cls: type, argument: str) -> bool:
    """Whether ``cls``'s constructor takes the keyword ``argument``."""
    try:
        return argument in inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class Mode:
    """One way of executing an optimizer: the keyword arguments that select it, and where it exists."""

    kwargs: dict[str, Any]
    available: Callable[[OptimizerInfo], bool]


def compilable(info: OptimizerInfo) -> bool:
    return issubclass(info.cls, OptarenaOptimizer) and info.cls.not_compilable is None


# Third-party implementations of the same algorithms, timed beside ours: kozistr's pytorch-optimizer
# (the test extra pins it). timm's optimizers need torchvision, which does not import beside the
# CPU build of torch used here, so timm is not timed.
THIRD_PARTY: dict[str, str] = {
    "adan": "Adan",
    "adabelief": "AdaBelief",
    "lion": "Lion",
    "adabound": "AdaBound",
    "swats": "SWATS",
}


def third_party_available(info: OptimizerInfo) -> bool:
    return info.name in THIRD_PARTY and importlib.util.find_spec("pytorch_optimizer") is not None


# Adding a mode is one entry here. ``compiled`` is optarena.compile_step (torch.compile, fullgraph);
# warm-up steps include its one-time compilation, which is not timed.
MODES: dict[str, Mode] = {
    "for-loop": Mode({"foreach": False}, lambda info: True),
    "foreach": Mode({"foreach": True}, lambda info: info.supports_foreach),
    # The foreach step with the flat step of small CPU groups off (optarena.optim.flat): one kernel per tensor.
    "foreach-lists": Mode({"foreach": True, "flat": False}, lambda info: flat_capable(info)),
    "fused": Mode({"fused": True}, lambda info: info.supports_fused and accepts(info.cls, "fused")),
    "compiled": Mode({"compile": True}, compilable),
    # The compiled step with the flat step off: a small group enters the graph as per-tensor lists.
    "compiled-lists": Mode({"compile": True, "flat": False}, lambda info: compilable(info) and flat_capable(info)),
    # compile_step(graphs='per_tensor'): each tensor through one graph with a symbolic size (compile time that does
    # not grow with the tensor count), for an elementwise kernel.
    "compiled-per-tensor": Mode({"compile": "per_tensor"}, lambda info: compilable(info) and flat_capable(info)),
    "kozistr": Mode({}, third_party_available),
}

#: Modes timed only when asked for by name (--modes): variants of the compiled step for the questions they answer.
OPT_IN_MODES = ("compiled-lists", "compiled-per-tensor")

REFERENCE_NAME = "torch AdamW"
REFERENCE_MODES = ("fused", "foreach")


# --- configurations and what is measured ---------------------------------------------------------


@dataclass
class Config:
    """One (optimizer, mode) pair being timed, and its measurements."""

    name: str
    mode: str
    build: Callable[[list[Tensor]], Optimizer]
    reference: bool = False
    optimizer: Optimizer | None = None
    times: list[float] = field(default_factory=list)  # seconds, every timed step
    round_medians: list[float] = field(default_factory=list)
    state_bytes: int = 0
    peak_extra_bytes: int | None = None
    note: str = ""
    compile_fell_back: bool = False  # a compiled mode whose compile failed: the eager step was timed

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.mode)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def is_engine(info: OptimizerInfo) -> bool:
    """An optarena engine optimizer on its own (Lookahead wrappers are asked for by name)."""
    return issubclass(info.cls, OptarenaOptimizer) and not info.defaults.get("lookahead")


def is_wrapper(info: OptimizerInfo) -> bool:
    return bool(info.defaults.get("lookahead"))


# The gradient transforms' cost (docs/algorithms/transforms.md): optarena's AdamW (``adamw_agr`` with AGR off)
# with none, then each transform alone, then all of them; the group ``transforms`` of --optimizers.
TRANSFORM_CASES: dict[str, dict[str, Any]] = {
    "adamw (engine)": {"agr": None},
    "+ clip_norm": {"agr": None, "clip_norm": 1.0},
    "+ clip_value": {"agr": None, "clip_value": 1.0},
    "+ centralize": {"agr": None, "centralize": "weights"},
    "+ normalize norm": {"agr": None, "normalize": "norm"},
    "+ normalize std": {"agr": None, "normalize": "std"},
    "+ agr": {"agr": "code"},
    "+ all five": {"clip_norm": 1.0, "clip_value": 1.0, "centralize": "weights", "normalize": "norm", "agr": "code"},
}
TRANSFORM_BASE = "adamw_agr"


def resolve_optimizers(spec: str) -> list[str]:
    """Registry names from ``spec``: names and the groups ``engine``, ``baselines``, ``wrappers``, ``all``
    (``transforms`` is read by :func:`make_configs`)."""
    names = optarena.list_optimizers()
    groups = {
        "engine": [n for n in names if is_engine(get_optimizer_info(n))],
        "wrappers": [n for n in names if is_wrapper(get_optimizer_info(n))],
        "baselines": [
            n
            for n in names
            if not issubclass(get_optimizer_info(n).cls, OptarenaOptimizer) and not is_wrapper(get_optimizer_info(n))
        ],
        "all": names,
    }
    chosen: list[str] = []
    for item in (part.strip().lower() for part in spec.split(",")):
        if not item or item == "transforms":
            continue
        for name in groups.get(item, [item]):
            get_optimizer_info(name)  # a ValueError naming the valid names if unknown
            if name not in chosen:
                chosen.append(name)
    return chosen


def make_configs(names: Sequence[str], modes: Sequence[str], transforms: bool = False) -> list[Config]:
    """The two references first, then every (optimizer, mode) the optimizer supports, then (with
    ``transforms``) every :data:`TRANSFORM_CASES` entry in the foreach and compiled modes asked for."""
    configs = [
        Config(
            REFERENCE_NAME,
            mode,
            lambda params, kw=MODES[mode].kwargs: torch.optim.AdamW(params, **kw),
            reference=True,
        )
        for mode in REFERENCE_MODES
    ]
    for name in names:
        info = get_optimizer_info(name)
        for mode in modes:
            if not MODES[mode].available(info):
                continue
            if name == "adamw" and mode in REFERENCE_MODES:
                continue  # the same configuration as a reference; timing it twice adds nothing
            if mode == "kozistr":
                configs.append(Config(name, mode, lambda params, n=name: third_party(n, params)))
                continue
            # What a training loop supplies (Adaburst's total_steps): a run longer than any benchmark.
            supplied = info.hooks.options(LoopContext(total_steps=1_000_000))
            kwargs = {**supplied, **MODES[mode].kwargs}
            configs.append(Config(name, mode, lambda params, n=name, kw=kwargs: create_optimizer(params, n, **kw)))
    for label, options in TRANSFORM_CASES.items() if transforms else ():
        for mode in (m for m in modes if m in ("foreach", "compiled", "compiled-per-tensor")):
            kwargs = {**options, **MODES[mode].kwargs}
            build = lambda params, kw=kwargs: create_optimizer(params, TRANSFORM_BASE, **kw)  # noqa: E731
            configs.append(Config(label, mode, build))
    return configs


def third_party(name: str, params: list[Tensor]) -> Optimizer:
    """kozistr's implementation of ``name`` with its own defaults (lr 1e-3)."""
    import pytorch_optimizer

    return getattr(pytorch_optimizer, THIRD_PARTY[name])(params, lr=1e-3)


def tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor reachable through dicts, lists and tuples in ``obj``."""
    if isinstance(obj, Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def state_bytes(optimizer: Optimizer) -> int:
    """Bytes held in ``optimizer.state`` (step counters included), plus a wrapper's own state.

    Lookahead keeps its slow weights outside ``optimizer.state``; its ``_wrapper_state()`` (what
    ``state_dict()`` saves) holds them, so they are counted too.
    """
    total = sum(tensor_bytes(s) for s in optimizer.state.values())
    if isinstance(optimizer, OptimizerWrapper):
        total += tensor_bytes(optimizer._wrapper_state())
    return total


COMPILE_FAILED = "torch.compile failed (its warning is in the log): the eager foreach step was timed"


def compile_failed(config: Config) -> bool:
    """Whether a compiled mode's optimizer fell back to its eager step (optarena drops its compiled step then)."""
    optimizer = config.optimizer
    while isinstance(optimizer, OptimizerWrapper):
        optimizer = optimizer.optimizer
    return config.mode.startswith("compiled") and getattr(optimizer, "_compiled_step", True) is None


def phase_note(optimizer: Optimizer) -> str:
    """What the timed steps ran when an optimizer changes its update mid-run (SWATS: Adam, then SGD)."""
    phases = {g["swats_phase"] for g in optimizer.param_groups if "swats_phase" in g}
    phases |= {s["swats_phase"] for s in optimizer.state.values() if isinstance(s, dict) and "swats_phase" in s}
    if phases and phases != {"adam"}:
        return f"SWATS phase after warm-up: {'/'.join(sorted(phases))} (constant gradients switch it at once)"
    return ""


def peak_extra_bytes(optimizer: Optimizer, device: torch.device) -> int | None:
    """Peak memory one step allocates above what is live when it starts (None where it cannot be measured).

    CUDA: the caching allocator's own peak counter. CPU: torch's CPU allocator keeps no peak, and
    process RSS mixes in the Python heap and pages malloc keeps; but with ``profile_memory=True``
    the profiler records every allocation and free of torch's CPU allocator with its size, in order,
    so the running sum of those records is exact at the allocator level. It reads the profiler's
    raw event list (``kineto_results``, not a documented API): if that is missing, the answer is None.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        optimizer.step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    if device.type != "cpu":
        return None
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        optimizer.step()
    try:
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        events.sort(key=lambda e: e.start_ns())  # stable: same-time records keep their order
        current = peak = 0
        for event in events:
            current += event.nbytes()
            peak = max(peak, current)
    except AttributeError:
        return None
    return peak


# --- the memory allocator -------------------------------------------------------------------------

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
MALLOC_POLICIES = ("reuse", "fresh", "system")


def set_malloc_policy(policy: str) -> str:
    """Fix how glibc's malloc (torch's CPU allocator) recycles freed memory; returns a description.

    A step that allocates temporaries (every foreach path, most for-loop paths; never fused AdamW)
    costs very different times depending on whether malloc hands back memory it already has or
    fresh pages the kernel must fault in and zero. glibc decides with a *dynamic* mmap threshold
    that rises with the sizes freed so far, so by default the answer depends on what the process
    — here: the other configurations — did before (AdaX foreach on the ResNet-18 set measured
    88 ms among 29 configurations and 37 ms among 4). The policy removes that history:

    * ``reuse``: never mmap, never trim: freed memory is reused, as in a long-running training
      process (and as the CUDA caching allocator does). Temporaries cost their memory passes.
    * ``fresh``: every block of 128 KiB or more is mmapped and unmapped: temporaries also pay
      their page faults, every step.
    * ``system``: leave malloc alone (history-dependent, as explained).

    It applies to the whole process and cannot be undone, so a caller that shares the process
    (a test) should pass ``system``.
    """
    if policy == "system":
        return "system malloc defaults (glibc's dynamic mmap threshold: timings of allocating steps depend on history)"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return f"system malloc ({policy!r} asked for, but mallopt is not available)"
    if policy == "reuse":
        ok = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
        note = "reuse (glibc mallopt: no mmap, no trim; freed memory is reused, temporaries cause no page faults)"
    else:
        ok = mallopt(M_MMAP_THRESHOLD, 128 * 1024) == 1 and mallopt(M_TRIM_THRESHOLD, 128 * 1024) == 1
        note = "fresh (glibc mallopt: blocks of 128 KiB or more are mmapped each time; temporaries fault their pages)"
    return note if ok else f"system malloc (mallopt refused {policy!r})"


# --- timing ---------------------------------------------------------------------------------------


def synchronizer(device: torch.device) -> Callable[[], None]:
    """What must run before reading the clock: CUDA work is asynchronous, CPU work is not."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


#: ``--layout``: what the report says of where the tensors sit (see :func:`relayout`).
LAYOUTS = {
    "random": "each round, every tensor of 128 KiB or more (parameters, gradients, states) moved to a place within a "
    "4 KiB page drawn for the round, the same for every configuration",
    "as-allocated": "tensors where they were allocated (a configuration's states: at its first step), for the run",
}

#: ``wall``: elapsed time. ``thread``: the CPU time of the calling thread, which on a shared machine leaves out the
#: time the process waits for a core (with one torch thread on a CPU the whole step runs on the calling thread);
#: it still includes what sharing the memory bus and the caches costs.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "thread": time.thread_time}


def time_calls(
    fn: Callable[[], Any], count: int, sync: Callable[[], None], clock: Callable[[], float] = time.perf_counter
) -> list[float]:
    """Seconds of each of ``count`` calls of ``fn``, each timed on its own by ``clock``."""
    out = []
    for _ in range(count):
        sync()
        start = clock()
        fn()
        sync()
        out.append(clock() - start)
    return out


@dataclass
class SetResult:
    """Everything measured on one parameter set."""

    name: str
    shapes: list[Shape]
    configs: list[Config]
    copy_bytes: int
    copy_times: list[float]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    seconds: float
    finite: bool

    @property
    def params(self) -> int:
        return numel(self.shapes)

    @property
    def copy_gbs(self) -> float:
        # A copy reads and writes every byte once.
        return 2 * self.copy_bytes / statistics.median(self.copy_times) / 1e9

    def reference(self, mode: str) -> Config:
        return next(c for c in self.configs if c.reference and c.mode == mode)


#: The alignment torch's CPU allocator gives every tensor: the places :func:`relayout` draws from are its multiples.
CPU_ALIGNMENT = 64
#: Tensors smaller than this stay where they are: their loops are short, and the step's time is the large ones'.
RELAYOUT_MIN_BYTES = 128 * 1024


def placed(tensor: Tensor, offset: int) -> Tensor:
    """A copy of contiguous ``tensor`` whose first element sits ``offset`` bytes past a page boundary."""
    return empty_at_page_offset(tensor.shape, tensor.dtype, tensor.device, offset).copy_(tensor)


def relayout(params: list[Tensor], optimizers: list[Optimizer], offset: Callable[[int], int]) -> None:
    """Move each large parameter, its gradient and every optimizer's state tensors of its shape to new places within
    a page: ``offset(role)`` bytes past a page boundary, asked once per parameter and role (0: the parameter, 1: its
    gradient, 2 + k: every optimizer's k-th state tensor of the parameter's shape, one place for all of them)."""
    for p in params:
        if p.numel() * p.element_size() < RELAYOUT_MIN_BYTES or not p.is_contiguous():
            continue
        p.data = placed(p.data, offset(0))
        assert p.grad is not None
        p.grad = placed(p.grad, offset(1))
        state_offsets: list[int] = []
        for optimizer in optimizers:
            state = optimizer.state.get(p, {})
            keys = [k for k, v in state.items() if isinstance(v, Tensor) and v.shape == p.shape and v.is_contiguous()]
            for k, key in enumerate(keys):
                if k == len(state_offsets):
                    state_offsets.append(offset(2 + k))
                state[key] = placed(state[key], state_offsets[k])


def random_offsets(rng: random.Random) -> Callable[[int], int]:
    """Offsets for :func:`relayout` drawn from ``rng``, anywhere in a page torch's CPU allocator can put a tensor."""
    return lambda role: rng.randrange(PAGE // CPU_ALIGNMENT) * CPU_ALIGNMENT


def parameters_with_gradients(shapes: list[Shape], device: torch.device, generator: torch.Generator) -> list[Tensor]:
    """Random parameters of ``shapes`` on ``device``, each with a random gradient (made on the CPU, then moved)."""
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.randn(shape, generator=generator).to(device))
        p.grad = torch.randn(shape, generator=generator).to(device)
        params.append(p)
    return params


def run_set(name: str, shapes: list[Shape], configs: list[Config], args: argparse.Namespace) -> SetResult:
    """Warm up, then time every configuration round-robin; then measure state and peak memory."""
    device = torch.device(args.device)
    sync = synchronizer(device)
    generator = torch.Generator().manual_seed(args.seed)
    # One set of parameters shared by every configuration, so that memory stays bounded by the
    # optimizer states; the values never change the speed of these elementwise updates (checked
    # to stay finite below, as NaN or denormal values could). Gradients are fixed random
    # tensors, set once: the step reads them and must not pay for making them.
    params = parameters_with_gradients(shapes, device, generator)
    copy_numel = args.copy_mb * MIB // 4
    copy_src = torch.randn(copy_numel, generator=generator).to(device)
    copy_dst = torch.empty_like(copy_src)
    copy_times: list[float] = []

    load_before = os.getloadavg()
    start = time.perf_counter()
    for config in configs:
        config.optimizer = config.build(params)
        for _ in range(args.warmup):
            config.optimizer.step()
        config.state_bytes = state_bytes(config.optimizer)
        config.compile_fell_back = compile_failed(config)
        config.note = COMPILE_FAILED if config.compile_fell_back else phase_note(config.optimizer)
    copy_dst.copy_(copy_src)

    rng = random.Random(args.seed)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside a timed step would be charged to whichever config runs then
    try:
        for _ in range(args.rounds):
            if args.layout == "random" and device.type == "cpu":
                relayout(params, [c.optimizer for c in configs if c.optimizer is not None], random_offsets(rng))
            visits: list[Config | None] = [*configs, None]  # None: the copy-bandwidth probe
            rng.shuffle(visits)
            for config in visits:
                if config is None:
                    copy_times += time_calls(lambda: copy_dst.copy_(copy_src), args.steps, sync, CLOCKS[args.clock])
                    continue
                assert config.optimizer is not None
                config.optimizer.step()  # untimed: bring this config's data back into the caches
                times = time_calls(config.optimizer.step, args.steps, sync, CLOCKS[args.clock])
                config.times += times
                config.round_medians.append(statistics.median(times))
    finally:
        if gc_was_enabled:
            gc.enable()
    load_after = os.getloadavg()

    if args.memory:
        for config in configs:
            assert config.optimizer is not None
            config.peak_extra_bytes = peak_extra_bytes(config.optimizer, device)
    seconds = time.perf_counter() - start
    finite = all(bool(torch.isfinite(p).all()) for p in params)
    for config in configs:
        config.optimizer = None  # free the states before the next set
    return SetResult(name, shapes, configs, copy_numel * 4, copy_times, load_before, load_after, seconds, finite)


# --- report ---------------------------------------------------------------------------------------

COLUMNS = (
    "optimizer",
    "mode",
    "median ms/step",
    "× torch fused AdamW",
    "× torch foreach AdamW",
    "GB/s (est.)",
    "% of copy GB/s",
    "state B/param",
    "peak extra MiB",
    "peak extra B/param",
    "note",
)


def round_ratios(config: Config, ref: Config) -> list[float]:
    """Per-round ratios: both medians of a round were taken seconds apart, under the same load."""
    return [a / b for a, b in zip(config.round_medians, ref.round_medians)]


def ratio(config: Config, ref: Config) -> float:
    """The headline: the median over rounds of the per-round ratio of median step times.

    Pairing within a round cancels what changes slowly on a shared machine (another job's phase);
    the median over rounds discards a round hit by a burst of load.
    """
    return statistics.median(round_ratios(config, ref))


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """The 25th and 75th percentiles (the middle half: robust to the odd round hit by a burst of load)."""
    if len(values) < 2:
        return (values[0], values[0])
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return (q1, q3)


def ratio_text(config: Config, ref: Config) -> str:
    """The ratio, with the interquartile range of per-round ratios when there are several rounds."""
    rounds = round_ratios(config, ref)
    if len(rounds) < 2:
        return f"{ratio(config, ref):.2f}"
    low, high = quartiles(rounds)
    return f"{ratio(config, ref):.2f} ({low:.2f}–{high:.2f})"


def moved_bytes(config: Config, params: int, param_bytes: int = 4) -> int:
    """Bytes a step must move at least: read params, grads and state; write params and state."""
    return 3 * params * param_bytes + 2 * config.state_bytes


def table_rows(result: SetResult) -> list[list[str]]:
    fused, foreach = result.reference("fused"), result.reference("foreach")
    rows = []
    for c in result.configs:
        gbs = moved_bytes(c, result.params) / c.median / 1e9
        peak = c.peak_extra_bytes
        rows.append(
            [
                c.name,
                c.mode,
                f"{c.median * 1e3:.3f}",
                ratio_text(c, fused),
                ratio_text(c, foreach),
                f"{gbs:.1f}",
                f"{100 * gbs / result.copy_gbs:.0f}",
                f"{c.state_bytes / result.params:.2f}",
                "n/a" if peak is None else f"{peak / MIB:.1f}",
                "n/a" if peak is None else f"{peak / result.params:.2f}",
                c.note,
            ]
        )
    return rows


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# The targets on the ResNet-18 and transformer sets (docs/performance.md). Compiled: at the memory roofline, i.e.
# what fused AdamW costs, for every optimizer whose state traffic equals AdamW's (28 B/param; Lion moves less);
# Adan's four states are 44 B/param (1.57x); AGR reads the gradient once more for its L1 norm, so it is held
# to 1.20x its base optimizer's compiled step (optarena's AdamW, "adamw (engine)", in a --optimizers transforms
# run; fused AdamW stands in for that base in other runs).
TARGET_OPTIMIZERS = ("adaburst", "adamnx", "adax", "adamw_agr", "adan", "adabelief", "lion")
TARGET_COMPILED_VS_FUSED = {"adan": 1.65, "adamw_agr": 1.20}  # every other: 1.05
TARGET_COMPILED_DEFAULT = 1.05
TARGET_FOREACH_VS_FOREACH = 1.20
TARGET_STATE_LIKE_ADAMW = ("adaburst", "adamnx")
TARGET_SETS = ("resnet18", "transformer")


def verdict(config: Config, ref: Config, target: float) -> tuple[str, str]:
    """(measured, verdict) of "config's step time ≤ target × ref's", flagging verdicts within the noise."""
    measured = ratio(config, ref)
    if config.compile_fell_back:
        return f"{measured:.2f}", "not measured: torch.compile failed, the eager step was timed"
    low, high = quartiles(round_ratios(config, ref))
    word = "met" if measured <= target else "missed"
    if low <= target <= high and len(config.round_medians) > 1:
        word += f" (borderline: per-round IQR {low:.2f}–{high:.2f} contains {target:.2f})"
    return f"{measured:.2f}", word


def target_rows(result: SetResult) -> list[list[str]]:
    """Met / missed / not measured for each target whose optimizer is in this run."""
    by_key = {c.key: c for c in result.configs}
    fused, foreach = result.reference("fused"), result.reference("foreach")
    rows = []
    for name in TARGET_OPTIMIZERS:
        if not any(c.name == name for c in result.configs):
            continue
        compiled = by_key.get((name, "compiled"))
        target = TARGET_COMPILED_VS_FUSED.get(name, TARGET_COMPILED_DEFAULT)
        if compiled is None:
            rows.append([name, f"compiled ≤ {target:.2f}× fused AdamW", "—", "not yet measured"])
        else:
            rows.append([name, f"compiled ≤ {target:.2f}× fused AdamW", *verdict(compiled, fused, target)])
        fe = by_key.get((name, "foreach"))
        if fe is not None:
            target = TARGET_FOREACH_VS_FOREACH
            rows.append([name, f"foreach ≤ {target:.2f}× foreach AdamW", *verdict(fe, foreach, target)])
        if name in TARGET_STATE_LIKE_ADAMW and fe is not None:
            mine, adamw = fe.state_bytes / result.params, fused.state_bytes / result.params
            word = "met" if math.isclose(fe.state_bytes, fused.state_bytes, rel_tol=1e-3) else "missed"
            rows.append([name, "state B/param = AdamW's", f"{mine:.2f} vs {adamw:.2f}", word])
    for mode in ("compiled", "compiled-per-tensor"):  # a --optimizers transforms run: AGR against its own base
        agr, base = by_key.get(("+ agr", mode)), by_key.get(("adamw (engine)", mode))
        if agr is not None and base is not None:
            target = TARGET_COMPILED_VS_FUSED["adamw_agr"]
            goal = f"{mode} ≤ {target:.2f}× its base (adamw (engine), {mode})"
            rows.append(["adamw + agr", goal, *verdict(agr, base, target)])
    return rows


def render(results: Sequence[SetResult], args: argparse.Namespace) -> str:
    """The whole report as Markdown."""
    threads = torch.get_num_threads()
    out = [
        "# Optimizer step time and memory",
        "",
        f"torch {torch.__version__}, device {args.device}, {threads} torch thread(s), "
        f"{os.cpu_count()} CPU(s), fp32 parameters, {args.clock} clock. Ratios are medians over {args.rounds} round(s) "
        f"× {args.steps} timed step(s), after {args.warmup} warm-up step(s): the median over rounds of "
        "the per-round ratio of median step times; in brackets, the interquartile range of the per-round ratios. "
        f"Memory allocator: {args.malloc_note}. Layout: {LAYOUTS[args.layout] if args.device == 'cpu' else 'n/a'}.",
        "",
        "Command: `python benchmarks/step_time.py " + " ".join(args.argv) + "`",
    ]
    cpus = os.cpu_count() or 1
    busiest = max(r.load_before[0] for r in results) if results else 0.0
    if busiest + threads > cpus:
        out += [
            "",
            f"**Shared machine:** a 1-minute load average of {busiest:.2f} beside {threads} torch thread(s) on "
            f"{cpus} CPU(s) means other processes compete for the cores. With more than one thread an OpenMP "
            "thread then waits for a descheduled peer, which can inflate a step many times over; "
            "`--threads 1` is the robust setting there. Ratios within this run remain comparable.",
        ]
    for r in results:
        load = ", ".join(f"{x:.2f}" for x in r.load_before) + " → " + ", ".join(f"{x:.2f}" for x in r.load_after)
        out += [
            "",
            f"## {r.name} (scale {args.scale:g}): {len(r.shapes)} tensors, {r.params:,} parameters",
            "",
            f"Load average (1, 5, 15 min) before → after: {load}. Copy bandwidth measured in the same "
            f"run: {r.copy_gbs:.1f} GB/s ({args.copy_mb} MiB buffer, read + write). "
            f"Set measured in {r.seconds:.0f} s.",
        ]
        if not r.finite:
            out += ["", "**Warning:** parameters became non-finite during the run; the timings may not be typical."]
        out += ["", markdown_table(COLUMNS, table_rows(r))]
        targets = target_rows(r) if r.name in TARGET_SETS else []
        if targets:
            out += ["", f"### Targets ({r.name} set)", ""]
            out.append(markdown_table(("optimizer", "target", "measured", "verdict"), targets))
            if args.scale != 1.0:
                out += ["", f"(At scale {args.scale:g}: the targets are defined at full scale.)"]
    return "\n".join(out) + "\n"


def plot(results: Sequence[SetResult], path: Path) -> None:
    """Horizontal bars of the two ratios per configuration, one row of panels per set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {
        "for-loop": "tab:blue",
        "foreach": "tab:orange",
        "foreach-lists": "tab:brown",
        "fused": "tab:green",
        "compiled": "tab:red",
        "compiled-lists": "tab:pink",
        "compiled-per-tensor": "tab:olive",
        "kozistr": "tab:purple",
    }
    height = max(3.0, 0.22 * max(len(r.configs) for r in results) + 1.2)
    fig, axes = plt.subplots(len(results), 2, figsize=(12, height * len(results)), squeeze=False)
    for row, r in zip(axes, results):
        for ax, ref_mode, target in zip(row, REFERENCE_MODES, (TARGET_COMPILED_DEFAULT, TARGET_FOREACH_VS_FOREACH)):
            ref = r.reference(ref_mode)
            labels = [f"{c.name} [{c.mode}]" for c in r.configs]
            ratios = [ratio(c, ref) for c in r.configs]
            bars = ax.barh(range(len(ratios)), ratios, color=[colors.get(c.mode, "grey") for c in r.configs])
            ax.bar_label(bars, labels=[f"{x:.2f}" for x in ratios], fontsize=6, padding=2)
            ax.set_yticks(range(len(labels)), labels, fontsize=7)
            ax.invert_yaxis()
            ax.set_xlim(0, max(ratios) * 1.12)
            ax.axvline(1.0, color="black", linewidth=0.8)
            ax.axvline(target, color="grey", linestyle="--", linewidth=0.8)
            ax.set_title(f"{r.name}: step time / torch {ref_mode} AdamW (dashed: {target:.2f}×)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --- command line ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time optimizer.step() of optarena optimizers as ratios to torch AdamW (fused and foreach), "
        "measured interleaved in the same run; report effective bandwidth, state bytes and peak step memory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--sets",
        default="resnet18",
        help=f"comma-separated parameter sets among {', '.join(PARAM_SETS)}, or 'all'",
    )
    parser.add_argument(
        "--optimizers",
        default="engine",
        help="comma-separated registry names or groups: engine (optarena engine optimizers), baselines "
        "(torch's), wrappers (lookahead_*), all, transforms (optarena's AdamW with each gradient transform)",
    )
    parser.add_argument(
        "--modes",
        default=",".join(m for m in MODES if m not in OPT_IN_MODES),
        help="comma-separated modes to try; each runs only where the optimizer supports it "
        "(compiled: optarena.compile_step; kozistr: pytorch-optimizer's implementation, where it has one); "
        f"the default is every mode but {', '.join(OPT_IN_MODES)} (asked for by name); all: {', '.join(MODES)}",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply each tensor's leading dimension")
    parser.add_argument("--rounds", type=int, default=10, help="round-robin passes over all configurations")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per configuration before round 1")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--clock",
        choices=list(CLOCKS),
        default="wall",
        help="wall: elapsed time; thread: the calling thread's CPU time (a CPU with --threads 1 only), which leaves "
        "out the time other processes hold the core",
    )
    parser.add_argument("--copy-mb", type=int, default=256, help="buffer size of the copy-bandwidth probe")
    parser.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the peak extra memory of one step per configuration",
    )
    parser.add_argument(
        "--malloc",
        choices=MALLOC_POLICIES,
        default="reuse",
        help="how the CPU allocator recycles memory (see set_malloc_policy); applies to the whole process",
    )
    parser.add_argument(
        "--layout",
        choices=list(LAYOUTS),
        default="random",
        help="random: each round moves every large tensor of a step to places drawn for the round, the same for "
        "every configuration (see relayout); as-allocated: tensors stay where they were allocated for the run",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown report")
    parser.add_argument("--png", type=Path, default=None, help="bar chart (default: --out with .png)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    sets = list(PARAM_SETS) if args.sets.strip() == "all" else [s.strip() for s in args.sets.split(",") if s.strip()]
    for s in sets:
        if s not in PARAM_SETS:
            parser.error(f"unknown set {s!r}; valid: {', '.join(PARAM_SETS)}, all")
    args.set_names = sets
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            parser.error(f"unknown mode {m!r}; valid: {', '.join(MODES)}")
    args.mode_names = modes
    if args.scale <= 0 or args.rounds < 1 or args.steps < 1 or args.warmup < 1 or args.copy_mb < 1:
        parser.error("--scale, --rounds, --steps, --warmup and --copy-mb must be positive")
    if args.clock == "thread" and (args.device != "cpu" or args.threads != 1):
        parser.error("--clock thread measures one thread: it needs --device cpu and --threads 1")
    if args.png is None:
        args.png = args.out.with_suffix(".png")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the Markdown report and write it (and the chart) to disk."""
    args = parse_args(argv)
    # A compile that falls back to eager: its traceback in the log, beside the warning (where inductor failed).
    logging.basicConfig(format="%(name)s: %(message)s")
    logging.getLogger("optarena.optim.compiled").setLevel(logging.INFO)
    names = resolve_optimizers(args.optimizers)
    args.malloc_note = set_malloc_policy(args.malloc) if args.device == "cpu" else "the device's own allocator"
    threads_before = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        results = []
        for set_name in args.set_names:
            shapes = scale_shapes(PARAM_SETS[set_name](), args.scale)
            configs = make_configs(names, args.mode_names, transforms="transforms" in args.optimizers.lower())
            print(
                f"[{set_name}] {len(shapes)} tensors, {numel(shapes):,} parameters, {len(configs)} configurations",
                file=sys.stderr,
                flush=True,
            )
            results.append(run_set(set_name, shapes, configs, args))
        report = render(results, args)
    finally:
        torch.set_num_threads(threads_before)  # a caller (e.g. a test session) keeps its own setting
    print(report, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    plot(results, args.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
