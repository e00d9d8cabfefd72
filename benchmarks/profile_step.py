"""Where one optimizer step's time goes: host time, kernels per step and kernel time, under torch.profiler.

For each optimizer (compiled step, and with ``--foreach`` its foreach step too) and torch's fused and foreach AdamW on
one parameter set of ``benchmarks/step_time.py``: the median host time of ``step()`` (the Python call returning,
before the device finishes) and past torch's step wrapper (its step hooks and profiler label: torch's optimizers
pay it every step, optarena's only with a hook or the profiler on), the wall time of a step with the device
synchronized, and from one profiled window the kernels launched per step, their summed device time, the steps that
went through dynamo's frame (a compiled step called directly does not), and the costliest kernels; for a compiled
whole-graph step, the engine's parts each called alone and (on a CPU) the same parts timed inside real steps, where
the update before them has left the tensors' metadata cold, beside torch's fused AdamW outside its kernel. A
``--variant NAME:KEY=VALUE,...`` compiles the step again with those inductor options (``torch._inductor.config``,
literals only), e.g. ``--variant combo:combo_kernels=True``.

This explains a ratio of step_time.py; it is not one: the times here are one window of one run, not interleaved
rounds. Run from the repository root: ``python benchmarks/profile_step.py --help``.
"""

from __future__ import annotations

import argparse
import ast
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.optim import Optimizer
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import step_time

#: Profiler events that mark a step entering dynamo's frame (a direct call of the compiled module has neither).
DYNAMO_EVENTS = ("Torch-Compiled Region", "TorchDynamo Cache Lookup")


