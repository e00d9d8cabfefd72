"""The arena's own cost: ``optarena run`` against hand-written loops on the same model, data, optimizer and seed.

Every round runs, in a fresh random order and in this one process (one torch thread by default):

* ``arena`` — what ``optarena run`` does (:func:`optarena.arena.run.single.train_and_write`): the runner's
  loop with its non-finite guard, the optimizer's hooks, the per-layer update magnitudes ``optarena run``
  records, an evaluation of every split before training and after every epoch, the curves written as JSON
  and drawn;
* ``loop, same evaluations`` — a plain loop (``zero_grad``, loss, ``backward``, ``step``) with the same
  optimizer from :func:`optarena.create_optimizer`, calling the task's ``evaluate()`` at the same times and
  keeping the rows in a list: what a user who wants the same curves writes;
* ``loop, final evaluation`` — the same loop evaluating once, after training: the least a run can do;
* ``arena, final evaluation`` — ``optarena run --eval-every end``: the arena scoring once, after training, set
  against that loop.

Both loops and both arena runs build the problem with the same seed, so they train the same model on the same
batches: the benchmark checks that the four final test metrics are equal before reporting anything. The
result is, per round, the ratio of wall times to each loop, and its median over rounds with the range; and
the arena's time split into training and evaluation from its own records.

``--workers N`` measures instead how the trials of a study spread over worker processes: a study of
``--trials`` tuning trials and ``--seeds`` reruns is queued in a fresh SQLite store and worked off by 1 and then N
``optarena worker`` processes (one torch thread each); the result is the ratio of runs per hour. The reruns wait
for every tuning trial (they train the best configuration), so with fewer reruns than workers the last phase runs
on fewer workers than there are: the default, 2, keeps two workers busy to the end.

Run from the repository root: ``python benchmarks/arena_overhead.py --help``. The numbers in
``docs/performance.md`` come from the commands written at the top of ``benchmarks/results/arena_overhead.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import optarena
from optarena.arena.run import single
from optarena.arena.tasks import TaskSettings, get_task

DEFAULT_OUT = Path("benchmarks/results/arena_overhead.md")


def hand_loop(task_name: str, optimizer: str, lr: float, *, seed: int, epochs: int, settings: TaskSettings,
              every_epoch: bool) -> float:  # fmt: skip
    """A plain training loop; returns its final test metric."""
    task = get_task(task_name)
    settings = TaskSettings(**{**settings.__dict__, "seed": seed, "epochs": epochs})
    torch.manual_seed(seed)  # as the runner seeds before building the problem
    problem = task.build(settings)
    opt = optarena.create_optimizer(problem.model, optimizer, lr=lr)
    rows = [problem.evaluate()] if every_epoch else []
    problem.model.train()
    for epoch in range(1, epochs + 1):
        for batch in problem.batches(epoch):
            opt.zero_grad(set_to_none=True)
            problem.loss(batch).backward()
            opt.step()
        if every_epoch or epoch == epochs:
            rows.append(problem.evaluate())
    return rows[-1]["test_metric"]


def arena_run(task_name: str, optimizer: str, lr: float, *, seed: int, epochs: int, settings: TaskSettings,
              out: Path, eval_every: int | None = 1) -> tuple[float, float]:  # fmt: skip
    """``optarena run`` in this process; returns the final test metric and the seconds spent training."""
    run = single.SingleRun(
        task=task_name, optimizer=optimizer, hyperparameters={"lr": lr}, seed=seed, epochs=epochs, out=out,
        subset=settings.subset, eval_subset=settings.eval_subset, data_dir=settings.data_dir, eval_every=eval_every,
    )  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):  # the epoch lines (rich writes to sys.stdout) are not measured
        path = single.train_and_write(run, parallel=None, writer=True)
    records = json.loads(path.read_text())["records"]
    return records[-1]["test_metric"], records[-1]["wall_time"]


def measure_overhead(args: argparse.Namespace) -> str:
    torch.set_num_threads(args.threads)
    settings = TaskSettings(subset=args.subset, eval_subset=args.eval_subset, data_dir=args.data_dir)
    common = {"seed": args.seed, "epochs": args.epochs, "settings": settings}
    out = Path(tempfile.mkdtemp(prefix="arena-overhead-"))
    finals: dict[str, float] = {}
    training: list[float] = []

    def arena() -> None:
        finals["arena"], seconds = arena_run(args.task, args.optimizer, args.lr, out=out, **common)
        training.append(seconds)

    def arena_final() -> None:
        finals["arena, final evaluation"], _ = arena_run(
            args.task, args.optimizer, args.lr, out=out, eval_every=None, **common
        )

    def same() -> None:
        finals["loop, same evaluations"] = hand_loop(args.task, args.optimizer, args.lr, every_epoch=True, **common)

    def final() -> None:
        finals["loop, final evaluation"] = hand_loop(args.task, args.optimizer, args.lr, every_epoch=False, **common)

    runs: dict[str, Callable[[], None]] = {
        "arena": arena,
        "arena, final evaluation": arena_final,
        "loop, same evaluations": same,
        "loop, final evaluation": final,
    }
    for fn in runs.values():  # warm-up: data read and cached, kernels loaded
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    rng = random.Random(args.seed)
    for _ in range(args.rounds):
        order = list(runs)
        rng.shuffle(order)
        for name in order:
            started = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - started)
    if len(set(finals.values())) != 1:
        raise SystemExit(f"the runs did not compute the same thing: final test metrics {finals}")
    lines = [
        f"Task `{args.task}`, optimizer `{args.optimizer}` (lr {args.lr}), {args.epochs} epoch(s), subset "
        f"{args.subset}, eval subset {args.eval_subset}, {args.threads} thread(s), {args.rounds} rounds; the four "
        f"runs end at the same test metric ({finals['arena']:.4f}). Load average at the end: "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "",
        "| arena run | against | arena / loop (median) | range over rounds |",
        "|---|---|---|---|",
    ]
    pairs = [("arena", "loop, same evaluations"), ("arena, final evaluation", "loop, final evaluation"),
             ("arena", "loop, final evaluation")]  # fmt: skip
    for mine, name in pairs:
        ratios = [a / b for a, b in zip(times[mine], times[name])]
        lines.append(f"| {mine} | {name} | {statistics.median(ratios):.3f} | {min(ratios):.3f} – {max(ratios):.3f} |")
    share = statistics.median(t / total for t, total in zip(training[1:], times["arena"]))
    lines += ["", f"Share of the arena's wall time spent in its training loop (the rest: evaluations, writing, "
              f"the figure): {share:.1%}."]  # fmt: skip
    return "\n".join(lines)


def measure_workers(args: argparse.Namespace) -> str:
    """Trials per hour with 1 and with ``args.workers`` worker processes on one queued study."""
    hours: dict[int, float] = {}
    for count in (1, args.workers):
        folder = Path(tempfile.mkdtemp(prefix="arena-workers-"))
        storage = f"sqlite:///{folder / 'store.db'}"
        compare = [sys.executable, "-m", "optarena.arena.cli", "compare", "--name", "workers", "--task", args.task,
                   "--optimizers", args.optimizer, "--trials", str(args.trials), "--seeds", str(args.seeds), "--epochs",
                   str(args.epochs), "--threads", "1", "--no-prune", "--sampler", "qmc", "--storage", storage,
                   "--out", str(folder / "out"), "--prepare"]  # fmt: skip
        if args.subset:
            compare += ["--subset", str(args.subset)]
        if args.eval_subset:
            compare += ["--eval-subset", str(args.eval_subset)]
        subprocess.run(compare, check=True, stdout=subprocess.DEVNULL)
        worker = [sys.executable, "-m", "optarena.arena.cli", "worker", "--storage", storage, "--study", "workers"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        started = time.perf_counter()
        processes = [subprocess.Popen(worker, env=env, stdout=subprocess.DEVNULL) for _ in range(count)]
        if any(p.wait() != 0 for p in processes):
            raise SystemExit(f"a worker failed (store {storage})")
        hours[count] = (time.perf_counter() - started) / 3600
    runs = args.trials + args.seeds
    rate = {count: runs / h for count, h in hours.items()}
    return (
        f"{runs} runs of `{args.task}` with `{args.optimizer}` ({args.trials} tuning trials and {args.seeds} rerun(s), "
        f"{args.epochs} epoch(s), one torch thread per worker): 1 worker {rate[1]:.0f} runs per hour, "
        f"{args.workers} workers {rate[args.workers]:.0f}: **{rate[args.workers] / rate[1]:.2f}×**. Load average "
        f"at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="fashion_mnist_cnn")
    parser.add_argument("--optimizer", default="adamw")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--subset", type=int, default=8192, help="training examples (0: all)")
    parser.add_argument("--eval-subset", type=int, default=None, help="examples scored per split (default: all)")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0, help="measure N worker processes against 1 instead")
    parser.add_argument("--trials", type=int, default=8, help="tuning trials of the --workers study")
    parser.add_argument(
        "--seeds", type=int, default=2,
        help="reruns of the --workers study; they wait for every trial, so a lone rerun runs on one worker",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown file the result is appended to")
    args = parser.parse_args(argv)
    for name, value, low in (("--epochs", args.epochs, 1), ("--rounds", args.rounds, 1), ("--threads", args.threads, 1),
                             ("--trials", args.trials, 1), ("--subset", args.subset, 0)):  # fmt: skip
        if value < low:
            parser.error(f"{name} must be at least {low}, got {value}")
    if args.workers == 1 or args.workers < 0:
        parser.error(f"--workers must be 0 (measure the overhead) or at least 2, got {args.workers}")
    args.subset = args.subset or None
    text = measure_workers(args) if args.workers else measure_overhead(args)
    command = "python benchmarks/arena_overhead.py " + " ".join(argv if argv is not None else sys.argv[1:])
    block = f"## `{command}`\n\n{text}\n"
    print(block)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        f.write(block + "\n")


if __name__ == "__main__":
    main()
