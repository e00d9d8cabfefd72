"""The ``optarena`` command: list, compare, run, report."""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
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

    from optarena.arena import preflight, store, workers

    if args.heartbeat < 1 or args.grace <= args.heartbeat:
        raise ValueError(f"Invalid --heartbeat/--grace: {args.heartbeat}/{args.grace}; expected 1 <= heartbeat < grace")
    if not (math.isfinite(args.poll) and args.poll > 0):
        raise ValueError(f"Invalid --poll: {args.poll}; expected a number of seconds > 0")
    experiment = workers.load_experiment_config(args.storage, args.study)
    preflight.check_tensorboard(experiment.tensorboard, "tensorboard (of the experiment)")
    preflight.check_data(experiment.tasks, experiment.settings())  # before this worker takes a trial
    if experiment.threads:
        torch.set_num_threads(experiment.threads)
    storage = store.open_storage(args.storage, heartbeat_interval=args.heartbeat, grace_period=args.grace)
    console.print(f"[bold]optarena worker[/] {experiment.name} on {args.storage}")
    ran = workers.work(experiment, storage, progress=lambda message: console.print(message), poll_seconds=args.poll)
    console.print(f"done: this worker ran {ran} trial(s); none is left")
    return ran


SMOKE = {"subset": 256, "eval_subset": 64, "epochs": 2, "trials": 2, "seeds": 2}


def cmd_evidence(args: argparse.Namespace) -> Path:
    from optarena.arena import markdown, preflight, store
    from optarena.arena.config import ConfigError, load_experiment_file
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
    for claim in claims_file.claims:  # a claim its experiment does not run would stay "not run yet" forever
        experiment = experiments[claim.experiment]
        for what, name, among in (
            ("task", claim.task, experiment.tasks),
            ("method", claim.method, experiment.optimizers),
            ("baseline", claim.baseline, experiment.optimizers),
        ):
            if name not in among:
                raise ConfigError(
                    f"{args.claims}: claim {claim.id!r}: {what} {name!r} is not among the "
                    f"{'tasks' if what == 'task' else 'optimizers'} of {claim.experiment.name} ({', '.join(among)})"
                )
    extras = args.out.parent / args.out.stem  # docs/results.md -> docs/results/: figures and full reports
    preflight.check_writable_file(args.out, "--out")
    preflight.check_writable_dir(extras, "--out (its figures and reports folder)")
    if args.run:
        for path, experiment in experiments.items():  # every study's outputs and data, before the first runs
            preflight.check_experiment(experiment, option=f"{path}: out", storage_option=f"{path}: storage")
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
    text = render(judgements, title, claims_file.notes, figures=extras / "figures", page=args.out, missing=missing)
    reports = []
    for path, experiment in experiments.items():
        if experiment.name not in store.list_experiments(experiment.storage_url):
            continue  # nothing run yet: its claims are listed as such
        report = build_report(experiment.storage_url, experiment.name, extras / experiment.name)
        link = report.relative_to(args.out.parent).as_posix()
        reports.append(f"- {markdown.code_span(path.name)}: [{markdown.text(link)}]({markdown.link_target(link)})")
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
    from optarena.arena import preflight
    from optarena.arena.config import load_experiment_file
    from optarena.arena.protocol import Experiment, compare, completed_runs, planned_runs

    if args.target is not None and not math.isfinite(args.target):
        raise ValueError(f"Invalid --target: {args.target}; expected a finite number")
    preflight.check_data_dir(args.data_dir)
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
    if experiment.target is not None and not math.isfinite(experiment.target):  # until Experiment.validate says so
        raise ValueError(f"Invalid target: {experiment.target}; expected a finite number")
    # Outputs, data and every variant's options, before anything is written to the store or trained.
    from_file = f"{args.config}: " if args.config is not None else ""
    preflight.check_experiment(
        experiment,
        option="--out" if args.out is not None or not from_file else f"{from_file}out",
        storage_option="--storage" if args.storage is not None or not from_file else f"{from_file}storage",
        train=not args.prepare,
    )
    console.print(
        f"[bold]optarena compare[/] {escape(experiment.name)}: {len(experiment.tasks)} task(s) × "
        f"{len(experiment.optimizers)} optimizers × ({experiment.trials} trials + {experiment.seeds} seeds)"
    )
    console.print(f"store: {escape(experiment.storage_url)}")
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
            progress.update(bar, advance=1, description=escape(message))

        compare(
            experiment,
            progress=advance,
            prepare_only=args.prepare,
            heartbeat_seconds=args.heartbeat,
            grace_seconds=args.grace,
        )
    if args.prepare:
        console.print(
            f"queued for workers: optarena worker --storage {escape(experiment.storage_url)} "
            f"--study {escape(experiment.name)}"
        )
        return experiment.out
    from optarena.arena.report import build_report  # matplotlib is imported only when a report is due

    try:
        report = build_report(experiment.storage_url, experiment.name, experiment.out)
    except OSError as error:
        raise ValueError(
            f"cannot write the report to {experiment.out}: {_os_reason(error)}. Every result is in the store "
            f"{experiment.storage_url}: rebuild the report elsewhere with optarena report --name {experiment.name} "
            f"--storage {experiment.storage_url} --out DIR"
        ) from None
    console.print(f"report: [bold]{escape(str(report))}[/] (and {escape(str(report.with_suffix('.html')))})")
    return report


