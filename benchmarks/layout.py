"""How much an optimizer step's time depends on where its tensors start within a 4 KiB page (CPU).

A CPU first matches a load against the stores still in flight by the low 12 bits of their addresses; a load that
agrees there with a recent store to another address waits for that store (*4K aliasing*). An elementwise step
streams the parameter, its gradient and its states side by side, one vector of each at a time: where each starts
within its page decides whether one stream's loads keep meeting another's recent stores. torch's CPU allocator
aligns a tensor to 64 bytes and no more, so that is decided by the allocator's history: glibc maps a block of
128 KiB or more on its own pages in a fresh process (every tensor at one offset), but once its threshold has risen,
or under ``step_time.py``'s ``reuse`` policy, blocks come from the heap, where tensors of a page-multiple size
allocated one after the other (a parameter's states at its first step) start 64 bytes apart.

Every tensor of 128 KiB or more is placed by its role (the parameter, its gradient, each state tensor), per layout:

* ``same``: all at the start of a page;
* ``64 B apart``: the parameter at 0, the gradient at 64, the states at 128, 192, ... bytes;
* ``1 KiB apart``: 0, 1024, 2048, ... bytes;
* ``random``: each tensor's place drawn anew in every round (what ``step_time.py --layout random`` averages over);
* ``states 64 B apart``: the parameter and gradient drawn, the states 64 bytes apart from a drawn place (a heap's
  consecutive allocations of a page-multiple size);
* ``states at the parameter's``: the parameter and gradient drawn, every state where the parameter starts;
* ``gradient 64 B before``: the parameter and states at the start of a page, the gradient 64 bytes before it.

Each round visits every (configuration, layout) pair in a fresh random order: it moves the tensors
(``step_time.relayout``), takes one untimed step and times ``--steps``. The result per configuration and layout is
the median over rounds of the per-round ratio to the same configuration's ``same`` layout: the ratios compare a
configuration with itself, so the verdict does not depend on how fast the others are.

Run from the repository root: ``python benchmarks/layout.py --help``.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import step_time

DEFAULT_OUT = Path("benchmarks/results/layout.md")


def layouts(rng: random.Random) -> dict[str, Callable[[int], int]]:
    """Each layout as ``step_time.relayout``'s offset of a tensor role (0 parameter, 1 gradient, 2 + k k-th state)."""
    return {
        "same": lambda role: 0,
        "64 B apart": lambda role: role * step_time.CPU_ALIGNMENT % step_time.PAGE,
        "1 KiB apart": lambda role: role * 1024 % step_time.PAGE,
        "random": step_time.random_offsets(rng),
        "states 64 B apart": states_apart(rng),
        "states at the parameter's": states_at_parameter(rng),
        "gradient 64 B before": lambda role: (step_time.PAGE - step_time.CPU_ALIGNMENT) if role == 1 else 0,
    }


def states_apart(rng: random.Random) -> Callable[[int], int]:
    """Parameter and gradient anywhere; the states one after the other 64 B apart, from anywhere: as a heap gives
    a parameter's states of a page-multiple size allocated at its first step."""
    draw = step_time.random_offsets(rng)
    first: list[int] = []

    def offset(role: int) -> int:
        if role < 2:
            return draw(role)
        if role == 2:
            first[:] = [draw(role)]
        return (first[0] + (role - 2) * step_time.CPU_ALIGNMENT) % step_time.PAGE

    return offset


