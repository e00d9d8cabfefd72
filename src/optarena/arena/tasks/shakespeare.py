"""Character-level language modelling on Tiny Shakespeare with a small causal transformer.

The corpus (``tinyshakespeare.txt`` in ``settings.data_dir``, else in the shared data folder
``../shared/data``) is one stream of characters, split by position: the first 90 % train, the next
5 % validation, the last 5 % test. The vocabulary is the sorted set of the corpus's characters.

A training batch is ``batch_size`` windows of ``context + 1`` characters starting at random
positions of the training stream, drawn with the epoch's generator; an "epoch" is a fixed
``STEPS_PER_EPOCH`` steps (the stream has no natural epoch). The metric is the next-character
cross-entropy in **nats per character** (the training loss's unit; divide by ln 2 for bits per
character), minimised; it is measured on a fixed set of evenly spaced windows of each split, so an
evaluation costs a few forward passes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from optarena.arena.tasks.base import MissingDataError, Task, TaskSettings
from optarena.arena.tasks.idx import DataFileError, as_path, shared_data_dir
from optarena.arena.tasks.models import CharTransformer

FILENAME = "tinyshakespeare.txt"
CONTEXT = 64
STEPS_PER_EPOCH = 100
BATCH_SIZE = 32  # windows per step: 32 x 64 = 2,048 predicted characters, ~0.3 s on 2 CPU threads
EVAL_WINDOWS = 128  # per split: 128 x 64 = 8,192 characters scored
EVAL_BATCH = 128  # windows per evaluation forward pass (no graph: memory is small)
SPLITS = (0.9, 0.05, 0.05)


def find_corpus(data_dir: str | Path | None) -> Path:
    """The corpus file: ``data_dir`` itself if it is a file, ``data_dir/tinyshakespeare.txt``, else the shared copy."""
    candidates = []
    data_dir = as_path(data_dir)
    if data_dir is not None:
        if data_dir.is_file():
            return data_dir
        candidates += [data_dir / FILENAME, data_dir / "tinyshakespeare" / "input.txt"]
    candidates.append(shared_data_dir() / FILENAME)
    for path in candidates:
        if path.is_file():
            return path
    raise MissingDataError(
        f"Tiny Shakespeare not found; looked for: {'; '.join(map(str, candidates))}. To get it: download "
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt, save it as "
        f"{FILENAME} in a folder and pass that folder as data_dir (TaskSettings.data_dir)."
    )


def load_corpus(path: Path, context: int = CONTEXT) -> tuple[str, dict[str, Tensor]]:
    """The vocabulary (sorted characters) and the int64 token streams of the train/val/test splits."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataFileError(f"{path}: not UTF-8 text ({error})") from error
    vocab = "".join(sorted(set(text)))
    lookup = {c: i for i, c in enumerate(vocab)}
    tokens = torch.tensor([lookup[c] for c in text], dtype=torch.int64)
    n_train = int(SPLITS[0] * len(tokens))
    n_val = int(SPLITS[1] * len(tokens))
    streams = {
        "train": tokens[:n_train],
        "val": tokens[n_train : n_train + n_val],
        "test": tokens[n_train + n_val :],
    }
    for split, stream in streams.items():
        if len(stream) < context + 1:
            raise DataFileError(
                f"{path}: {len(text)} characters leave the {split} split {len(stream)} characters, fewer than a "
                f"window of {context + 1}; the corpus needs at least {math.ceil((context + 1) / SPLITS[2])}"
            )
    return vocab, streams