# Keywords create_optimizer and its wrappers take besides the optimizer's own (optarena.optim.registry).
WRAPPER_KEYS = (
    "lookahead",
    "lookahead_k",
    "lookahead_alpha",
    "lookahead_pullback",
    "agr",
    "agr_stop_step",
    "agr_official_edge_cases",
    "compile",
    "decay_1d",
)


def _check_integers(args: argparse.Namespace, minimums: dict[str, int]) -> None:
    for key, minimum in minimums.items():
        value = getattr(args, key)
        if value is not None and value < minimum:
            option = "--" + key.replace("_", "-")
            raise ValueError(f"Invalid {option}: {value}; expected an integer >= {minimum}")


def _check_device(device: str) -> None:
    import torch

    if not (device == "cpu" or device == "cuda" or re.fullmatch(r"cuda:\d+", device)):
        raise ValueError(f"Invalid --device: {device!r}; expected 'cpu' or 'cuda[:N]'")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"Invalid --device: {device!r}; CUDA is not available on this machine")


def _run_hyperparameters(args: argparse.Namespace) -> dict[str, Any]:
    """``--lr`` and every ``--set``, checked by building the optimizer once on a dummy layer (no training yet)."""
    from optarena.arena import preflight
    from optarena.optim import get_optimizer_info

    defaults = get_optimizer_info(args.optimizer).hyperparameter_defaults()
    valid = sorted(set(defaults) | set(WRAPPER_KEYS))
    hyper: dict[str, Any] = {}
    if args.lr is not None:
        hyper["lr"] = args.lr
    for item in args.settings:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"Invalid --set {item!r}: expected KEY=VALUE")
        if key not in valid:
            raise ValueError(
                f"Invalid --set {item}: {args.optimizer} has no hyperparameter {key!r}; valid: {', '.join(valid)}"
            )
        hyper[key] = _parse_value(text)
    try:
        preflight.check_optimizer(args.optimizer, hyper, label="--lr/--set", device=args.device)
    except preflight.PreflightError as error:
        # Name the key: the one without which the rest builds (lookahead_k needs lookahead, so not each alone).
        for key, value in hyper.items():
            try:
                preflight.check_optimizer(
                    args.optimizer, {k: v for k, v in hyper.items() if k != key}, label="", device=args.device
                )
            except preflight.PreflightError:
                continue
            option = "--lr" if key == "lr" and args.lr is not None else f"--set {key}={value!r}"
            default = f"; the default is {defaults[key]!r}" if key in defaults else ""
            raise preflight.PreflightError(str(error).replace("--lr/--set", option, 1) + default) from None
        raise
    return hyper


def cmd_run(args: argparse.Namespace) -> Path:
    """One training run; with ``--nproc N`` in N local processes, under torchrun in its processes."""
    import os

    import torch.multiprocessing as mp

    from optarena.arena import preflight
    from optarena.arena.tasks import TaskSettings, get_task
    from optarena.optim import get_optimizer_info

    get_task(args.task)
    get_optimizer_info(args.optimizer)  # an unknown name fails here, listing the valid ones
    if args.nproc < 1:
        raise ValueError(f"Invalid --nproc: {args.nproc}; expected an integer >= 1")
    _check_integers(args, {"seed": 0, "epochs": 1, "threads": 1, "subset": 1, "eval_subset": 1})
    _check_device(args.device)
    preflight.check_data_dir(args.data_dir)
    args.hyperparameters = _run_hyperparameters(args)
    # Before training: the data are there, and the curves, the figure and the TensorBoard logs can be written.
    preflight.check_data([args.task], TaskSettings(data_dir=args.data_dir))
    preflight.check_writable_dir(args.out, "--out")
    preflight.check_tensorboard(args.tensorboard)
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


class ResultsSavedElsewhere(RuntimeError):
    """A finished run's results could not go where asked; the message says where they are instead."""


