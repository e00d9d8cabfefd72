"""Lightning: a callback that calls an optimizer's loop hooks, and a ``configure_optimizers`` recipe.

``pip install "optarena[lightning]"``. ::

    from optarena.integrations import lightning as optarena_lightning

    class Model(lightning.LightningModule):
        def training_step(self, batch, batch_idx):
            ...
            self.log("train_acc", accuracy, on_step=False, on_epoch=True)   # if the hooks should watch it
            return loss

        def configure_optimizers(self):
            return optarena_lightning.configure_optimizers(self, "adaburst", lr=1e-3, schedule="sgdr")

    trainer = lightning.Trainer(max_epochs=10, callbacks=[optarena_lightning.OptarenaCallback(metric="train_acc")])

The recipe builds the optimizer with what its hooks ask of the loop — Adaburst's ``total_steps`` is
``trainer.estimated_stepping_batches`` — and an optarena schedule stepped every optimizer step. The callback
calls the hooks: after every optimizer step with the step's training loss (what ``training_step`` returned;
with gradient accumulation, the mean over the step's batches) and at the end of every training epoch with the
metric (by default the epoch's mean training loss). Everything the trigger and the clock know is in the
optimizer's and the scheduler's state_dicts, which Lightning checkpoints; the callback's own few numbers are
in its ``state_dict``, which Lightning checkpoints too, so ``trainer.fit(..., ckpt_path=...)`` resumes exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl
from torch import Tensor

from optarena.integrations.loop import (
    HookDriver,
    LoopSettings,
    build_optimizers,
    loss_value,
    needs_callback,
    record_events,
)
from optarena.optim.hooks import LoopContext


def first_tensor(batch: Any) -> Any:
    """The batch's inputs, as the hooks get them: a tensor, or the first element of a tuple or list."""
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0]
    return batch


class OptarenaCallback(pl.Callback):
    """Calls the loop hooks of every optimizer of the ``LightningModule`` (see the module docstring).

    Args:
        metric: the logged metric the hooks watch at the end of every training epoch (log it with
            ``on_epoch=True``), e.g. ``'train_acc'`` for Adaburst's ``burst_trigger='metric_plateau'``;
            None (default): the epoch's mean training loss.
        mode: the direction in which ``metric`` improves, ``'max'`` (default) or ``'min'``.
        batch_size: the number of terms the loss averages (SophiaG's ``bs``); default: the train loader's.
        classification: the module's ``forward(inputs)`` returns class logits (SophiaG's Hessian refresh).
        inputs: picks the inputs out of a batch for the hooks (default: :func:`first_tensor`).
    """

    def __init__(
        self,
        metric: str | None = None,
        mode: str | None = None,
        *,
        batch_size: int | None = None,
        classification: bool = False,
        inputs: Callable[[Any], Any] = first_tensor,
    ) -> None:
        self.settings = LoopSettings(metric, mode, batch_size, classification)
        self.inputs = inputs
        self.events: dict[str, list[int]] = {}  # event name ('burst') -> the global steps it followed
        self._drivers: list[HookDriver] = []
        self._saved: dict[str, Any] | None = None

    def loop_context(self, trainer: pl.Trainer) -> LoopContext:
        """What the trainer knows about the run: its length in optimizer steps, steps per epoch, batch size."""
        total = trainer.estimated_stepping_batches  # sets up the train loader, as configure_optimizers may
        batches = trainer.num_training_batches
        accumulate = max(1, trainer.accumulate_grad_batches)
        per_epoch = math.ceil(batches / accumulate) if math.isfinite(batches) else 1
        loader = trainer.train_dataloader
        return self.settings.context(
            total_steps=int(total) if math.isfinite(total) else None,
            steps_per_epoch=per_epoch,
            batch_size=getattr(loader, "batch_size", None),
        )

    # -- Lightning's callback points ----------------------------------------------------------------------------

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        context = self.loop_context(trainer)
        self._drivers = [HookDriver(optimizer, context) for optimizer in trainer.optimizers]
        if self._saved is not None:
            for driver, state in zip(self._drivers, self._saved["drivers"]):
                driver.load_state_dict(state)
            self._saved = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = loss_value(outputs)
        if loss is not None and pl_module.automatic_optimization:
            loss *= trainer.accumulate_grad_batches  # Lightning returns the loss divided for accumulation
        inputs = self.inputs(batch)
        for driver in self._drivers:
            driver.add_loss(loss)
            record_events(self.events, driver.after_batch(pl_module, inputs, trainer.global_step), trainer.global_step)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        schedulers = [config.scheduler for config in trainer.lr_scheduler_configs]
        for driver in self._drivers:
            metric = self._epoch_metric(trainer, driver)
            record_events(self.events, driver.after_epoch(metric, schedulers), trainer.global_step)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for driver in self._drivers:
            driver.close()

    def _epoch_metric(self, trainer: pl.Trainer, driver: HookDriver) -> float:
        name = self.settings.metric
        if name is None:
            return driver.epoch_mean_loss()
        logged: Mapping[str, Any] = trainer.callback_metrics
        if name not in logged:
            raise ValueError(
                f"Invalid metric: {name!r} was not logged this epoch (log it in training_step with on_epoch=True); "
                f"logged: {', '.join(sorted(logged)) or 'nothing'}"
            )
        value = logged[name]
        return float(value.detach()) if isinstance(value, Tensor) else float(value)

    # -- checkpoints ----------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "events": {k: list(v) for k, v in self.events.items()},
            "drivers": [d.state_dict() for d in self._drivers],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.events = {k: list(v) for k, v in state_dict["events"].items()}
        self._saved = state_dict  # the drivers are built when training starts, after the checkpoint is read


def configure_optimizers(
    module: pl.LightningModule,
    name: str,
    *,
    schedule: str | None = None,
    schedule_options: Mapping[str, Any] | None = None,
    **hyperparameters: Any,
) -> dict[str, Any]:
    """What ``LightningModule.configure_optimizers`` returns: the registered optimizer ``name`` over the module's
    parameters, built with what its hooks ask of the loop, and an optarena schedule stepped every optimizer step.

    Args:
        module: the module (attached to a trainer: call this from its ``configure_optimizers``).
        name: a registry name (``optarena.list_optimizers()``).
        schedule: ``'sgdr'``, ``'adamnx'``, ``'lr_burst'`` or None (see :data:`optarena.integrations.loop.SCHEDULES`).
        schedule_options: the schedule's keywords (e.g. ``{"T_0": 2}`` for SGDR, in epochs).
        hyperparameters: the optimizer's keywords; they win over what the hooks supply.

    Raises:
        ValueError: the optimizer declares loop hooks (or the schedule is ``'lr_burst'``) and the trainer has no
            :class:`OptarenaCallback` to call them.
    """
    trainer = module.trainer
    callbacks = [c for c in trainer.callbacks if isinstance(c, OptarenaCallback)]
    settings = callbacks[0] if callbacks else OptarenaCallback()
    optimizer, scheduler = build_optimizers(
        module, name, settings.loop_context(trainer), schedule=schedule, schedule_options=schedule_options,
        **hyperparameters,
    )  # fmt: skip
    if not callbacks and needs_callback(optimizer, scheduler):
        raise ValueError(
            f"Invalid trainer: {name} (or schedule {schedule!r}) needs the training loop's help, and no "
            "OptarenaCallback is among the trainer's callbacks: Trainer(callbacks=[OptarenaCallback(...)])"
        )
    if scheduler is None:
        return {"optimizer": optimizer}
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}
