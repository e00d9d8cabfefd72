"""The ``optarena`` command: list, compare, worker, run, evidence, report, export.

This module parses the arguments, checks what only the command line can get wrong, calls the
layer each command belongs to and prints what it returns; a user's mistake is one line (:func:`main`).
Layers are imported inside the commands, so ``optarena list`` does not load matplotlib or Optuna.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import rich.progress
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()


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
    compare.add_argument("--protocol", choices=("quick", "powered"),
                         help="preset of the unset settings: quick (default) or powered (16 trials on 2 tuning "
                              "seeds, ranges widened up to twice, 10 seeds, full test sets)")  # fmt: skip
    compare.add_argument("--tune-seeds", type=int, help="seeds a tuning trial trains on (it scores their mean)")
    compare.add_argument("--max-widenings", type=int, help="times a range whose best sits on an edge is widened")
    compare.add_argument("--widen-factor", type=float, help="a widening moves that edge out by this factor (10)")
    compare.add_argument("--tune-weight-decay", action="store_const", const=True, help="tune weight_decay too")
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
    run.add_argument("--eval-every", default="1", metavar="N|end",
                     help="score the splits before training and after every N-th epoch and the last (default 1); "
                          "'end': after the last epoch only")  # fmt: skip
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
    evidence.add_argument("--workers", type=int, default=1, help="with --run: processes sharing each experiment's "
                          "trials (this one and N-1 'optarena worker' processes on its store)")  # fmt: skip
    evidence.add_argument("--out", type=Path, default=Path("docs/results.md"),
                          help="where the verdicts go; figures and full reports go to the folder of the same "
                               "name beside it (docs/results/)")  # fmt: skip

    report = sub.add_parser("report", help="rebuild the report of an experiment from its store")
    export = sub.add_parser("export", help="write an experiment's results as a table: a row per run and evaluation")
    for stored in (report, export):
        stored.add_argument("--name", default="default")
        stored.add_argument("--out", type=Path, help="output directory (default: runs/<name>)")
        stored.add_argument("--storage", help="SQLAlchemy URL of the results store (default: SQLite in --out)")
    export.add_argument("--format", choices=("csv", "parquet"), default="csv", help="parquet needs pyarrow")
    export.add_argument("--to", type=Path, required=True, metavar="FILE", help="the file to write")
    return parser


def _heartbeat_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--heartbeat", type=int, default=10, help="seconds between a running trial's heartbeats")
    parser.add_argument("--grace", type=int, default=60,
                        help="seconds of silence after which a trial is failed and queued again")  # fmt: skip


# --- the commands --------------------------------------------------------------------------------------------


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
    from optarena.arena.run import preflight
    from optarena.arena.spec.config import experiment_from
    from optarena.arena.study.protocol import check_experiment, compare, completed_runs, planned_budget, planned_runs

    if args.target is not None and not math.isfinite(args.target):
        raise ValueError(f"Invalid --target: {args.target}; expected a finite number")
    preflight.check_data_dir(args.data_dir)
    options = {
        key: getattr(args, key)
        for key in (
            "name", "tasks", "optimizers", "trials", "seeds", "epochs", "target", "out", "storage",
            "device", "threads", "data_dir", "subset", "eval_subset", "prune", "tensorboard", "sampler",
            "protocol", "tune_seeds", "max_widenings", "widen_factor", "tune_weight_decay",
        )
        if getattr(args, key) is not None
    }  # fmt: skip
    experiment = experiment_from(args.config, **options)
    # Outputs, data and every variant's options, before anything is written to the store or trained.
    from_file = f"{args.config}: " if args.config is not None else ""
    check_experiment(
        experiment,
        option="--out" if args.out is not None or not from_file else f"{from_file}out",
        storage_option="--storage" if args.storage is not None or not from_file else f"{from_file}storage",
        train=not args.prepare,
    )
    console.print(
        f"[bold]optarena compare[/] {escape(experiment.name)}: {len(experiment.tasks)} task(s) × "
        f"{len(experiment.optimizers)} optimizers × ({experiment.trials} trials + {experiment.seeds} seeds)"
    )
    console.print(escape(planned_budget(experiment)), soft_wrap=True, highlight=False)
    console.print(f"store: {escape(experiment.storage_url)}")
    columns = (
        rich.progress.SpinnerColumn(),
        rich.progress.TextColumn("{task.description}"),
        rich.progress.BarColumn(),
        rich.progress.MofNCompleteColumn(),
        rich.progress.TimeElapsedColumn(),
        rich.progress.TextColumn("ETA"),
        rich.progress.TimeRemainingColumn(),
    )
    done = completed_runs(experiment)
    with rich.progress.Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("resuming" if done else "starting", total=planned_runs(experiment), completed=done)

        def advance(message: str) -> None:
            progress.update(bar, advance=1, description=escape(message))
            if not console.is_terminal:  # a log file (a study in the background): the bar cannot redraw there
                runs = f"{int(progress.tasks[0].completed)}/{int(progress.tasks[0].total or 0)}"
                console.print(f"{time.strftime('%H:%M:%S')} {runs} {escape(message)}", highlight=False)

        compare(experiment, progress=advance, prepare_only=args.prepare, heartbeat_seconds=args.heartbeat,
                grace_seconds=args.grace)  # fmt: skip
    if args.prepare:
        console.print(
            f"queued for workers: optarena worker --storage {escape(experiment.storage_url)} "
            f"--study {escape(experiment.name)}"
        )
        return experiment.out
    from optarena.arena.render.report import build_report  # matplotlib is imported only when a report is due

    try:
        report = build_report(experiment.storage_url, experiment.name, experiment.out)
    except OSError as error:
        raise ValueError(
            f"cannot write the report to {experiment.out}: {error.strerror or error}. Every result is in the store "
            f"{experiment.storage_url}: rebuild the report elsewhere with optarena report --name {experiment.name} "
            f"--storage {experiment.storage_url} --out DIR"
        ) from None
    console.print(f"report: [bold]{escape(str(report))}[/] (and {escape(str(report.with_suffix('.html')))})")
    return report


def cmd_worker(args: argparse.Namespace) -> int:
    import torch

    from optarena.arena.study import store, workers

    if args.heartbeat < 1 or args.grace <= args.heartbeat:
        raise ValueError(f"Invalid --heartbeat/--grace: {args.heartbeat}/{args.grace}; expected 1 <= heartbeat < grace")
    if not (math.isfinite(args.poll) and args.poll > 0):
        raise ValueError(f"Invalid --poll: {args.poll}; expected a number of seconds > 0")
    experiment = workers.worker_experiment(args.storage, args.study)  # checked before this worker takes a trial
    if experiment.threads:
        torch.set_num_threads(experiment.threads)
    storage = store.open_storage(args.storage, heartbeat_interval=args.heartbeat, grace_period=args.grace)
    console.print(f"[bold]optarena worker[/] {experiment.name} on {args.storage}")
    ran = workers.work(experiment, storage, progress=lambda message: console.print(message), poll_seconds=args.poll)
    console.print(f"done: this worker ran {ran} trial(s); none is left")
    return ran


def _check_integers(args: argparse.Namespace, minimums: dict[str, int]) -> None:
    for key, minimum in minimums.items():
        value = getattr(args, key)
        if value is not None and value < minimum:
            option = "--" + key.replace("_", "-")
            raise ValueError(f"Invalid {option}: {value}; expected an integer >= {minimum}")


def cmd_run(args: argparse.Namespace) -> Path:
    """One training run; with ``--nproc N`` in N local processes, under torchrun in its processes."""
    from optarena.arena.run import preflight, single
    from optarena.arena.tasks import get_task
    from optarena.optim import get_optimizer_info

    get_task(args.task)
    get_optimizer_info(args.optimizer)  # an unknown name fails here, listing the valid ones
    if args.nproc < 1:
        raise ValueError(f"Invalid --nproc: {args.nproc}; expected an integer >= 1")
    _check_integers(args, {"seed": 0, "epochs": 1, "threads": 1, "subset": 1, "eval_subset": 1})
    preflight.check_device(args.device, "--device")
    preflight.check_data_dir(args.data_dir)
    eval_every = single.eval_every(args.eval_every, args.optimizer)
    run = single.SingleRun(
        task=args.task,
        optimizer=args.optimizer,
        hyperparameters=single.hyperparameters(args.optimizer, args.lr, args.settings, args.device),
        seed=args.seed,
        epochs=args.epochs,
        out=args.out,
        device=args.device,
        threads=args.threads,
        data_dir=args.data_dir,
        subset=args.subset,
        eval_subset=args.eval_subset,
        eval_every=eval_every,
        tensorboard=args.tensorboard,
        parallel=args.parallel,
    )
    single.check(run)
    return single.run(run, nproc=args.nproc)


def cmd_evidence(args: argparse.Namespace) -> Path:
    from optarena.arena.evidence.command import evidence

    if args.workers < 1:
        raise ValueError(f"Invalid --workers: {args.workers}; expected an integer >= 1")
    if args.workers > 1 and not args.run:
        raise ValueError(f"Invalid --workers: {args.workers} without --run; workers run experiments, and none is run")
    running = lambda path, url: console.print(f"[bold]running[/] {path.name}: {url}")  # noqa: E731
    outcome = evidence(args.claims, args.out, run=args.run, smoke=args.smoke, on_run=running, workers=args.workers)
    for j in outcome.judgements:  # the page's verdict: after Holm's correction across the claims
        console.print(f"{j.claim.id}: [bold]{j.verdict}[/]")
    for claim in outcome.missing:
        console.print(f"{claim.id}: [yellow]not run yet[/]")
    console.print(f"verdicts: {outcome.page}")
    return outcome.page


def _stored_experiment(args: argparse.Namespace, *, writable_out: bool = False) -> tuple[Path, str]:
    """The output folder and store URL of experiment ``--name`` (``--out``, ``--storage``), checked to hold it."""
    from optarena.arena.run import preflight
    from optarena.arena.spec.experiment import default_storage_url
    from optarena.arena.study import store

    out = args.out or Path("runs") / args.name
    url = args.storage or default_storage_url(out)
    if args.storage is None and not (out / "optarena.db").is_file():
        raise ValueError(f"Invalid --out: {out} holds no optarena.db; run 'optarena compare' first or pass --storage")
    if writable_out:
        preflight.check_writable_dir(out, "--out")
    if args.name not in store.list_experiments(url):
        raise ValueError(f"Unknown experiment {args.name!r} in {url}; found: {', '.join(store.list_experiments(url))}")
    return out, url


def cmd_report(args: argparse.Namespace) -> Path:
    from optarena.arena.render.report import build_report

    out, url = _stored_experiment(args, writable_out=True)
    report = build_report(url, args.name, out)
    console.print(f"report: [bold]{escape(str(report))}[/]")
    return report


def cmd_export(args: argparse.Namespace) -> Path:
    from optarena.arena.analysis import frames

    rows = frames.load_rows(_stored_experiment(args)[1], args.name)
    frames.write_table(rows, args.to, args.format)  # an unwritable --to is an OSError: one line
    console.print(f"{len(rows)} rows: [bold]{escape(str(args.to))}[/]")
    return args.to


# --- errors --------------------------------------------------------------------------------------------------


def _error(message: str) -> None:
    console.print(f"[red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)


def _describe_os_error(error: OSError) -> str:
    if error.filename is not None and error.strerror:
        other = f" -> {error.filename2}" if error.filename2 is not None else ""
        return f"{error.filename}{other}: {error.strerror}"
    return str(error)


INTERRUPTED = {
    "compare": "finished trials are in the store; rerun the same command to continue",
    "worker": "its running trial is closed as failed and queued again; finished trials are in the store",
    "evidence": "finished trials are in the stores; rerun the same command to continue",
    "run": "the run was not finished, so nothing was written",
}


def main(argv: list[str] | None = None) -> int:
    """The ``optarena`` command. Exit codes: 0 done, 1 a finished run saved elsewhere, 2 an error, 130 Ctrl-C.

    A user's mistake — a bad option, a missing or unreadable file, an output that cannot be written —
    is one line; only an unexpected error (a bug) shows a traceback.
    """
    from optarena.arena.run.allocator import keep_freed_memory
    from optarena.arena.run.single import ResultsSavedElsewhere
    from optarena.arena.study.optuna_logs import quiet_failed_trials

    args = _parser().parse_args(argv)
    quiet_failed_trials()
    try:
        if args.command in ("compare", "run", "worker", "evidence"):  # the commands that train
            keep_freed_memory()
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
        elif args.command == "export":
            cmd_export(args)
    except KeyboardInterrupt:
        message = INTERRUPTED.get(args.command, "stopped")
        console.print(f"\n[yellow]interrupted[/]: {message}", soft_wrap=True)
        return 130
    except ResultsSavedElsewhere as error:
        _error(str(error))
        return 1
    except (ValueError, RuntimeError) as error:
        _error(str(error))
        return 2
    except OSError as error:  # a path the user gave: missing, unreadable, unwritable, a file for a folder
        _error(_describe_os_error(error))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
