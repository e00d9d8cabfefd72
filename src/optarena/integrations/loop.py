"""What a training framework's callback does for an optarena optimizer, written once for every framework.

A framework steps the optimizer itself; it does not call the loop hooks an optimizer declares
(:mod:`optarena.optim.hooks`). A callback builds a :class:`~optarena.optim.hooks.LoopContext` from what the
framework knows (:class:`LoopSettings` holds what only the user knows: which metric, in which direction),
builds the optimizer with the hooks' options and an optarena schedule (:func:`build_optimizers`), and hands
each optimizer to a :class:`HookDriver`, which it tells when a batch and an epoch end. Nothing here imports a
framework; :mod:`optarena.integrations.lightning` and :mod:`optarena.integrations.hf` are the adapters.

The hooks get the loss as the arena's runner gives it: after ``optimizer.step()``, the mean of the step's
micro-batch losses. A framework that passes a closure to ``step`` (Lightning's automatic optimization) would
also hand the optimizer the closure's loss, and Adaburst would feed its trigger twice; so for an optimizer that
declares hooks the driver passes ``step`` a closure that runs the framework's and returns None.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from optarena.optim import create_optimizer, get_optimizer_info
from optarena.optim.hooks import NO_HOOKS, LoopContext, hooks_of
from optarena.schedules import SGDR, AdamNXLR, LRBurst

SCHEDULES = ("sgdr", "adamnx", "lr_burst")
"""The optarena schedules the recipes build, each stepped once per optimizer step: ``'sgdr'`` (``T_0`` in epochs,
default 1; ``T_mult`` default 2, as the arena's), ``'adamnx'`` (the AdamNX authors' decay over the run) and
``'lr_burst'`` (a cosine over the run restarted when the epoch metric plateaus; the callbacks feed it)."""
EPOCH_LOSS = "the epoch's mean training loss"


@dataclass(frozen=True)
class LoopSettings:
    """What the user tells a callback: the epoch metric the hooks watch, its direction, the loss's batch size.

    ``metric=None`` (default) watches the epoch's mean training loss, falling; a metric the framework logs
    (``'train_acc'``, the Adaburst paper's) improves in ``mode`` (default ``'max'``). ``classification`` says the
    model outputs class logits, so SophiaG may sample labels from them to refresh its Hessian estimate.
    """

    metric: str | None = None
    mode: str | None = None
    batch_size: int | None = None
    classification: bool = False

    def __post_init__(self) -> None:
        if self.metric is not None and (not isinstance(self.metric, str) or not self.metric):
            raise ValueError(f"Invalid metric: {self.metric!r}; expected the name of a logged metric, or None")
        if self.mode is not None and self.mode not in ("min", "max"):
            raise ValueError(f"Invalid mode: {self.mode!r}; expected 'min' or 'max'")
        if self.metric is None and self.mode == "max":
            raise ValueError("Invalid mode: 'max'; with metric=None the hooks watch the training loss, which falls")
        if self.batch_size is not None and (
            isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1
        ):
            raise ValueError(f"Invalid batch_size: {self.batch_size!r}; expected None or an integer >= 1")
        if not isinstance(self.classification, bool):
            raise ValueError(f"Invalid classification: {self.classification!r}; expected True or False")

    @property
    def metric_mode(self) -> str:
        return "min" if self.metric is None else (self.mode or "max")

    @property
    def metric_name(self) -> str:
        return self.metric if self.metric is not None else EPOCH_LOSS

    def context(self, *, total_steps: int | None, steps_per_epoch: int, batch_size: int | None) -> LoopContext:
        """The loop context, from what the framework knows (the user's ``batch_size`` wins over its)."""
        return LoopContext(
            metric_mode=self.metric_mode,
            batch_size=self.batch_size or batch_size,
            classification=self.classification,
            steps_per_epoch=max(1, steps_per_epoch),
            total_steps=total_steps,
        )


def build_schedule(
    optimizer: Optimizer, schedule: str | None, context: LoopContext, **options: Any
) -> LRScheduler | None:
    """The optarena schedule ``schedule`` (one of :data:`SCHEDULES`, or None) over the run ``context`` describes."""
    if schedule is None:
        if options:
            raise ValueError(f"Invalid schedule_options: {sorted(options)} given without a schedule")
        return None
    if schedule not in SCHEDULES:
        raise ValueError(f"Invalid schedule: {schedule!r}; expected one of {', '.join(SCHEDULES)} (or None)")
    if schedule == "sgdr":
        sgdr = {"T_0": 1.0, "T_mult": 2.0, **options}
        return SGDR(optimizer, **sgdr, steps_per_epoch=context.steps_per_epoch)
    if context.total_steps is None:
        raise ValueError(f"Invalid schedule: {schedule!r} spans the run, whose length the framework does not know")
    if schedule == "adamnx":
        return AdamNXLR(optimizer, context.total_steps, **options)
    return LRBurst(optimizer, context.total_steps, **{"mode": context.metric_mode, **options})


def build_optimizers(
    model: nn.Module | Iterable[Any],
    name: str,
    context: LoopContext,
    *,
    schedule: str | None = None,
    schedule_options: Mapping[str, Any] | None = None,
    **hyperparameters: Any,
) -> tuple[Optimizer, LRScheduler | None]:
    """The registered optimizer ``name`` built with what its hooks ask of the loop (the run's length, the
    metric's direction, the batch size; ``hyperparameters`` win), and the schedule ``schedule``."""
    hooks = get_optimizer_info(name).hooks
    optimizer = create_optimizer(model, name, **{**hooks.options(context), **hyperparameters})
    return optimizer, build_schedule(optimizer, schedule, context, **dict(schedule_options or {}))


def needs_callback(optimizer: Optimizer, scheduler: LRScheduler | None) -> bool:
    """True when the optimizer declares loop hooks or the schedule wants the epoch metric."""
    return hooks_of(optimizer) is not NO_HOOKS or isinstance(scheduler, LRBurst)


def loss_value(output: Any) -> float | None:
    """The training loss in what a step returned (a tensor, or a mapping or model output with ``loss``)."""
    loss = output
    if isinstance(output, Mapping) or hasattr(output, "keys"):
        loss = output.get("loss") if hasattr(output, "get") else None
    if isinstance(loss, Tensor) and loss.numel() == 1:
        return float(loss.detach())
    if isinstance(loss, (int, float)) and not isinstance(loss, bool):
        return float(loss)
    return None


class HookDriver:
    """Calls one optimizer's loop hooks from a framework's callback points, and keeps what they need between them.

    It counts the optimizer's steps with a step post-hook (``register_step_post_hook``), so a batch that only
    accumulated gradients, or a step a gradient scaler skipped, calls nothing; a step pre-hook keeps a closure's
    loss from the optimizer (see the module docstring). Between two steps it collects the micro-batches' losses
    (:meth:`add_loss`); :meth:`after_batch` calls ``after_step`` once per step with their mean, and
    :meth:`after_epoch` calls ``after_epoch`` and feeds an :class:`~optarena.schedules.LRBurst`. Its state
    (:meth:`state_dict`) is what a callback saves in the framework's checkpoint.
    """

    def __init__(self, optimizer: Optimizer, context: LoopContext) -> None:
        self.optimizer = optimizer
        self.context = context
        self.hooks = hooks_of(optimizer)
        self.steps = 0  # optimizer steps since the last after_batch
        self.step_losses: list[float] = []  # the micro-batches' losses since the last step
        self.epoch_loss = [0.0, 0]  # sum and count of this epoch's batch losses
        self._handles = [optimizer.register_step_post_hook(self._stepped)]
        if self.hooks is not NO_HOOKS:
            self._handles.append(optimizer.register_step_pre_hook(_closure_without_loss))

    def _stepped(self, optimizer: Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.steps += 1

    def add_loss(self, loss: float | None) -> None:
        """One micro-batch's training loss (None: the step returned none; a non-finite one is not fed on)."""
        if loss is not None and math.isfinite(loss):
            self.step_losses.append(loss)
            self.epoch_loss[0] += loss
            self.epoch_loss[1] += 1

    def after_batch(self, model: nn.Module, inputs: Any, step: int) -> list[str]:
        """After a batch: if the optimizer stepped, its hooks' ``after_step`` (``step`` counts from 1)."""
        if not self.steps:
            return []
        losses, self.step_losses, self.steps = self.step_losses, [], 0
        loss = torch.tensor(sum(losses) / len(losses), dtype=torch.float64) if losses else None
        return self.hooks.after_step(self.optimizer, model, inputs, step, self.context, loss)

    def epoch_mean_loss(self) -> float:
        total, count = self.epoch_loss
        if not count:
            raise ValueError("no training loss was seen this epoch: the training step returned none to watch")
        return total / count

    def after_epoch(self, metric: float, schedulers: Iterable[Any] = ()) -> list[str]:
        """At the end of an epoch (or an evaluation): ``after_epoch`` with ``metric`` as the training metric, and
        ``observe(metric)`` on each :class:`~optarena.schedules.LRBurst` in ``schedulers``."""
        if not math.isfinite(metric):
            raise ValueError(f"Invalid metric: {metric}; the hooks need a finite epoch metric")
        self.epoch_loss = [0.0, 0]
        events = self.hooks.after_epoch(self.optimizer, {"train_metric": metric}, self.context)
        for scheduler in schedulers:
            if isinstance(scheduler, LRBurst) and scheduler.optimizer is self.optimizer and scheduler.observe(metric):
                events.append("burst")
        return events

    def state_dict(self) -> dict[str, Any]:
        return {"step_losses": list(self.step_losses), "epoch_loss": list(self.epoch_loss)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step_losses = [float(v) for v in state["step_losses"]]
        self.epoch_loss = [float(state["epoch_loss"][0]), int(state["epoch_loss"][1])]

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def _closure_without_loss(
    optimizer: Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """A step pre-hook: the framework's closure still runs (forward, backward), but ``step`` gets no loss from it."""
    closure = args[1] if len(args) > 1 else kwargs.get("closure")
    if closure is None:
        return None

    def quiet() -> None:
        closure()

    if len(args) > 1:
        return (args[0], quiet, *args[2:]), kwargs
    return args, {**kwargs, "closure": quiet}


def record_events(events: dict[str, list[int]], names: Iterable[str], step: int) -> None:
    """Add each event in ``names`` at ``step`` to ``events`` (name -> steps), as the arena's runs record them."""
    for name in names:
        events.setdefault(name, []).append(step)