class CharLanguageModel:
    """Next-character prediction on token streams; the metric is the cross-entropy in nats per character."""

    def __init__(
        self,
        model: CharTransformer,
        streams: dict[str, Tensor],
        *,
        batch_size: int,
        seed: int,
        device: str,
        context: int = CONTEXT,
        steps_per_epoch: int = STEPS_PER_EPOCH,
        eval_windows: int = EVAL_WINDOWS,
    ) -> None:
        self.model = model.to(device)
        self.streams = {k: v.to(device) for k, v in streams.items()}
        self.batch_size = batch_size
        self.seed = seed
        self.context = context
        self.steps_per_epoch = steps_per_epoch
        self.offsets = torch.arange(context + 1, device=device)
        # Evenly spaced windows over each split, fixed for the whole run: every evaluation scores the same text.
        self.eval_starts = {
            split: torch.linspace(0, len(stream) - context - 1, eval_windows).long().unique().to(device)
            for split, stream in self.streams.items()
        }

    def _windows(self, split: str, starts: Tensor) -> tuple[Tensor, Tensor]:
        chunk = self.streams[split][starts[:, None] + self.offsets]  # (batch, context + 1)
        return chunk[:, :-1], chunk[:, 1:]

    def batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        high = len(self.streams["train"]) - self.context  # start positions 0 .. len - context - 1
        for _ in range(self.steps_per_epoch):
            starts = torch.randint(0, high, (self.batch_size,), generator=g).to(self.offsets.device)
            yield self._windows("train", starts)

    def loss(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        logits = self.model(x)
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    @torch.no_grad()
    def _split_loss(self, split: str) -> float:
        was_training = self.model.training
        self.model.eval()
        starts = self.eval_starts[split]
        total, count = 0.0, 0
        for i in range(0, len(starts), EVAL_BATCH):
            x, y = self._windows(split, starts[i : i + EVAL_BATCH])
            logits = self.model(x)
            total += nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")
            count += y.numel()
        self.model.train(was_training)
        return float(total) / count

    def evaluate(self, *, test: bool = True) -> dict[str, float]:
        train = self._split_loss("train")
        row = {"train_loss": train, "train_metric": train, "val_metric": self._split_loss("val")}
        if test:
            row["test_metric"] = row["test_loss"] = self._split_loss("test")
        return row


def build(settings: TaskSettings) -> CharLanguageModel:
    """The ``shakespeare_char`` problem.

    ``subset`` keeps the first ``subset`` window starts of the training stream, and an epoch then has at
    most ``subset // batch_size`` steps (one pass's worth of windows), as a subset shortens the image tasks.
    """
    vocab, streams = load_corpus(find_corpus(settings.data_dir))
    batch_size = settings.batch_size or BATCH_SIZE
    steps = STEPS_PER_EPOCH
    if settings.subset is not None:
        streams["train"] = streams["train"][: max(settings.subset, 1) + CONTEXT]
        steps = max(1, min(STEPS_PER_EPOCH, settings.subset // batch_size))
    torch.manual_seed(settings.seed)
    model = CharTransformer(len(vocab), context=CONTEXT, dim=128, layers=4, heads=4)
    return CharLanguageModel(
        model,
        streams,
        batch_size=batch_size,
        steps_per_epoch=steps,
        seed=settings.seed,
        device=settings.device,
        eval_windows=min(EVAL_WINDOWS, settings.eval_subset or EVAL_WINDOWS),
    )


def check(settings: TaskSettings) -> None:
    """Find the corpus (reads nothing): the error ``build`` would raise if it is missing."""
    find_corpus(settings.data_dir)


TASKS = [
    Task(
        "shakespeare_char",
        f"Tiny Shakespeare, next character (90/5/5 by position), 4-layer causal transformer (dim 128, context "
        f"{CONTEXT}, 0.82M params); epoch = {STEPS_PER_EPOCH} steps of {BATCH_SIZE} windows; metric: nats/char",
        build,
        metric="nats_per_char",
        mode="min",
        target=1.65,
        epochs=30,
        kind="language",
        needs=f"{FILENAME} in data_dir or ../shared/data (karpathy/char-rnn's tinyshakespeare/input.txt)",
        tags=("text", "transformer"),
        check=check,
    ),
]
