"""The ``optarena`` command: list, compare, run, report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console()


def _parse_value(text: str) -> Any:
    """A ``--set key=value`` value: JSON where it parses (numbers, booleans, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="optarena", description="Fair optimizer comparisons on real data.")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="list the optimizers and tasks")

    compare = sub.add_parser("compare", help="tune every optimizer under an equal budget, rerun over seeds, report")
    compare.add_argument("--config", type=Path, help="a TOML experiment file (command-line options win)")
    compare.add_argument("--name", help="experiment name (default: 'default')")
    compare.add_argument("--task", "--tasks", dest="tasks", nargs="+", help="task names (default: digits)")
    compare.add_argument("--optimizers", nargs="+", help="registry names of the optimizers")
    compare.add_argument("--trials", type=int, help="tuning trials per optimizer and task (the budget)")
    compare.add_argument("--seeds", type=int, help="seeds the best configuration is rerun on")
    compare.add_argument("--epochs", type=int, help="epochs per run (default: each task's)")
    compare.add_argument("--target", type=float, help="target test metric for steps-to-target")
    compare.add_argument("--out", type=Path, help="output directory (default: runs/<name>)")
    compare.add_argument("--storage", help="SQLAlchemy URL of the results store (default: SQLite in --out)")
    compare.add_argument("--device", help="cpu or cuda[:N]")
    compare.add_argument("--threads", type=int, help="torch threads")
    compare.add_argument("--data-dir", type=Path, help="where datasets are (default: each task's places)")
    compare.add_argument("--subset", type=int, help="keep at most this many training examples (smoke runs)")
    compare.add_argument("--eval-subset", type=int, help="score at most this many examples of each split")
    compare.add_argument("--no-prune", dest="prune", action="store_const", const=False, help="no early pruning")
    compare.add_argument("--sampler", choices=("tpe", "qmc"),
                         help="tpe (adaptive, default) or qmc (every configuration drawn up front: reproducible "
                              "whatever the number of workers)")  # fmt: skip
    compare.add_argument("--prepare", action="store_true",
                         help="only queue the budget in --storage for 'optarena worker' processes")  # fmt: skip
    _heartbeat_arguments(compare)
    compare.add_argument("--tensorboard", type=Path, metavar="DIR", help="also log every rerun to TensorBoard in DIR")

    worker = sub.add_parser("worker", help="run queued trials of an experiment in a shared store until none is left")
    worker.add_argument("--storage", required=True, help="SQLAlchemy URL of the shared store (e.g. postgresql://...)")
    worker.add_argument("--study", required=True, help="the experiment's name, as given to compare --name")
    worker.add_argument(
        "--poll", type=float, default=2.0, help="seconds between looks while others hold the last trials"
    )
    _heartbeat_arguments(worker)

    run = sub.add_parser("run", help="one training run of one optimizer on one task, with its curves")
    run.add_argument("--task", required=True)
    run.add_argument("--optimizer", required=True)
    run.add_argument("--lr", type=float)
    run.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                     help="another optimizer hyperparameter (repeatable)")  # fmt: skip
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--epochs", type=int)
    run.add_argument("--out", type=Path, default=Path("runs/single"))
    run.add_argument("--device", default="cpu")
    run.add_argument("--threads", type=int)
    run.add_argument("--data-dir", type=Path)
    run.add_argument("--subset", type=int)
    run.add_argument("--eval-subset", type=int, help="score at most this many examples of each split")
    run.add_argument("--tensorboard", type=Path, metavar="DIR", help="also log the curves to TensorBoard in DIR")
    run.add_argument("--nproc", type=int, default=1,
                     help="train data-parallel in this many local processes (gloo on CPU, NCCL on CUDA); "
                          "under torchrun, leave it at 1")  # fmt: skip
    run.add_argument("--parallel", choices=("ddp", "fsdp"), default="ddp",
                     help="with --nproc > 1 or under torchrun: DDP or FSDP2 (fully_shard)")  # fmt: skip

    evidence = sub.add_parser("evidence", help="judge the papers' claims from the stores of their experiments")
    evidence.add_argument("--claims", type=Path, required=True, help="a claims TOML file ([[claim]] entries)")
    evidence.add_argument("--run", action="store_true", help="run (or finish) each claim's experiment first")
    evidence.add_argument("--smoke", action="store_true",
                          help="the CI-size version of every study: 256 training examples, 64 scored per split, "
                               "2 epochs, 2 trials, 2 seeds, under runs/evidence-smoke/")  # fmt: skip
    evidence.add_argument("--out", type=Path, default=Path("docs/results.md"),
                          help="where the verdicts go; figures and full reports go to the folder of the same "
                               "name beside it (docs/results/)")  # fmt: skip

    report = sub.add_parser("report", help="rebuild the report of an experiment from its store")
    report.add_argument("--name", default="default")
    report.add_argument("--out", type=Path, help="output directory (default: runs/<name>)")
    report.add_argument("--storage", help="SQLAlchemy URL of the results store (default: SQLite in --out)")
    return parser


