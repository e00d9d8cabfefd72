"""The Hugging Face Trainer: a callback that calls an optimizer's loop hooks, and a recipe for ``optimizers=``.

``pip install "optarena[hf]"``. ::

    from optarena.integrations import hf as optarena_hf

    callback = optarena_hf.OptarenaTrainerCallback()
    optimizers = optarena_hf.create_optimizers(model, "adaburst", args, train_dataset, callback=callback,
                                               lr=1e-3, schedule="sgdr")
    trainer = Trainer(model=model, args=args, train_dataset=train_dataset, optimizers=optimizers,
                      callbacks=[callback])

The recipe builds the optimizer before the Trainer exists, so it computes the run's length as the Trainer will
(``max_steps``, or the epochs times the optimizer steps per epoch); the callback checks it against the Trainer's
``state.max_steps`` when training starts. The callback calls the hooks after every optimizer step with the
step's loss — the mean of its micro-batches' ``outputs.loss``, which a forward hook on the model collects
(models that take ``num_items_in_batch`` scale it by the step's item count: the trigger is scale-free) — and
once per epoch with the metric: by default the epoch's mean training loss at ``on_epoch_end``; with
``metric='eval_accuracy'`` (any key of the evaluation's metrics) at every evaluation, so use
``eval_strategy='epoch'`` for once per epoch. The Trainer saves the optimizer's and the scheduler's state_dicts
(burst clock and trigger included) in every checkpoint, and the callback's own few numbers in
``trainer_state.json``; ``trainer.train(resume_from_checkpoint=...)`` resumes exactly.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

from accelerate.optimizer import AcceleratedOptimizer
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState

from optarena.integrations.loop import HookDriver, LoopSettings, build_optimizers, loss_value, record_events
from optarena.optim.hooks import LoopContext

NOT_INPUTS = ("labels", "num_items_in_batch")  # keywords of a training forward that are not the model's inputs


class _Logits(nn.Module):
    """``model(**inputs).logits`` as a module of the inputs: what SophiaG's Hessian refresh calls."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        return self.model(**inputs).logits