@dataclass
class Row:
    label: str
    build: Callable[[list[torch.Tensor]], Optimizer]
    options: dict[str, Any] = field(default_factory=dict)
    host_us: float = 0.0
    unwrapped_us: float = 0.0  # step() past torch's step wrapper (hooks, the profiler's label)
    wall_us: float = 0.0
    kernels: float = 0.0
    kernel_us: float = 0.0
    dynamo_steps: float = 0.0
    top: list[tuple[str, float, float]] = field(default_factory=list)  # name, calls per step, µs per step
    parts: list[tuple[str, float]] = field(default_factory=list)  # the engine's parts of a compiled step, host µs
    in_step: list[tuple[str, float]] = field(default_factory=list)  # the same inside real steps (and torch's)
    optimizer: Optimizer | None = None  # between timing and profiling


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME:KEY=VALUE,...`` → (NAME, {KEY: literal}); an unknown inductor option is refused by name."""
    from torch._inductor import config

    name, _, body = text.partition(":")
    if not name or not body:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: expected NAME:KEY=VALUE[,KEY=VALUE...]")
    options = {}
    for item in body.split(","):
        key, _, value = item.partition("=")
        if key not in config._config:
            raise argparse.ArgumentTypeError(f"--variant {name}: {key!r} is not an option of torch._inductor.config")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise argparse.ArgumentTypeError(f"--variant {name}: {key}={value!r} is not a Python literal") from None
    return name, options


def make_rows(names: Sequence[str], variants: Sequence[tuple[str, dict[str, Any]]], foreach: bool) -> list[Row]:
    rows = [
        Row(f"torch AdamW {mode}", lambda params, kw=step_time.MODES[mode].kwargs: torch.optim.AdamW(params, **kw))
        for mode in step_time.REFERENCE_MODES
    ]
    modes = ["compiled", *(["foreach"] if foreach else [])]
    for config in step_time.make_configs(names, modes):
        if config.reference:
            continue
        if config.mode != "compiled":
            rows.append(Row(f"{config.name} {config.mode}", config.build))
            continue
        for variant, options in [("", {}), *variants]:
            rows.append(Row(f"{config.name} compiled{' ' + variant if variant else ''}", config.build, options))
    return rows


def host_us(fn: Callable[[], Any], count: int) -> float:
    """Median host µs of ``fn`` (the device is not waited for: what the host spends launching)."""
    fn()
    times = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(times)


@torch.no_grad()
def whole_graph_step(optimizer: Optimizer) -> tuple[Any, Any, Any, list[Any], Any] | None:
    """For an optarena optimizer compiled as a whole graph: the engine optimizer, its compiled step, its first group's
    work and slices (gathered here: its step counts advance once more, harmless to a benchmark) and their direct call
    (None before it exists); None for any other optimizer."""
    from optarena.optim import compiled
    from optarena.optim.base import OptarenaOptimizer

    inner = optimizer.optimizer if isinstance(optimizer, compiled.OptimizerWrapper) else optimizer
    step = getattr(inner, "_compiled_step", None)
    if not isinstance(inner, OptarenaOptimizer) or step is None or step.per_tensor:
        return None
    work = inner._prepare(inner.param_groups[0])
    assert work is not None
    slices = step.slices(work, [])
    direct = compiled._compiled_update_for(type(inner), tuple(s[:4] for s in slices)).direct_call(
        compiled._layout(slices)
    )
    return inner, step, work, slices, direct


@torch.no_grad()  # as a step runs
def engine_parts(optimizer: Optimizer, count: int) -> list[tuple[str, float]]:
    """Host µs of each part of a compiled whole-graph step of the first param group (each part called on its own,
    as the step calls it; the direct call steps the parameters): what a step's Python costs, part by part."""
    from optarena.optim import compiled, direct_call

    found = whole_graph_step(optimizer)
    if found is None:
        return []
    inner, step, work, slices, direct = found
    group = inner.param_groups[0]
    parts = [
        ("step()", host_us(optimizer.step, count)),
        ("gather and count", host_us(lambda: inner._prepare(group), count)),
        ("slices", host_us(lambda: step.slices(work, []), count)),
    ]
    if compiled._has_lists(compiled._layout(slices)):
        parts.append(("aliasing check", host_us(lambda: step.plain_and_unaliased(slices), count)))
    if direct is not None and direct.tensor_guards is not None:
        parts.append(("direct call: inputs", host_us(lambda: direct.inputs(slices), count)))
        inputs = direct.inputs(slices)
        parts.append(("direct call: tensor guards", host_us(lambda: direct.tensor_guards.check(*inputs), count)))
        if direct.inner is not None:  # past AOT autograd's wrappers: what the direct call does around the module
            aligned = [inputs[i] for i in direct.aligned]  # a GPU graph's inputs (none on a CPU)
            alignment = direct_call._ALIGNMENT
            check = host_us(lambda: [t.data_ptr() % alignment for t in aligned], count)
            parts.append(("direct call: alignment check", check))
            mutated = [inputs[i] for i in direct.mutated]
            bump = torch.autograd.graph.increment_version
            parts.append(("direct call: version counters", host_us(lambda: bump(mutated), count)))
            # inductor's module alone (on a GPU: its kernels' launches); a boxed call empties its list: a copy each
            module = direct.inner.current_callable
            parts.append(("direct call: the compiled module", host_us(lambda: module(list(inputs)), count)))
        parts.append(("direct call, all of it", host_us(lambda: direct(slices), count)))
    return parts


