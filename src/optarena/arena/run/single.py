"""``optarena run``: one training run, its epochs printed, its curves written as JSON and drawn.

:func:`hyperparameters` reads ``--lr`` and ``--set KEY=VALUE`` and checks them by building the
optimizer once, so a wrong key or value is one line naming it before any training. :func:`run`
trains in this process, in ``nproc`` local processes, or in the processes ``torchrun`` started
(:mod:`optarena.arena.run.launch`); one process prints and writes. A finished run whose folder
cannot be written is saved in a fresh temporary folder instead (:class:`ResultsSavedElsewhere`
says where), or printed: nothing it computed is lost.
"""

from __future__ import annotations

import functools
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from optarena.arena.run import launch, preflight, runner
from optarena.arena.run.runner import RunResult
from optarena.arena.tasks import TaskSettings, get_task
from optarena.optim import get_optimizer_info

console = Console()

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


class ResultsSavedElsewhere(RuntimeError):
    """A finished run's results could not go where asked; the message says where they are instead."""


@dataclass(frozen=True)
class SingleRun:
    """One run as ``optarena run`` asks for it."""

    task: str
    optimizer: str
    hyperparameters: dict[str, Any]
    seed: int = 0
    epochs: int | None = None  # None: the task's default
    out: Path = Path("runs/single")
    device: str = "cpu"
    threads: int | None = None
    data_dir: Path | None = None
    subset: int | None = None
    eval_subset: int | None = None
    eval_every: int | None = 1  # epochs between scored evaluations; None: the last epoch only (runner.train)
    tensorboard: Path | None = None
    parallel: str = "ddp"  # with several processes: 'ddp' or 'fsdp'

    @property
    def stem(self) -> str:
        return f"{self.task}-{self.optimizer}-seed{self.seed}"

    @property
    def path(self) -> Path:
        """Where the curves go."""
        return self.out / f"{self.stem}.json"


def _parse_value(text: str) -> Any:
    """A ``--set key=value`` value: JSON where it parses (numbers, booleans, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def hyperparameters(optimizer: str, lr: float | None, settings: Sequence[str], device: str) -> dict[str, Any]:
    """``--lr`` and every ``--set``, checked by building the optimizer once on a dummy layer (no training yet)."""
    defaults = get_optimizer_info(optimizer).hyperparameter_defaults()
    valid = sorted(set(defaults) | set(WRAPPER_KEYS))
    hyper: dict[str, Any] = {}
    if lr is not None:
        hyper["lr"] = lr
    for item in settings:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"Invalid --set {item!r}: expected KEY=VALUE")
        if key not in valid:
            raise ValueError(
                f"Invalid --set {item}: {optimizer} has no hyperparameter {key!r}; valid: {', '.join(valid)}"
            )
        hyper[key] = _parse_value(text)
    try:
        preflight.check_optimizer(optimizer, hyper, label="--lr/--set", device=device)
    except preflight.PreflightError as error:
        # Name the key: the one without which the rest builds (lookahead_k needs lookahead, so not each alone).
        for key, value in hyper.items():
            try:
                without = {k: v for k, v in hyper.items() if k != key}
                preflight.check_optimizer(optimizer, without, label="", device=device)
            except preflight.PreflightError:
                continue
            option = "--lr" if key == "lr" and lr is not None else f"--set {key}={value!r}"
            default = f"; the default is {defaults[key]!r}" if key in defaults else ""
            raise preflight.PreflightError(str(error).replace("--lr/--set", option, 1) + default) from None
        raise
    return hyper


def eval_every(text: str, optimizer: str) -> int | None:
    """``--eval-every``: a whole number >= 1, or 'end' (None), that this optimizer's run can have."""
    value: int | None = None
    if text.strip().lower() != "end":
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(
                f"Invalid --eval-every: {text!r}; expected an integer >= 1, or 'end' (the last epoch only)"
            )
    try:
        runner.check_eval_every(value, optimizer)
    except ValueError as error:
        raise ValueError(str(error).replace(f"eval_every: {value!r}", f"--eval-every: {text!r}", 1)) from None
    return value