def _heartbeat_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--heartbeat", type=int, default=10, help="seconds between a running trial's heartbeats")
    parser.add_argument("--grace", type=int, default=60,
                        help="seconds of silence after which a trial is failed and queued again")  # fmt: skip


def cmd_worker(args: argparse.Namespace) -> int:
    import torch

    from optarena.arena import store, workers

    if args.heartbeat < 1 or args.grace <= args.heartbeat:
        raise ValueError(f"Invalid --heartbeat/--grace: {args.heartbeat}/{args.grace}; expected 1 <= heartbeat < grace")
    experiment = workers.load_experiment_config(args.storage, args.study)
    if experiment.threads:
        torch.set_num_threads(experiment.threads)
    storage = store.open_storage(args.storage, heartbeat_interval=args.heartbeat, grace_period=args.grace)
    console.print(f"[bold]optarena worker[/] {experiment.name} on {args.storage}")
    ran = workers.work(experiment, storage, progress=lambda message: console.print(message), poll_seconds=args.poll)
    console.print(f"done: this worker ran {ran} trial(s); none is left")
    return ran


SMOKE = {"subset": 256, "eval_subset": 64, "epochs": 2, "trials": 2, "seeds": 2}


def cmd_evidence(args: argparse.Namespace) -> Path:
    from optarena.arena import store
    from optarena.arena.config import load_experiment_file
    from optarena.arena.evidence import MissingRuns, judge, load_claims_file, render
    from optarena.arena.protocol import compare
    from optarena.arena.report import build_report

    claims_file = load_claims_file(args.claims)
    overrides: dict[Path, dict[str, Any]] = {}
    for claim in claims_file.claims:
        extra: dict[str, Any] = {}
        if args.smoke:  # its own store too: never the full study's (which an experiment file may name)
            out = Path("runs/evidence-smoke") / claim.experiment.stem
            extra = dict(SMOKE, out=out, storage=store.default_storage_url(out))
        overrides[claim.experiment] = extra
    experiments = {path: load_experiment_file(path, **extra) for path, extra in overrides.items()}
    if args.run:
        for path, experiment in experiments.items():
            console.print(f"[bold]running[/] {path.name}: {experiment.storage_url}")
            compare(experiment)
    judgements, missing = [], []
    for claim in claims_file.claims:
        try:
            judgements.append(judge(claim, overrides[claim.experiment]))
        except MissingRuns:
            missing.append(claim)
    title = claims_file.title + (" (smoke scale: not evidence)" if args.smoke else "")
    extras = args.out.parent / args.out.stem  # docs/results.md -> docs/results/: figures and full reports
    text = render(judgements, title, claims_file.notes, figures=extras / "figures", page=args.out, missing=missing)
    reports = []
    for path, experiment in experiments.items():
        if experiment.name not in store.list_experiments(experiment.storage_url):
            continue  # nothing run yet: its claims are listed as such
        report = build_report(experiment.storage_url, experiment.name, extras / experiment.name)
        reports.append(f"- `{path.name}`: [{report.relative_to(args.out.parent).as_posix()}]"
                       f"({report.relative_to(args.out.parent).as_posix()})")  # fmt: skip
    text += "\n## Full reports\n\nEvery optimizer's curves, tables and sensitivity, per experiment:\n\n"
    text += "\n".join(reports) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    for j in judgements:
        console.print(f"{j.claim.id}: [bold]{j.comparison.verdict}[/]")
    for claim in missing:
        console.print(f"{claim.id}: [yellow]not run yet[/]")
    console.print(f"verdicts: {args.out}")
    return args.out