def _run_training(args: argparse.Namespace, parallel: str | None, writer: bool) -> Path:
    """Train, print each epoch and (``writer``: one process only) write the curves and the figure."""
    import torch

    from optarena.arena.runner import train
    from optarena.arena.tasks import TaskSettings, get_task

    task = get_task(args.task)
    if args.threads:
        torch.set_num_threads(args.threads)
    hyper = getattr(args, "hyperparameters", None)
    if hyper is None:  # called without cmd_run's checks
        hyper = _run_hyperparameters(args)
    settings = TaskSettings(
        seed=args.seed, device=args.device, data_dir=args.data_dir, subset=args.subset, eval_subset=args.eval_subset
    )

    def show(epoch: int, row: dict[str, float]) -> None:
        if not writer:
            return
        console.print(
            f"epoch {epoch:>3}  step {int(row['step']):>6}  {row['wall_time']:7.2f}s  "
            f"train loss {row['train_loss']:.4g}  test {escape(task.metric)} {row['test_metric']:.4g}"
        )

    result = train(task, args.optimizer, hyper, seed=args.seed, epochs=args.epochs, settings=settings,
                   diagnostics=True, on_epoch=show, tensorboard_dir=args.tensorboard if writer else None,
                   parallel=parallel)  # fmt: skip
    path = _run_path(args)
    if not writer:
        return path
    if result.diverged:
        console.print("[red]the run diverged (non-finite loss)[/]")
    path, figure, problem = _write_run(result, task.metric, args)
    if problem is not None:
        raise ResultsSavedElsewhere(problem)
    console.print(f"curves: {escape(str(path))}\nfigure: {escape(str(figure))}")
    return path


def _os_reason(error: OSError) -> str:
    return error.strerror or str(error)


def _fallback_folder() -> Path | None:
    """A fresh folder for results that could not go where asked: in the system's temporary folder, else here."""
    import tempfile

    for parent in (None, "."):
        try:
            return Path(tempfile.mkdtemp(prefix="optarena-run-", dir=parent)).resolve()
        except OSError:
            continue
    return None


def _write_run(result: Any, metric: str, args: argparse.Namespace) -> tuple[Path, Path | None, str | None]:
    """Write the curves (JSON) and the figure to ``--out``; if that fails, to a fresh temporary folder.

    Returns the curves' path, the figure's path (``None`` if it could not be drawn anywhere) and, when
    ``--out`` failed, a message saying so and where everything went. Nothing the run computed is lost:
    if no folder at all can be written, the curves are printed.
    """
    payload = json.dumps(result.to_dict(), indent=1)
    names = (_run_path(args).name, f"{args.task}-{args.optimizer}-seed{args.seed}.png")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / names[0]
        path.write_text(payload)
        return path, _plot_run(result, metric, args.out / names[1]), None
    except OSError as error:
        problem = f"cannot write the results to {args.out}: {_os_reason(error)}"
    folder = _fallback_folder()
    if folder is not None:
        try:
            path = folder / names[0]
            path.write_text(payload)
        except OSError:
            folder = None
    if folder is None:
        sys.stdout.write(payload + "\n")
        return Path("-"), None, f"{problem}; nor anywhere else: the curves are printed above"
    try:
        figure: Path | None = _plot_run(result, metric, folder / names[1])
    except OSError:
        figure = None
    drawn = f" and its figure in {figure}" if figure is not None else ""
    return path, figure, f"{problem}; the finished run's curves are saved in {path}{drawn} instead"


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
    for event in (step for steps in result.events.values() for step in steps):  # Adaburst's bursts
        for axis in (left, right):
            axis.axvline(event, color="grey", linestyle=":", linewidth=1)
    fig.suptitle(f"{result.optimizer} on {result.task}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def cmd_report(args: argparse.Namespace) -> Path:
    from optarena.arena import preflight, store
    from optarena.arena.report import build_report

    out = args.out or Path("runs") / args.name
    url = args.storage or store.default_storage_url(out)
    if args.storage is None and not (out / "optarena.db").is_file():
        raise ValueError(f"Invalid --out: {out} holds no optarena.db; run 'optarena compare' first or pass --storage")
    preflight.check_writable_dir(out, "--out")
    if args.name not in store.list_experiments(url):
        raise ValueError(f"Unknown experiment {args.name!r} in {url}; found: {', '.join(store.list_experiments(url))}")
    report = build_report(url, args.name, out)
    console.print(f"report: [bold]{escape(str(report))}[/]")
    return report


class _QuietFailedTrials(logging.Filter):
    """Drop Optuna's report of a trial that raised (its message and full traceback).

    ``study.optimize(catch=())`` logs the failure with the traceback and then re-raises the error, which
    :func:`main` reports in one line — a user's mistake, or Ctrl-C — or, for a bug, Python shows with its
    traceback. Without this a Ctrl-C or a user's mistake would print some 25 lines of traceback first.
    """

    _FAILED = re.compile(r"Trial (\d+) failed with (parameters|value)")

    def __init__(self) -> None:
        super().__init__()
        self.raised: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        match = self._FAILED.match(str(record.msg))
        if match is None:
            return True
        if match.group(2) == "parameters" and record.exc_info is not None:
            self.raised.add(match.group(1))
            return False
        return not (match.group(2) == "value" and match.group(1) in self.raised)


def _quiet_optuna_failures() -> None:
    logger = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _QuietFailedTrials) for f in logger.filters):
        logger.addFilter(_QuietFailedTrials())


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
    args = _parser().parse_args(argv)
    _quiet_optuna_failures()
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
