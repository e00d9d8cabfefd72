"""How long the first compiled step takes: cold (empty inductor cache) and warm (the cache a first process left).

Each measurement runs in a fresh Python process, so nothing compiled in memory carries over: the process builds
the parameter set of ``benchmarks/step_time.py`` (gradients set), makes the optimizer with ``compile=True`` and
times its first ``step()``, which traces, compiles and runs the step. The cold process gets an empty
``TORCHINDUCTOR_CACHE_DIR``; the warm one reuses the directory the cold one filled, as a second training run on
the same machine does. Reported beside them: one later step of the same process, so that what is compile time
is plain.

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

# The child: build, step once (timed), step again (timed), print JSON.
CHILD = r"""
import importlib.util, json, sys, time
import torch
spec = importlib.util.spec_from_file_location("step_time", sys.argv[1])
bench = importlib.util.module_from_spec(spec); sys.modules["step_time"] = bench; spec.loader.exec_module(bench)
import optarena
torch.set_num_threads(int(sys.argv[4]))
generator = torch.Generator().manual_seed(0)
params = []
for shape in bench.PARAM_SETS[sys.argv[2]]():
    p = torch.nn.Parameter(torch.randn(shape, generator=generator))
    p.grad = torch.randn(shape, generator=generator)
    params.append(p)
options = {"total_steps": 1000} if sys.argv[3].startswith("adaburst") else {}
opt = optarena.create_optimizer(params, sys.argv[3], compile=True, **options)
start = time.perf_counter(); opt.step(); first = time.perf_counter() - start
start = time.perf_counter(); opt.step(); later = time.perf_counter() - start
print(json.dumps({"first": first, "later": later}))
"""


def measure(optimizer: str, param_set: str, cache: Path, threads: int) -> dict[str, float]:
    script = Path(__file__).with_name("step_time.py")
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(script), param_set, optimizer, str(threads)],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"{optimizer}: the timing process failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizers", default="adamw_agr,adaburst,adan,lion", help="comma-separated registry names")
    parser.add_argument("--set", default="resnet18", help="a parameter set of benchmarks/step_time.py")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each timing process")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
    rows = ["| optimizer | cold first step (s) | warm-cache first step (s) | a later step (ms) |", "|---|---|---|---|"]
    for name in names:
        with tempfile.TemporaryDirectory(prefix="inductor-cache-") as cache:
            cold = measure(name, args.set, Path(cache), args.threads)
            warm = measure(name, args.set, Path(cache), args.threads)
        rows.append(f"| {name} | {cold['first']:.1f} | {warm['first']:.1f} | {1000 * warm['later']:.1f} |")
        print(rows[-1], flush=True)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    command = "python benchmarks/compile_time.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join(
        [
            "# Compile time of the compiled step",
            "",
            f"Command: `{command}`. Set `{args.set}`, {args.threads} torch thread(s) per process, {os.cpu_count()} "
            f"CPU(s); load average at the end {load}. Each number is one fresh process (see the script's docstring).",
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
