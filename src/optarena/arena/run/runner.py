"""One training run: one optimizer, one task, one seed, a fixed number of epochs.

The runner records per-epoch curves (step, wall time, train loss/metric, validation and test
metric), and on request the diagnostics the report draws: the 2-D trajectory of a function task,
the per-layer update magnitude per epoch (the Adaburst paper's Fig. 1), and a generative task's FID
and grids of samples. A run whose loss turns non-finite stops and is marked diverged.

What an optimizer needs from the loop besides ``step`` (Adaburst's trigger, SophiaG's Hessian
refresh) is what its registry entry declares (:mod:`optarena.optim.hooks`): the runner calls those
hooks for every optimizer and records the events they name (Adaburst's ``'burst'``) at their step.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optarena.arena.spec.variants import OptimizerSpec, resolve
from optarena.arena.tasks import Task, TaskSettings
from optarena.optim import NonFiniteGradientError, create_optimizer, get_optimizer_info
from optarena.optim.agr import relative_change
from optarena.optim.hooks import LoopContext, LoopHooks

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class RunResult:
    """What one run produced; ``records`` has one dict per evaluated epoch (epoch 0 = before training)."""

    task: str
    optimizer: str
    hyperparameters: dict[str, Any]
    seed: int
    records: list[dict[str, float]] = field(default_factory=list)
    diverged: bool = False
    diverged_reason: str = ""  # what made the run stop: a non-finite loss, gradient or metric, and when
    events: dict[str, list[int]] = field(default_factory=dict)  # event name -> the steps it happened after
    trajectory: list[list[float]] = field(default_factory=list)  # function tasks: the point after each step
    update_magnitudes: dict[str, list[float]] = field(default_factory=dict)  # layer -> mean |Δθ| per epoch
    # layer type -> median over its tensors of AGR's ‖AGR(g) − g‖/‖g‖ on the epoch's last gradient, per epoch
    agr_change: dict[str, list[float]] = field(default_factory=dict)
    samples: dict[int, str] = field(default_factory=dict)  # generative tasks: epoch -> base64 PNG grid of samples
    generation: dict[str, Any] = field(default_factory=dict)  # how those samples were made and scored (FID features)
    threads: int = 1
    load_average: list[float] = field(default_factory=list)
    device: str = "cpu"

    def final(self, key: str = "test_metric") -> float:
        return self.records[-1][key]

    def to_dict(self) -> dict[str, Any]:
        """The run as ``optarena run`` writes it (JSON): each event's steps as ``<name>_events``, and
        ``burst_events`` always there, as in the files written before events were named."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if key == "events":
                out.update({"burst_events": [], **{f"{name}_events": steps for name, steps in value.items()}})
            else:
                out[key] = value
        return out


PARALLEL_MODES = ("ddp", "fsdp")


def _wrap_parallel(problem: Any, task: Task, parallel: str | None) -> tuple[int, int]:
    """Wrap ``problem.model`` for data-parallel training; returns (rank, world size)."""
    if parallel is None:
        return 0, 1
    import torch.distributed as dist

    if parallel not in PARALLEL_MODES:
        raise ValueError(f"Invalid parallel: {parallel!r}; expected one of {', '.join(map(repr, PARALLEL_MODES))}")
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("parallel training needs an initialized torch.distributed process group (torchrun)")
    if task.kind == "function":
        raise ValueError(f"Invalid task for parallel training: {task.name} has no batches of examples to share")
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        problem.model = DistributedDataParallel(problem.model)
    else:
        from torch.distributed.fsdp import fully_shard

        fully_shard(problem.model)
    return dist.get_rank(), dist.get_world_size()


def layer_kinds(model: nn.Module) -> dict[str, list[torch.Tensor]]:
    """The trained parameters by layer type: the owning module's class and the parameter's name (``Conv2d.weight``)."""
    kinds: dict[str, list[torch.Tensor]] = {}
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if param.requires_grad:
                kinds.setdefault(f"{type(module).__name__}.{name}", []).append(param)
    return kinds


def _record_agr_change(kinds: dict[str, list[torch.Tensor]], result: RunResult) -> None:
    """AGR's relative change on the gradients the epoch's last step used (whatever the optimizer: how much AGR
    would change them), the median over each layer type's tensors."""
    for kind, params in kinds.items():
        changes = [relative_change(p.grad) for p in params if p.grad is not None]
        if changes:
            result.agr_change.setdefault(kind, []).append(statistics.median(changes))