class OptarenaTrainerCallback(TrainerCallback, ExportableState):
    """Calls the loop hooks of the Trainer's optimizer (see the module docstring).

    Args:
        metric: a key of the evaluation's metrics (``'eval_accuracy'``) the hooks watch after each evaluation;
            None (default): the epoch's mean training loss, at the end of each epoch.
        mode: the direction in which ``metric`` improves, ``'max'`` (default) or ``'min'``.
        batch_size: the number of terms the loss averages (SophiaG's ``bs``; tokens for a language model);
            default: ``per_device_train_batch_size``.
        classification: the model's ``logits`` are class scores (SophiaG samples labels from them).
    """

    def __init__(
        self,
        metric: str | None = None,
        mode: str | None = None,
        batch_size: int | None = None,
        classification: bool = False,
    ) -> None:
        self.settings = LoopSettings(metric, mode, batch_size, classification)
        self.events: dict[str, list[int]] = {}  # event name ('burst') -> the global steps it followed
        self.loop_state: dict[str, Any] | None = None  # the driver's, as the last checkpoint saved it
        self.built_for: LoopContext | None = None  # set by create_optimizers
        self._driver: HookDriver | None = None
        self._model: nn.Module | None = None
        self._inputs: dict[str, Tensor] = {}
        self._calling = False  # inside a hook: its own forward passes are not training batches
        self._handle: Any = None
        self._warned = False

    def context(self, args: TrainingArguments, *, total_steps: int, steps_per_epoch: int) -> LoopContext:
        return self.settings.context(
            total_steps=total_steps, steps_per_epoch=steps_per_epoch, batch_size=args.per_device_train_batch_size
        )

    def state(self) -> dict[str, Any]:
        """What the Trainer writes to ``trainer_state.json`` with every checkpoint."""
        s = self.settings
        return {
            "args": {
                "metric": s.metric,
                "mode": s.mode,
                "batch_size": s.batch_size,
                "classification": s.classification,
            },
            "attributes": {
                "events": self.events,
                "loop_state": self._driver.state_dict() if self._driver is not None else self.loop_state,
            },
        }

    # -- the Trainer's callback points ---------------------------------------------------------------------------

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        optimizer, model, loader = kwargs["optimizer"], kwargs["model"], kwargs["train_dataloader"]
        while isinstance(optimizer, AcceleratedOptimizer):
            optimizer = optimizer.optimizer
        accumulate = args.gradient_accumulation_steps
        per_epoch = len(loader) // accumulate + int(len(loader) % accumulate > 0) if loader is not None else 1
        context = self.context(args, total_steps=state.max_steps, steps_per_epoch=per_epoch)
        if self.built_for is not None and self.built_for.total_steps != state.max_steps:
            raise ValueError(
                f"Invalid optimizer: it was built for a run of {self.built_for.total_steps} steps and the Trainer runs "
                f"{state.max_steps}: build it with create_optimizers from the same TrainingArguments and train_dataset"
            )
        saved = state.stateful_callbacks.get(type(self).__name__)
        if isinstance(saved, Mapping) and state.global_step > 0:  # resumed: what the checkpoint saved
            self.events = {k: list(v) for k, v in saved["attributes"]["events"].items()}
            self.loop_state = saved["attributes"]["loop_state"]
        self._driver = HookDriver(optimizer, context)
        if self.loop_state is not None and state.global_step > 0:
            self._driver.load_state_dict(self.loop_state)
        self._model = _Logits(model)
        self._handle = model.register_forward_hook(self._forward, with_kwargs=True)

    def _forward(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if not module.training or self._calling or self._driver is None:
            return
        loss = loss_value(output)
        if loss is None and not self._warned:
            warnings.warn("the model's outputs hold no loss: the optimizer's hooks get none", stacklevel=2)
            self._warned = True
        self._driver.add_loss(loss)
        self._inputs = {k: v for k, v in kwargs.items() if k not in NOT_INPUTS and isinstance(v, Tensor)}

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self._driver is None:
            return
        self._calling = True
        try:
            events = self._driver.after_batch(self._model, self._inputs, state.global_step)  # type: ignore[arg-type]
        finally:
            self._calling = False
        record_events(self.events, events, state.global_step)

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._driver is not None and self.settings.metric is None:
            self._after_epoch(self._driver.epoch_mean_loss(), state, kwargs.get("lr_scheduler"))

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        name = self.settings.metric
        if self._driver is None or name is None:
            return
        metrics = kwargs.get("metrics") or {}
        if name not in metrics:
            raise ValueError(
                f"Invalid metric: {name!r} is not among the evaluation's metrics: {', '.join(sorted(metrics))}"
            )
        self._after_epoch(float(metrics[name]), state, kwargs.get("lr_scheduler"))

    def _after_epoch(self, metric: float, state: TrainerState, scheduler: Any) -> None:
        assert self._driver is not None
        record_events(self.events, self._driver.after_epoch(metric, [scheduler]), state.global_step)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._driver is not None:
            self.loop_state = self._driver.state_dict()
            self._driver.close()
            self._driver = None
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def run_length(args: TrainingArguments, train_dataset: Any) -> tuple[int, int]:
    """(optimizer steps in the run, optimizer steps per epoch), as the Trainer counts them for one process."""
    examples = len(train_dataset)
    batches = (
        examples // args.train_batch_size if args.dataloader_drop_last else math.ceil(examples / args.train_batch_size)
    )
    batches = math.ceil(batches / max(1, args.world_size))  # the shards of a distributed run
    accumulate = args.gradient_accumulation_steps
    per_epoch = max(batches // accumulate + int(batches % accumulate > 0), 1)
    total = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * per_epoch)
    return total, per_epoch


def create_optimizers(
    model: nn.Module,
    name: str,
    args: TrainingArguments,
    train_dataset: Any,
    *,
    callback: OptarenaTrainerCallback,
    schedule: str | None = None,
    schedule_options: Mapping[str, Any] | None = None,
    **hyperparameters: Any,
) -> tuple[Optimizer, LRScheduler | None]:
    """``Trainer(optimizers=...)``: the registered optimizer ``name`` built with what its hooks ask of the loop over
    the run ``args`` and ``train_dataset`` make, and an optarena schedule stepped every optimizer step.

    Args:
        model: the model the Trainer trains.
        name: a registry name (``optarena.list_optimizers()``).
        args: the Trainer's arguments; train_dataset: its training set (the run's length is computed from both).
        callback: the callback that will be among the Trainer's callbacks (its metric direction and batch size
            enter the optimizer's options, and it checks the run's length when training starts).
        schedule: ``'sgdr'``, ``'adamnx'``, ``'lr_burst'``, or None: the Trainer then builds its own
            (``args.lr_scheduler_type``).
        schedule_options: the schedule's keywords; hyperparameters: the optimizer's (they win over the hooks').
    """
    total, per_epoch = run_length(args, train_dataset)
    context = callback.context(args, total_steps=total, steps_per_epoch=per_epoch)
    callback.built_for = context
    return build_optimizers(
        model, name, context, schedule=schedule, schedule_options=schedule_options, **hyperparameters
    )