@torch.no_grad()
def parts_in_steps(optimizer: Optimizer, count: int) -> list[tuple[str, float]]:
    """Host µs of a step's parts as ``count`` real steps run them (medians), each timed where the step calls it.

    :func:`engine_parts` calls each part again and again: the tensors' metadata (the tensor objects, their storages,
    the state dicts) stays in the cache. In a real step the update before it has streamed every parameter, gradient
    and state through the cache (as a backward pass does in training), so the step's own host work meets that
    metadata cold. For a compiled whole-graph step: the compiled module (its kernels) and the rest; for torch's fused
    AdamW: its one fused kernel and the rest (its Python, the step counters)."""
    times: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times.setdefault(name, []).append(time.perf_counter() - start)

        return run

    found = whole_graph_step(optimizer)
    if found is not None:
        inner, step, _, _, direct = found
        if direct is None or direct.inner is None:
            return []
        parts = [(inner, "_prepare", "gather and count"), (step, "slices", "slices")]
        parts += [(step, "plain_and_unaliased", "aliasing check")]
        parts += [(step, "called_directly", "direct call (aliasing check included)")]
        parts += [(direct.inner, "current_callable", "the kernels")]  # inductor's module
    elif getattr(torch, "_fused_adamw_", None) is not None and optimizer.defaults.get("fused"):
        parts = [(torch, "_fused_adamw_", "the kernels")]  # its fused kernel
    else:
        return []
    missing = object()
    saved = [(obj, attribute, vars(obj).get(attribute, missing)) for obj, attribute, _ in parts]
    for obj, attribute, name in parts:
        setattr(obj, attribute, timed(name, getattr(obj, attribute)))
    try:
        whole = [0.0] * count
        for i in range(count):
            start = time.perf_counter()
            optimizer.step()
            whole[i] = time.perf_counter() - start
    finally:
        for obj, attribute, before in saved:
            if before is missing:
                delattr(obj, attribute)  # a method: the class's again
            else:
                setattr(obj, attribute, before)
    medians = {name: 1e6 * statistics.median(values) for name, values in times.items()}
    step_us = 1e6 * statistics.median(whole)
    kernels = medians.pop("the kernels")
    return [
        ("step()", step_us),
        ("the kernels", kernels),
        ("step() less the kernels", step_us - kernels),
        *medians.items(),
    ]


def time_row(row: Row, params: list[torch.Tensor], device: torch.device, steps: int) -> None:
    """Build and warm up ``row``'s optimizer (kept on the row for :func:`profile_row`), then time its steps and the
    engine's parts. Every row is timed before any is profiled: once torch's profiler has run, its callbacks stay in the
    process (on a GPU, CUPTI's) and slow every later step."""
    from torch._inductor import config

    sync = step_time.synchronizer(device)
    with config.patch(row.options):
        row.optimizer = row.build(params)
        for _ in range(3):  # compiles (under the variant's options), allocates the state
            row.optimizer.step()
    sync()
    hosts, walls = [], []
    for _ in range(steps):
        sync()
        start = time.perf_counter()
        row.optimizer.step()
        hosts.append(time.perf_counter() - start)
        sync()
        walls.append(time.perf_counter() - start)
    row.host_us, row.wall_us = 1e6 * statistics.median(hosts), 1e6 * statistics.median(walls)
    # torch wraps a class's step once; optarena's wrapper enters torch's only for a hook or the profiler
    step = type(row.optimizer).step
    unwrapped = getattr(step, "__wrapped__", step) if getattr(step, "hooked", False) else step
    row.unwrapped_us = host_us(lambda: unwrapped(row.optimizer), steps)
    row.parts = engine_parts(row.optimizer, steps)
    if device.type == "cpu":  # on a GPU the host does not wait for the kernels: there is nothing cold to meet
        row.in_step = parts_in_steps(row.optimizer, steps)
    sync()