def cmd_list() -> None:
    from optarena.arena.tasks import get_task, list_tasks
    from optarena.optim import get_optimizer_info, list_optimizers

    table = Table(title="optimizers")
    for column in ("name", "description", "lr range"):
        table.add_column(column)
    for name in list_optimizers():
        info = get_optimizer_info(name)
        table.add_row(name, info.description, f"{info.lr_range[0]:g} – {info.lr_range[1]:g}")
    console.print(table)
    table = Table(title="tasks")
    for column in ("name", "description", "metric", "target", "epochs"):
        table.add_column(column)
    for name in list_tasks():
        task = get_task(name)
        table.add_row(name, task.description, f"{task.metric} ({task.mode})", f"{task.target:g}", str(task.epochs))
    console.print(table)


def cmd_compare(args: argparse.Namespace) -> Path:
    from optarena.arena.config import load_experiment_file
    from optarena.arena.protocol import Experiment, compare, completed_runs, planned_runs

    options = {
        key: getattr(args, key)
        for key in (
            "name", "tasks", "optimizers", "trials", "seeds", "epochs", "target", "out", "storage",
            "device", "threads", "data_dir", "subset", "eval_subset", "prune", "tensorboard", "sampler",
        )
        if getattr(args, key) is not None
    }  # fmt: skip
    if args.config is not None:
        experiment = load_experiment_file(args.config, **options)
    else:
        options.setdefault("out", Path("runs") / options.get("name", "default"))
        experiment = Experiment(**options)
    console.print(
        f"[bold]optarena compare[/] {experiment.name}: {len(experiment.tasks)} task(s) × "
        f"{len(experiment.optimizers)} optimizers × ({experiment.trials} trials + {experiment.seeds} seeds)"
    )
    console.print(f"store: {experiment.storage_url}")
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    done = completed_runs(experiment)
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("resuming" if done else "starting", total=planned_runs(experiment), completed=done)

        def advance(message: str) -> None:
            progress.update(bar, advance=1, description=message)

        compare(
            experiment,
            progress=advance,
            prepare_only=args.prepare,
            heartbeat_seconds=args.heartbeat,
            grace_seconds=args.grace,
        )
    if args.prepare:
        console.print(
            f"queued for workers: optarena worker --storage {experiment.storage_url} --study {experiment.name}"
        )
        return experiment.out
    from optarena.arena.report import build_report  # matplotlib is imported only when a report is due

    report = build_report(experiment.storage_url, experiment.name, experiment.out)
    console.print(f"report: [bold]{report}[/] (and {report.with_suffix('.html')})")
    return report


