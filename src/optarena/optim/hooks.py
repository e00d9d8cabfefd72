"""What a training loop must do for an optimizer besides ``zero_grad``, ``backward`` and ``step``.

Most optimizers need nothing more. A few need the loop's help, and say so here instead of being
recognised by the loop: Adaburst's burst trigger watches the training metric once per epoch, and
SophiaG refreshes its Hessian estimate from a batch every few steps and wants the loss's batch size.
An optimizer class declares ``loop_hooks`` (a :class:`LoopHooks`); the registry entry exposes it as
``info.hooks``, and any training loop — the arena's runner, a Lightning callback — calls it::

    hooks = get_optimizer_info(name).hooks
    optimizer = create_optimizer(model, name, **{**hooks.options(context), **user_options})
    for epoch ...:
        for batch ...:
            ...; optimizer.step(); events = hooks.after_step(optimizer, model, inputs, step, context, loss)
        events = hooks.after_epoch(optimizer, {"train_metric": ...}, context)   # e.g. ["burst"]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from torch.optim import Optimizer


@dataclass(frozen=True)
class LoopContext:
    """What the training loop knows that an optimizer's hooks may need."""

    metric_mode: str = "max"  # 'max' or 'min': the direction in which the training metric improves
    batch_size: int | None = None  # the number of terms the loss averages (examples, or tokens)
    classification: bool = False  # the model outputs class logits (labels can be sampled from them)
    steps_per_epoch: int = 1
    total_steps: int | None = None  # the run's length in optimizer steps, where the loop knows it


class LoopHooks:
    """No extra work: the default for every optimizer. Subclasses override what they need."""

    def options(self, context: LoopContext) -> dict[str, Any]:
        """Constructor keywords the loop supplies from what it knows (the user's own keywords win)."""
        return {}

    def after_step(
        self,
        optimizer: Optimizer,
        model: nn.Module,
        inputs: Tensor,
        step: int,
        context: LoopContext,
        loss: Tensor | None = None,
    ) -> list[str]:
        """Called after every ``optimizer.step()``; ``step`` counts from 1, ``inputs`` is the batch's input and
        ``loss`` the step's training loss (detached). Returns the names of the events it caused."""
        return []

    def after_epoch(self, optimizer: Optimizer, metrics: Mapping[str, float], context: LoopContext) -> list[str]:
        """Called after each epoch's evaluation with its metrics (``train_metric``, ...); returns the
        names of the events it caused (e.g. ``['burst']``), which the loop records at this step."""
        return []


NO_HOOKS = LoopHooks()


def hooks_of(optimizer: Optimizer) -> LoopHooks:
    """The hooks of an optimizer object (a wrapper's are the optimizer's inside it): what a training framework's
    callback calls when it holds the optimizer but not its registry name."""
    while not hasattr(type(optimizer), "loop_hooks") and hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer  # Lookahead, the AGR wrapper
    return getattr(type(optimizer), "loop_hooks", NO_HOOKS)
