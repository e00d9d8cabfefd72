"""What a task is: a data source, a model, a loss and a metric, built per seed as a Problem.

A :class:`Task` is the registry entry (name, description, metric, default target and budget);
``task.build(settings)`` returns a :class:`Problem`: the model with its data held in memory
(tensors on the run's device, as airbench does, so data loading never dominates the step).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn

Mode = Literal["max", "min"]


@dataclass(frozen=True)
class TaskSettings:
    """How to build one problem: the seed, the device, where data lives, size limits for tiny runs, the run's
    length and whether it measures what is costly (the runner sets these two), and the task's own options."""

    seed: int = 0
    device: str = "cpu"
    data_dir: Path | None = None
    subset: int | None = None  # keep at most this many training examples (tests, smoke runs)
    batch_size: int | None = None  # None: the task's default
    eval_subset: int | None = None  # score at most this many examples of each split (CPU-scale studies)
    epochs: int | None = None  # the run's epochs (None: not known)
    diagnostics: bool = False  # also measure what is costly and never tuned on (a generative task's FID)
    options: Mapping[str, Any] = field(default_factory=dict)  # the task's own options (Task.parse_options)


class Problem(Protocol):
    """One seeded instance of a task."""

    model: nn.Module
    steps_per_epoch: int

    def batches(self, epoch: int) -> Iterable[Any]:
        """The training batches of ``epoch`` (deterministic given the seed and the epoch)."""
        ...

    def loss(self, batch: Any) -> Tensor:
        """The training loss of ``batch`` under the current model (a scalar with a graph)."""
        ...

    def evaluate(self, *, test: bool = True) -> dict[str, float]:
        """``train_loss``, ``train_metric``, ``val_metric`` and ``test_metric`` of the current model (and any
        other finite measurement, in some evaluations only if it is costly: a generative task's ``fid``).

        ``test=False`` leaves the test split unscored (no ``test_*`` keys): a tuning trial reads only the
        validation metric, and the test split should not be looked at while tuning."""
        ...

    # A problem may also have ``after_step()``, which the runner calls after every optimizer step (the
    # diffusion tasks' EMA of the weights), and, if it generates images, ``samples`` (epoch -> a base64 PNG
    # grid of generated images) and ``generation`` (how they were made and scored), which the runner records.


@dataclass(frozen=True)
class Task:
    """A registered task.

    ``metric`` names what ``*_metric`` measures (e.g. ``'accuracy'``); ``mode`` says whether it is
    maximised or minimised; ``target`` is the default value for steps-to-target.
    """

    name: str
    description: str
    build: Callable[[TaskSettings], Problem]
    metric: str
    mode: Mode
    target: float
    epochs: int
    kind: Literal["function", "classification", "language", "diffusion"] = "classification"
    needs: str = ""  # what must be installed or downloaded, said when it is missing
    tags: tuple[str, ...] = field(default_factory=tuple)
    # Finds the task's data without loading it or building a model: raises MissingDataError (or a
    # DataFileError naming the file) when ``build`` would; None for tasks that need nothing.
    check: Callable[[TaskSettings], None] | None = None
    # Checks the task's own options (``TaskSettings.options``, an experiment's ``task_options``) and returns
    # them parsed, raising a ValueError that names a bad one; None for a task that takes no options.
    options: Callable[[Mapping[str, Any]], Any] | None = None
    # Other measurements the task's evaluations record on the test split, by name, and whether each is maximised or
    # minimised (a generative task's ``fid``): what a claim may compare besides ``*_metric``.
    measurements: Mapping[str, Mode] = field(default_factory=dict)

    def check_data(self, settings: TaskSettings) -> None:
        """Raise the error ``build(settings)`` would raise for missing data, cheaply (no model, no decoding)."""
        if self.check is not None:
            self.check(settings)

    def parse_options(self, options: Mapping[str, Any]) -> Any:
        """``options`` checked and parsed by the task; a ``ValueError`` naming the option if one is not valid."""
        if self.options is not None:
            return self.options(options)
        if options:
            raise ValueError(f"Invalid task_options: {self.name} takes no options, got {', '.join(map(str, options))}")
        return None

    def better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    @property
    def worst(self) -> float:
        """The value a diverged run scores."""
        return -float("inf") if self.mode == "max" else float("inf")


class MissingDataError(RuntimeError):
    """A dataset is not where it was looked for; the message says how to get it."""


class InMemoryClassification:
    """A classification problem over tensors held in memory: shuffled mini-batches, accuracy metric.

    ``splits`` maps ``'train'``, ``'val'`` and ``'test'`` to ``(inputs, labels)``.
    """

    def __init__(
        self,
        model: nn.Module,
        splits: dict[str, tuple[Tensor, Tensor]],
        *,
        batch_size: int,
        seed: int,
        device: str,
        eval_batch_size: int = 1024,
        augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
        eval_subset: int | None = None,
    ) -> None:
        self.model = model.to(device)
        self.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in splits.items()}
        self.eval_subset = eval_subset  # score the first this many of each split (the same at every evaluation)
        self.batch_size = batch_size
        self.seed = seed
        self.eval_batch_size = eval_batch_size
        self.augment = augment
        n = len(self.splits["train"][1])
        self.steps_per_epoch = max(1, n // batch_size)  # drop the ragged last batch: equal-size steps

    def batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        x, y = self.splits["train"]
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(y), generator=g).to(y.device)
        for i in range(self.steps_per_epoch):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            xb = x[idx]
            if self.augment is not None:
                xb = self.augment(xb, g)
            yield xb, y[idx]

    def loss(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.model(x), y)

    @torch.no_grad()
    def _loss_and_accuracy(self, split: str) -> tuple[float, float]:
        x, y = take_subset(*self.splits[split], self.eval_subset)
        was_training = self.model.training
        self.model.eval()
        total_loss, correct = 0.0, 0
        for i in range(0, len(y), self.eval_batch_size):
            logits = self.model(x[i : i + self.eval_batch_size])
            target = y[i : i + self.eval_batch_size]
            total_loss += nn.functional.cross_entropy(logits, target, reduction="sum").item()
            correct += (logits.argmax(1) == target).sum().item()
        self.model.train(was_training)
        return total_loss / len(y), correct / len(y)

    def evaluate(self, *, test: bool = True) -> dict[str, float]:
        return self._scores("train", test=test)

    def _scores(self, train_split: str, *, test: bool) -> dict[str, float]:
        train_loss, train_acc = self._loss_and_accuracy(train_split)
        _, val_acc = self._loss_and_accuracy("val")
        row = {"train_loss": train_loss, "train_metric": train_acc, "val_metric": val_acc}
        if test:
            test_loss, test_acc = self._loss_and_accuracy("test")
            row.update(test_metric=test_acc, test_loss=test_loss)
        return row


def split_train_val(
    x: Tensor, y: Tensor, *, val_fraction: float, seed: int = 0
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """A fixed random split of a training set into train and validation (the same for every seed)."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_val = round(val_fraction * len(y))
    return (x[order[n_val:]], y[order[n_val:]]), (x[order[:n_val]], y[order[:n_val]])


def take_subset(x: Tensor, y: Tensor, subset: int | None) -> tuple[Tensor, Tensor]:
    return (x, y) if subset is None else (x[:subset], y[:subset])