def _tracked_layers(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weight matrices and kernels whose update magnitudes are recorded (not biases or norms)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad and p.ndim >= 2}


def _tensorboard_writer(log_dir: Path | None) -> Any:
    if log_dir is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise RuntimeError("TensorBoard logging needs the tensorboard package: pip install tensorboard") from error
    return SummaryWriter(log_dir=str(log_dir))


def _load_average() -> list[float]:
    try:
        return list(os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        return []


def check_eval_every(eval_every: int | None, optimizer_name: str | OptimizerSpec) -> None:
    """Raise ``ValueError`` for an ``eval_every`` (see :func:`train`) this optimizer's run cannot have."""
    spec = optimizer_name if isinstance(optimizer_name, OptimizerSpec) else resolve(optimizer_name)
    hooks = get_optimizer_info(spec.optimizer).hooks
    if eval_every is not None and (isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1):
        raise ValueError(f"Invalid eval_every: {eval_every!r}; expected an integer >= 1, or None (the last epoch only)")
    skips_epochs = eval_every is None or eval_every > 1
    if skips_epochs and type(hooks).after_epoch is not LoopHooks.after_epoch:
        raise ValueError(
            f"Invalid eval_every: {eval_every!r}; {spec.name}'s loop hooks read the metrics after every epoch "
            "(e.g. Adaburst's plateau trigger reads the training accuracy), so every epoch must be scored: use 1"
        )


def train(
    task: Task,
    optimizer_name: str | OptimizerSpec,
    hyperparameters: dict[str, Any],
    *,
    seed: int,
    epochs: int | None = None,
    settings: TaskSettings | None = None,
    diagnostics: bool = False,
    score_test: bool = True,
    on_epoch: EpochCallback | None = None,
    tensorboard_dir: Path | None = None,
    parallel: str | None = None,
    eval_every: int | None = 1,
) -> RunResult:
    """Train ``task`` with the registered optimizer or variant ``optimizer_name`` and return its curves.

    A variant's fixed options are applied under ``hyperparameters`` and its schedule is stepped after
    every batch.

    ``diagnostics`` records the per-layer update magnitudes and a function task's trajectory, and lets the task
    measure what is costly (a generative task's FID and samples, kept in ``samples`` and ``generation``).
    ``score_test=False`` leaves the test split unscored (a tuning trial: its objective and pruning read the
    validation metric, and tuning should not look at the test split; the records then have no ``test_*`` keys).
    ``on_epoch(epoch, record)`` is called after every evaluation (pruning raises from there).
    ``eval_every``: the splits are scored before training and after every ``eval_every``-th epoch and the last;
    None scores them once, after the last epoch (the curves then have one point: the least a run can cost). An
    optimizer whose loop hooks read every epoch's metrics (Adaburst's plateau trigger) needs 1.
    ``tensorboard_dir`` also writes every record as TensorBoard scalars (needs ``tensorboard``).
    ``parallel='ddp'`` or ``'fsdp'`` (in an initialized ``torch.distributed`` process group) trains
    data-parallel: every rank runs this with the same arguments, takes its share of each batch, and
    the gradients are averaged (DDP) or reduce-scattered (FSDP2) so that a step equals one on the
    whole batch; every rank evaluates on the whole data and gets the same records.
    """
    epochs = task.epochs if epochs is None else epochs
    spec = optimizer_name if isinstance(optimizer_name, OptimizerSpec) else resolve(optimizer_name)
    hooks = get_optimizer_info(spec.optimizer).hooks
    check_eval_every(eval_every, spec)
    writer = _tensorboard_writer(tensorboard_dir)
    # Every other setting as given; a task measures its costly extras (FID) in the reruns, which ask for diagnostics.
    settings = replace(settings or TaskSettings(), seed=seed, epochs=epochs, diagnostics=diagnostics)
    torch.manual_seed(seed)
    problem = task.build(settings)
    model = problem.model
    rank, world = _wrap_parallel(problem, task, parallel)
    problem_after_step = getattr(problem, "after_step", None)  # the diffusion tasks' EMA of the weights
    context = LoopContext(
        metric_mode=task.mode,  # the training metric the hooks watch improves in the task's direction
        batch_size=getattr(problem, "batch_size", None),  # a function task has no batches
        classification=task.kind == "classification",
        steps_per_epoch=problem.steps_per_epoch,
        total_steps=epochs * problem.steps_per_epoch,
    )
    # The hooks' options first: the variant's fixed options and the tuned hyperparameters win.
    options = {**hooks.options(context), **spec.options_for(problem.steps_per_epoch), **hyperparameters}
    # A NaN or infinite gradient stops the run, marked diverged, instead of spreading silently
    # (Lion's sign(NaN) = 0 would freeze a coordinate with the loss still finite).
    optimizer = create_optimizer(model, spec.optimizer, **{"nonfinite": "raise", **options})
    schedule = spec.build_schedule(optimizer, epochs * problem.steps_per_epoch, problem.steps_per_epoch)
    result = RunResult(
        task.name,
        spec.name,
        dict(hyperparameters),
        seed,
        threads=torch.get_num_threads(),
        load_average=_load_average(),
        device=settings.device,
    )
    layers = _tracked_layers(model) if diagnostics else {}
    kinds = layer_kinds(model) if diagnostics and world == 1 else {}  # sharded gradients: not measured
    for name in layers:
        result.update_magnitudes[name] = []
    if diagnostics and task.kind == "function":
        result.trajectory.append(model.xy.detach().tolist())

    def record(epoch: int, step: int, elapsed: float) -> dict[str, float]:
        metrics = problem.evaluate(test=score_test)
        row = {"epoch": float(epoch), "step": float(step), "wall_time": elapsed, **metrics}
        result.records.append(row)
        if writer is not None:
            for key, value in row.items():
                if key not in ("epoch", "step"):
                    writer.add_scalar(key, value, global_step=step)
            writer.flush()
        if on_epoch is not None:
            on_epoch(epoch, row)
        return row

    model.train()
    if eval_every is not None:
        record(0, 0, 0.0)
    step, elapsed = 0, 0.0
    for epoch in range(1, epochs + 1):
        sums = dict.fromkeys(layers, 0.0)
        started = time.perf_counter()
        for whole in problem.batches(epoch):
            batch = whole if world == 1 else tuple(t[rank::world] for t in whole)
            before = [p.detach().clone() for p in layers.values()] if layers else []
            optimizer.zero_grad(set_to_none=True)
            loss = problem.loss(batch)
            if world > 1:  # weight by this rank's share, so the ranks' average is the whole batch's mean
                loss = loss * (len(batch[0]) * world / len(whole[0]))
            if not torch.isfinite(loss):
                result.diverged, result.diverged_reason = True, f"non-finite loss at step {step + 1}"
                break
            loss.backward()
            try:
                optimizer.step()
            except NonFiniteGradientError as error:
                result.diverged, result.diverged_reason = True, f"step {step + 1}: {error}"
                break
            if schedule is not None:
                schedule.step()
            if problem_after_step is not None:
                problem_after_step()
            step += 1
            inputs = batch[0] if batch is not None else None
            for event in hooks.after_step(optimizer, problem.model, inputs, step, context, loss.detach()):
                result.events.setdefault(event, []).append(step)
            if layers:
                with torch.no_grad():
                    for (name, p), b in zip(layers.items(), before):
                        sums[name] += (p - b).abs().mean().item()
            if diagnostics and task.kind == "function":
                result.trajectory.append(model.xy.detach().tolist())
        elapsed += time.perf_counter() - started
        if result.diverged:
            break
        for name in layers:
            result.update_magnitudes[name].append(sums[name] / max(1, problem.steps_per_epoch))
        _record_agr_change(kinds, result)
        if epoch != epochs and (eval_every is None or epoch % eval_every):
            continue  # not scored: the curves skip this epoch
        row = record(epoch, step, elapsed)
        if not all(math.isfinite(v) for v in row.values()):
            bad = ", ".join(key for key, value in row.items() if not math.isfinite(value))
            result.diverged, result.diverged_reason = True, f"non-finite {bad} after epoch {epoch}"
            break
        for event in hooks.after_epoch(optimizer, row, context):
            result.events.setdefault(event, []).append(step)
    result.samples = dict(getattr(problem, "samples", {}))
    result.generation = dict(getattr(problem, "generation", {}))
    return result
