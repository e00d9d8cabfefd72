"""How long the first compiled step takes, and where that time goes.

Each measurement runs in a fresh Python process, so nothing compiled in memory carries over: the process builds
the parameter set of ``benchmarks/step_time.py`` (gradients set), makes the optimizer with ``compile=True`` and
times its first ``step()``, which traces, compiles and runs the step. Three inductor caches
(``TORCHINDUCTOR_CACHE_DIR``) per optimizer:

* *cold*: an empty cache, as on a machine that never ran inductor. Inductor then also probes the CPU's vector
  instruction sets by compiling and loading small test programs, once per cache;
* *new graph*: a cache in which another process compiled an unrelated one-line function first (the probes and
  the precompiled header are done, nothing of this optimizer is cached): what a new optimizer or parameter set
  costs on a machine that has used inductor before;
* *warm*: the cache the cold process left, as a second training run with the same model and optimizer.

The cold column is split into phases from dynamo's own timers (``torch._dynamo.utils.compilation_time_metrics``):
graph capture (dynamo's bytecode tracing and AOT autograd's metadata pass), inductor's lowering and scheduling
(fusion), the C++ compiler in the compiling thread (every C++ build there: the kernels), the wait for the
instruction-set probes (``optarena.optim.codegen.start_instruction_set_probes``: inductor's test builds, started
in a thread of their own when the optimizer is made, up to the one inductor picks; a cold cache only), and the rest
(imports, kernel code generation, loading). Beside it, the time the probes' builds took in their thread: what ran
alongside the compile rather than in it. A later step of the same process is reported beside
them, so that what is compile time is plain. Several ``--sets`` give the size-dependent part: the ``huge`` set is
one tensor, the least a graph can hold. ``--graphs`` times both kinds of compiled step (``compile_step``'s
``graphs``): ``whole`` (one graph for a step's tensors, specialized to their shapes) and ``per_tensor`` (one graph
with a symbolic size, shared by every tensor).

Run from the repository root: ``python benchmarks/compile_time.py --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_OUT = Path("benchmarks/results/compile_time.md")

# The child: build, step once (timed), step again (timed), print JSON with dynamo's phase timers.
CHILD = r"""
import importlib.util, json, sys, time
import torch
spec = importlib.util.spec_from_file_location("step_time", sys.argv[1])
bench = importlib.util.module_from_spec(spec); sys.modules["step_time"] = bench; spec.loader.exec_module(bench)
import threading
import optarena
from optarena.optim import codegen
from torch._dynamo.utils import compilation_time_metrics as timers
from torch._inductor import cpp_builder
torch.set_num_threads(int(sys.argv[4]))
builds = {"inductor": 0.0, "probes": 0.0, "waited": 0.0}
build, wait = cpp_builder.CppBuilder.build, codegen.wait_for_instruction_set_probes
def timed_build(self, *args, **kwargs):  # every C++ build: a probe's (in optarena's probe thread) or inductor's
    start = time.perf_counter()
    try:
        return build(self, *args, **kwargs)
    finally:
        probe = threading.current_thread().name.startswith("optarena-probe-")
        builds["probes" if probe else "inductor"] += time.perf_counter() - start
def timed_wait():
    start = time.perf_counter(); wait(); builds["waited"] += time.perf_counter() - start
cpp_builder.CppBuilder.build, codegen.wait_for_instruction_set_probes = timed_build, timed_wait
generator = torch.Generator().manual_seed(0)
params = []
for shape in bench.PARAM_SETS[sys.argv[2]]():
    p = torch.nn.Parameter(torch.randn(shape, generator=generator))
    p.grad = torch.randn(shape, generator=generator)
    params.append(p)
options = {"total_steps": 1000} if sys.argv[3].startswith("adaburst") else {}
opt = optarena.create_optimizer(params, sys.argv[3], compile=True if sys.argv[5] == "whole" else sys.argv[5], **options)
import warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", RuntimeWarning)
    start = time.perf_counter(); opt.step(); first = time.perf_counter() - start