def check(single: SingleRun) -> None:
    """Before training: the data are there, and the curves, the figure and the TensorBoard logs can be written."""
    preflight.check_data([single.task], TaskSettings(data_dir=single.data_dir))
    preflight.check_writable_dir(single.out, "--out")
    preflight.check_tensorboard(single.tensorboard)


def run(single: SingleRun, nproc: int = 1) -> Path:
    """Train ``single`` here, in ``nproc`` local processes, or in torchrun's; returns where the curves are."""
    if nproc > 1:
        launch.spawn(functools.partial(_train_rank, single), nproc)
        return single.path
    joined = launch.torchrun_rank()
    if joined is not None:
        return _train_rank(single, *joined)
    return train_and_write(single, parallel=None, writer=True)


def _train_rank(single: SingleRun, rank: int, world: int) -> Path:
    with launch.process_group(single.device, rank, world) as device:
        return train_and_write(replace(single, device=device), parallel=single.parallel, writer=rank == 0)


def train_and_write(single: SingleRun, parallel: str | None, writer: bool) -> Path:
    """Train, print each epoch and (``writer``: one process only) write the curves and the figure."""
    import torch

    task = get_task(single.task)
    if single.threads:
        torch.set_num_threads(single.threads)
    settings = TaskSettings(
        seed=single.seed,
        device=single.device,
        data_dir=single.data_dir,
        subset=single.subset,
        eval_subset=single.eval_subset,
    )

    def show(epoch: int, row: dict[str, float]) -> None:
        if not writer:
            return
        fid = f"  FID {row['fid']:.4g}" if "fid" in row else ""  # a generative task's FID epochs
        console.print(
            f"epoch {epoch:>3}  step {int(row['step']):>6}  {row['wall_time']:7.2f}s  "
            f"train loss {row['train_loss']:.4g}  test {escape(task.metric)} {row['test_metric']:.4g}{fid}"
        )

    result = runner.train(task, single.optimizer, single.hyperparameters, seed=single.seed, epochs=single.epochs,
                          settings=settings, diagnostics=True, on_epoch=show,
                          tensorboard_dir=single.tensorboard if writer else None, parallel=parallel,
                          eval_every=single.eval_every)  # fmt: skip
    if not writer:
        return single.path
    if result.diverged:
        console.print("[red]the run diverged (non-finite loss)[/]")
    path, figure, problem = write(result, task.metric, single)
    if problem is not None:
        raise ResultsSavedElsewhere(problem)
    console.print(f"curves: {escape(str(path))}\nfigure: {escape(str(figure))}")
    return path


def _os_reason(error: OSError) -> str:
    return error.strerror or str(error)


def _fallback_folder() -> Path | None:
    """A fresh folder for results that could not go where asked: in the system's temporary folder, else here."""
    for parent in (None, "."):
        try:
            return Path(tempfile.mkdtemp(prefix="optarena-run-", dir=parent)).resolve()
        except OSError:
            continue
    return None


def write(result: RunResult, metric: str, single: SingleRun) -> tuple[Path, Path | None, str | None]:
    """Write the curves (JSON) and the figure to ``single.out``; if that fails, to a fresh temporary folder.

    Returns the curves' path, the figure's path (``None`` if it could not be drawn anywhere) and, when
    ``out`` failed, a message saying so and where everything went. Nothing the run computed is lost:
    if no folder at all can be written, the curves are printed.
    """
    payload = json.dumps(result.to_dict(), indent=1)
    names = (single.path.name, f"{single.stem}.png")
    try:
        single.out.mkdir(parents=True, exist_ok=True)
        path = single.out / names[0]
        path.write_text(payload)
        return path, plot(result, metric, single.out / names[1]), None
    except OSError as error:
        problem = f"cannot write the results to {single.out}: {_os_reason(error)}"
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
        figure: Path | None = plot(result, metric, folder / names[1])
    except OSError:
        figure = None
    drawn = f" and its figure in {figure}" if figure is not None else ""
    return path, figure, f"{problem}; the finished run's curves are saved in {path}{drawn} instead"


def plot(result: RunResult, metric: str, path: Path) -> Path:
    """The run's training loss and its test and training metric against steps; events as dotted lines."""
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