def states_at_parameter(rng: random.Random) -> Callable[[int], int]:
    """Parameter and gradient anywhere; every state where its parameter starts within a page (``relayout`` asks for
    the parameter's place first)."""
    draw = step_time.random_offsets(rng)
    parameter: list[int] = []

    def offset(role: int) -> int:
        if role == 0:
            parameter[:] = [draw(role)]
        return parameter[0] if role != 1 else draw(role)

    return offset


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def run(args: argparse.Namespace) -> str:
    torch.set_num_threads(args.threads)
    malloc = step_time.set_malloc_policy(args.malloc)
    generator = torch.Generator().manual_seed(args.seed)
    shapes = step_time.PARAM_SETS[args.set]()
    params = step_time.parameters_with_gradients(shapes, torch.device("cpu"), generator)
    names = step_time.resolve_optimizers(args.optimizers)
    configs = [
        c for c in step_time.make_configs(names, args.modes.split(",")) if c.mode != "foreach" or not c.reference
    ]
    for config in configs:
        config.optimizer = config.build(params)
        for _ in range(args.warmup):
            config.optimizer.step()
    rng = random.Random(args.seed)
    places = layouts(rng)
    times: dict[tuple[str, str], list[float]] = {}  # (config label, layout) -> per-round medians
    clock = step_time.CLOCKS[args.clock]
    sync = step_time.synchronizer(torch.device("cpu"))
    gc.disable()  # a collection inside a timed step would be charged to whichever pair runs then
    try:
        for _ in range(args.rounds):
            visits = [(config, layout) for config in configs for layout in places]
            rng.shuffle(visits)
            for config, layout in visits:
                assert config.optimizer is not None
                step_time.relayout(params, [config.optimizer], places[layout])
                config.optimizer.step()  # untimed: the moved tensors into the caches, a compiled step's checks
                timed = step_time.time_calls(config.optimizer.step, args.steps, sync, clock)
                times.setdefault((label(config), layout), []).append(statistics.median(timed))
    finally:
        gc.enable()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    out = [
        "# Step time by where the tensors start within a page",
        "",
        f"torch {torch.__version__}, {args.threads} torch thread(s), {args.clock} clock, set {args.set} "
        f"({len(shapes)} tensors, {step_time.numel(shapes):,} parameters), {args.rounds} rounds × {args.steps} timed "
        f"steps; memory allocator: {malloc}; load average at the end {load}.",
        "",
        "Command: `python benchmarks/layout.py " + " ".join(args.argv) + "`",
        "",
        "Each cell: the median over rounds of the per-round ratio of this layout's median step time to the same "
        "configuration's `same` layout (in brackets the interquartile range of those ratios); the `same` column is "
        "its median step time. See the script's docstring for the layouts.",
        "",
        "| configuration | same (ms) | " + " | ".join(f"{name} × same" for name in places if name != "same") + " |",
        "|---|---|" + "---|" * (len(places) - 1),
    ]
    for config in configs:
        base = times[label(config), "same"]
        cells = [f"{statistics.median(base) * 1e3:.3f}"]
        for layout in places:
            if layout == "same":
                continue
            ratios = [t / b for t, b in zip(times[label(config), layout], base)]
            low, high = quartiles(ratios)
            cells.append(f"{statistics.median(ratios):.2f} ({low:.2f}–{high:.2f})")
        out.append(f"| {label(config)} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def label(config: step_time.Config) -> str:
    return f"{config.name} {config.mode}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time optimizer steps with their tensors at chosen places within a page (CPU), each "
        "configuration against itself with every tensor at the start of a page.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--set", default="resnet18", choices=list(step_time.PARAM_SETS))
    parser.add_argument(
        "--optimizers",
        default="adabelief,adamnx,adax",
        help="registry names or step_time.py's groups; torch's fused AdamW is always timed",
    )
    parser.add_argument("--modes", default="compiled", help="comma-separated step_time.py modes")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=list(step_time.CLOCKS), default="thread")
    parser.add_argument("--malloc", choices=step_time.MALLOC_POLICIES, default="reuse")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown report")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    for mode in args.modes.split(","):
        if mode not in step_time.MODES:
            parser.error(f"unknown mode {mode!r}; valid: {', '.join(step_time.MODES)}")
    if args.rounds < 1 or args.steps < 1 or args.warmup < 1 or args.threads < 1:
        parser.error("--rounds, --steps, --warmup and --threads must be positive")
    if args.clock == "thread" and args.threads != 1:
        parser.error("--clock thread measures one thread: it needs --threads 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    try:
        report = run(args)
    finally:
        torch.set_num_threads(threads)
    print(report, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