def cmd_run(args: argparse.Namespace) -> Path:
    """One training run; with ``--nproc N`` in N local processes, under torchrun in its processes."""
    import os

    import torch.multiprocessing as mp

    from optarena.arena.tasks import get_task
    from optarena.optim import get_optimizer_info

    get_task(args.task)
    get_optimizer_info(args.optimizer)  # an unknown name fails here, listing the valid ones
    if args.nproc < 1:
        raise ValueError(f"Invalid --nproc: {args.nproc}; expected an integer >= 1")
    if args.nproc > 1:
        mp.spawn(_run_rank, args=(args.nproc, _free_port(), args), nprocs=args.nproc, join=True)
        return _run_path(args)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched by torchrun: it set RANK, WORLD_SIZE, MASTER_*
        return _run_distributed(args, int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
    return _run_training(args, parallel=None, writer=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_rank(rank: int, world: int, port: int, args: argparse.Namespace) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    _run_distributed(args, rank, world)


def _run_distributed(args: argparse.Namespace, rank: int, world: int) -> Path:
    import torch
    import torch.distributed as dist

    cuda = args.device.startswith("cuda")
    if cuda:  # one GPU per rank
        args.device = f"cuda:{rank % torch.cuda.device_count()}"
        torch.cuda.set_device(args.device)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    try:
        return _run_training(args, parallel=args.parallel, writer=rank == 0)
    finally:
        dist.destroy_process_group()


def _run_path(args: argparse.Namespace) -> Path:
    return args.out / f"{args.task}-{args.optimizer}-seed{args.seed}.json"


def _run_training(args: argparse.Namespace, parallel: str | None, writer: bool) -> Path:
    """Train, print each epoch and (``writer``: one process only) write the curves and the figure."""
    import torch

    from optarena.arena.runner import train
    from optarena.arena.tasks import TaskSettings, get_task

    task = get_task(args.task)
    if args.threads:
        torch.set_num_threads(args.threads)
    hyper: dict[str, Any] = {}
    if args.lr is not None:
        hyper["lr"] = args.lr
    for item in args.settings:
        if "=" not in item:
            raise ValueError(f"Invalid --set {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        hyper[key] = _parse_value(value)
    settings = TaskSettings(
        seed=args.seed, device=args.device, data_dir=args.data_dir, subset=args.subset, eval_subset=args.eval_subset
    )
    table = Table(title=f"{args.optimizer} on {task.name} (seed {args.seed})")
    for column in ("epoch", "step", "seconds", "train loss", f"train {task.metric}", f"test {task.metric}"):
        table.add_column(column, justify="right")

    def show(epoch: int, row: dict[str, float]) -> None:
        if not writer:
            return
        console.print(
            f"epoch {epoch:>3}  step {int(row['step']):>6}  {row['wall_time']:7.2f}s  "
            f"train loss {row['train_loss']:.4g}  test {task.metric} {row['test_metric']:.4g}"
        )

    result = train(task, args.optimizer, hyper, seed=args.seed, epochs=args.epochs, settings=settings,
                   diagnostics=True, on_epoch=show, tensorboard_dir=args.tensorboard if writer else None,
                   parallel=parallel)  # fmt: skip
    path = _run_path(args)
    if not writer:
        return path
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_dict(), indent=1))
    figure = _plot_run(result, task.metric, args.out / f"{task.name}-{args.optimizer}-seed{args.seed}.png")
    if result.diverged:
        console.print("[red]the run diverged (non-finite loss)[/]")
    console.print(f"curves: {path}\nfigure: {figure}")
    return path


def _plot_run(result: Any, metric: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in result.records]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(steps, [r["train_loss"] for r in result.records])
    left.set(
        xlabel="step",
        ylabel="train loss",
        yscale="log" if all(r["train_loss"] > 0 for r in result.records) else "linear",
    )
    right.plot(steps, [r["test_metric"] for r in result.records], label="test")
    right.plot(steps, [r["train_metric"] for r in result.records], label="train")
    right.set(xlabel="step", ylabel=metric)
    right.legend()
    for event in result.burst_events:
        for axis in (left, right):
            axis.axvline(event, color="grey", linestyle=":", linewidth=1)
    fig.suptitle(f"{result.optimizer} on {result.task}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def cmd_report(args: argparse.Namespace) -> Path:
    from optarena.arena import store
    from optarena.arena.report import build_report

    out = args.out or Path("runs") / args.name
    url = args.storage or store.default_storage_url(out)
    if args.storage is None and not (out / "optarena.db").is_file():
        raise ValueError(f"Invalid --out: {out} holds no optarena.db; run 'optarena compare' first or pass --storage")
    if args.name not in store.list_experiments(url):
        raise ValueError(f"Unknown experiment {args.name!r} in {url}; found: {', '.join(store.list_experiments(url))}")
    report = build_report(url, args.name, out)
    console.print(f"report: [bold]{report}[/]")
    return report


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            cmd_list()
        elif args.command == "compare":
            cmd_compare(args)
        elif args.command == "run":
            cmd_run(args)
        elif args.command == "worker":
            cmd_worker(args)
        elif args.command == "evidence":
            cmd_evidence(args)
        elif args.command == "report":
            cmd_report(args)
    except KeyboardInterrupt:
        console.print("\n[yellow]interrupted[/]: finished trials are in the store; rerun the same command to continue")
        return 130
    except (ValueError, RuntimeError) as error:
        console.print(f"[red]error:[/] {error}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