if opt._compiled_step is None:  # the compile failed and the step ran eagerly: nothing to time
    sys.exit("the first step fell back to eager: " + "; ".join(str(w.message) for w in caught))
total = lambda *keys: sum(sum(timers.get(k, [])) for k in keys)
phases = {
    "capture": total("bytecode_tracing", "aot_collect_metadata"),
    "lowering": total("GraphLowering.run", "Scheduler.__init__"),
    "cxx": builds["inductor"],
    "waited": builds["waited"],
    "probes": builds["probes"],
}
start = time.perf_counter(); opt.step(); later = time.perf_counter() - start
print(json.dumps({"first": first, "later": later, **phases}))
"""

# Fills a cache the way any earlier use of inductor on the machine does, with nothing of the optimizer's graph.
PRIME = "import torch; torch.compile(lambda x: x * 2 + 1)(torch.ones(8))"


def _child(args: list[str], cache: Path) -> str:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"a timing process failed ({' '.join(args[1:])}):\n{done.stderr[-2000:]}")
    return done.stdout


def measure(optimizer: str, param_set: str, cache: Path, threads: int, graphs: str) -> dict[str, float]:
    script = Path(__file__).with_name("step_time.py")
    out = _child([CHILD, str(script), param_set, optimizer, str(threads), graphs], cache)
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizers", default="adamw_agr,adaburst,adan,lion", help="comma-separated registry names")
    parser.add_argument("--sets", default="resnet18", help="comma-separated parameter sets of benchmarks/step_time.py")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each timing process")
    parser.add_argument(
        "--graphs",
        default="whole,per_tensor",
        help="comma-separated compile_step graphs: whole (one graph for a step's tensors), per_tensor (one graph "
        "shared by every tensor's size)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    graph_kinds = [g.strip() for g in args.graphs.split(",") if g.strip()]
    for g in graph_kinds:
        if g not in ("whole", "per_tensor"):
            parser.error(f"unknown graphs {g!r} in --graphs; valid: whole, per_tensor")
    sys.path.insert(0, str(Path(__file__).parent))
    from step_time import PARAM_SETS

    names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    for s in sets:
        if s not in PARAM_SETS:
            parser.error(f"unknown set {s!r} in --sets; valid: {', '.join(PARAM_SETS)}")
    rows = [
        "| set | optimizer | graphs | cold first step (s) | of which: capture / lowering+fusion / C++ compiler / "
        "waiting for the probes / rest (s) | probes' builds beside it (s) | new graph, primed cache (s) | "
        "warm cache (s) | a later step (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for set_name, name, graphs in ((s, n, g) for s in sets for n in names for g in graph_kinds):
        with tempfile.TemporaryDirectory(prefix="inductor-cache-") as cache:
            cold = measure(name, set_name, Path(cache), args.threads, graphs)
            warm = measure(name, set_name, Path(cache), args.threads, graphs)
        with tempfile.TemporaryDirectory(prefix="inductor-cache-") as cache:
            _child([PRIME], Path(cache))
            primed = measure(name, set_name, Path(cache), args.threads, graphs)
        parts = [cold[k] for k in ("capture", "lowering", "cxx", "waited")]
        split = " / ".join(f"{x:.1f}" for x in [*parts, cold["first"] - sum(parts)])
        rows.append(
            f"| {set_name} | {name} | {graphs} | {cold['first']:.1f} | {split} | {cold['probes']:.1f} | "
            f"{primed['first']:.1f} | {warm['first']:.1f} | {1000 * warm['later']:.1f} |"
        )
        print(rows[-1], flush=True)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    command = "python benchmarks/compile_time.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join(
        [
            "# Compile time of the compiled step",
            "",
            f"Command: `{command}`. {args.threads} torch thread(s) per process, {os.cpu_count()} CPU(s); load "
            f"average at the end {load}. Each number is one fresh process (see the script's docstring).",
            "",
            *rows,
            "",
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