def profile_row(row: Row, device: torch.device, steps: int) -> None:
    """One profiled window of ``steps`` steps: the kernels, their time, the steps that went through dynamo."""
    assert row.optimizer is not None
    sync = step_time.synchronizer(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            row.optimizer.step()
        sync()
    events = prof.key_averages()
    row.dynamo_steps = sum(e.count for e in events if e.key in DYNAMO_EVENTS) / steps / len(DYNAMO_EVENTS)
    if device.type == "cuda":
        # Device events, less the annotations torch's optimizers record on the device too (Optimizer.step#...).
        kernels = [
            e
            for e in events
            if e.device_type == torch.autograd.DeviceType.CUDA
            and not (getattr(e, "is_user_annotation", False) or e.key.startswith("Optimizer."))
        ]
        time_of = lambda e: e.self_device_time_total  # noqa: E731
    else:  # the CPU's "kernels": the aten operators the step runs and inductor's compiled kernels
        kernels = [e for e in events if e.key.startswith(("aten::", "cpp_fused", "graph_"))]
        time_of = lambda e: e.self_cpu_time_total  # noqa: E731
    row.kernels = sum(e.count for e in kernels) / steps
    row.kernel_us = sum(time_of(e) for e in kernels) / steps
    ranked = sorted(kernels, key=time_of, reverse=True)[:5]
    row.top = [(e.key, e.count / steps, time_of(e) / steps) for e in ranked]


def render(rows: Sequence[Row], args: argparse.Namespace, shapes: list[tuple[int, ...]]) -> str:
    env = f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} torch thread(s)"
    lines = [
        "# Where an optimizer step's time goes",
        "",
        f"{env}; set {args.set}: {len(shapes)} tensors, {step_time.numel(shapes):,} parameters; medians of "
        f"{args.steps} steps (every row timed before any is profiled), then one profiled window of {args.steps} steps.",
        "",
        f"Command: `python benchmarks/profile_step.py {' '.join(args.argv)}`",
        "",
        "| step | host µs | host µs past torch's step wrapper | wall µs | kernels/step | kernel µs/step "
        "| steps through dynamo | costliest kernels (µs/step) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        top = "; ".join(f"{name[:60]} ×{calls:g}: {us:.1f}" for name, calls, us in row.top)
        lines.append(
            f"| {row.label} | {row.host_us:.1f} | {row.unwrapped_us:.1f} | {row.wall_us:.1f} | {row.kernels:g} "
            f"| {row.kernel_us:.1f} "
            f"| {row.dynamo_steps:.2f} | {top} |"
        )
    parted = [row for row in rows if row.parts]
    if parted:
        lines += ["", "The engine's parts of a compiled step (host µs, each part called alone):", ""]
        lines += ["| step | " + " | ".join(name for name, _ in parted[0].parts) + " |"]
        lines += ["|---" * (len(parted[0].parts) + 1) + "|"]
        for row in parted:
            values = dict(row.parts)
            lines.append(
                f"| {row.label} | "
                + " | ".join(f"{values[name]:.1f}" if name in values else "—" for name, _ in parted[0].parts)
                + " |"
            )
    inside = [row for row in rows if row.in_step]
    if inside:
        names = list(dict.fromkeys(name for row in inside for name, _ in row.in_step))
        lines += [
            "",
            "The same inside real steps (host µs, medians; each part timed where the step calls it, the tensors' "
            "metadata as the update before left it; the kernels: torch's fused kernel, optarena's compiled module):",
            "",
            "| step | " + " | ".join(names) + " |",
            "|---" * (len(names) + 1) + "|",
        ]
        for row in inside:
            values = dict(row.in_step)
            lines.append(
                f"| {row.label} | " + " | ".join(f"{values[n]:.1f}" if n in values else "—" for n in names) + " |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--set", default="resnet18", choices=list(step_time.PARAM_SETS))
    parser.add_argument("--optimizers", default="adaburst,adan,adamw_agr", help="comma-separated registry names")
    parser.add_argument("--foreach", action="store_true", help="profile each optimizer's foreach step too")
    parser.add_argument("--variant", type=parse_variant, action="append", default=[], help="NAME:KEY=VALUE,...")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply each tensor's leading dimension")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="Markdown report (default: print only)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.scale <= 0:
        parser.error("--steps and --scale must be positive")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = step_time.resolve_optimizers(args.optimizers)
    shapes = step_time.scale_shapes(step_time.PARAM_SETS[args.set](), args.scale)
    params = step_time.parameters_with_gradients(shapes, device, torch.Generator().manual_seed(0))
    rows = make_rows(names, args.variant, args.foreach)
    for row in rows:
        print(f"[{row.label}] timing", file=sys.stderr, flush=True)
        time_row(row, params, device, args.steps)
    for row in rows:
        print(f"[{row.label}] profiling", file=sys.stderr, flush=True)
        profile_row(row, device, args.steps)
        row.optimizer = None  # its state
    report = render(rows, args, shapes)
    print(report, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
