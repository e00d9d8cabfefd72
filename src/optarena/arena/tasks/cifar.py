"""CIFAR-10 (ResNet-20, ResNet-18, ViT-tiny) and CIFAR-100 (ResNet-20), 32x32 RGB.

The files are found and read by :mod:`optarena.arena.tasks.cifar_files`. The 50,000 training
images are split 45,000 train / 5,000 validation (fixed); the 10,000 test
images are the test set. Images stay uint8 on the device; the model's first layer standardises
them with the per-channel mean/std of the training split. Training batches get the standard
augmentation (random crop of the 4-pixel zero-padded image, random horizontal flip), done on the
batch tensor with the epoch's generator. The epoch's train loss and accuracy are measured on a
fixed 10,000-image part of the training split: the whole of it would cost a third of an epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optarena.arena.tasks.base import InMemoryClassification, Task, TaskSettings, split_train_val, take_subset
from optarena.arena.tasks.cifar_files import (
    CIFAR_URL,
    JPEG_TARBALL,
    Arrays,
    find_cifar10,
    find_cifar100,
    load_cifar10,
    load_cifar100,
)
from optarena.arena.tasks.models import ResNet18, resnet20, standardized, vit_tiny

VAL_FRACTION = 0.1  # 5,000 of the 50,000 training images
TRAIN_EVAL_EXAMPLES = 10_000


def channel_stats(x: Tensor, chunk: int = 5000) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images ``(n, c, h, w)`` in pixel / 255 units (chunked: no big float copy)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for i in range(0, len(x), chunk):
        part = x[i : i + chunk].double()
        total += part.sum(dim=(0, 2, 3))
        squares += part.square().sum(dim=(0, 2, 3))
    count = x.numel() / x.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-12).sqrt()
    return (mean / 255).tolist(), (std / 255).tolist()


def random_crop_flip(x: Tensor, generator: torch.Generator, padding: int = 4) -> Tensor:
    """The standard CIFAR augmentation on a batch ``(n, c, h, w)``: a random ``h x w`` crop of the image
    zero-padded by ``padding`` pixels, then a horizontal flip with probability ½.

    The randomness comes from ``generator`` (a CPU generator), so batches are reproducible on any device.
    """
    n, c, h, w = x.shape
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = dy[:, None] + torch.arange(h, device=x.device)
    cols = dx[:, None] + torch.arange(w, device=x.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # flipping the crop = reading its columns backwards
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


class ImageClassification(InMemoryClassification):
    """:class:`InMemoryClassification` whose train loss/accuracy are measured on a fixed part of the training split."""

    def __init__(self, *args: Any, train_eval_examples: int = TRAIN_EVAL_EXAMPLES, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        x, y = self.splits["train"]
        self.splits["train_eval"] = (x[:train_eval_examples], y[:train_eval_examples])  # views, no copy

    def evaluate(self, *, test: bool = True) -> dict[str, float]:
        return self._scores("train_eval", test=test)


def cifar_splits(arrays: Arrays, subset: int | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """uint8 tensors split 45k/5k/10k (for 50k training images) into train/val/test.

    Every split comes in a fixed random order (the JPEG sources list the test images class by class), so
    that a prefix — a training ``subset`` or an ``eval_subset`` — holds every class in proportion.
    """
    x_train, y_train, x_test, y_test = (torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
    train, val = split_train_val(x_train, y_train, val_fraction=VAL_FRACTION)
    order = torch.randperm(len(y_test), generator=torch.Generator().manual_seed(0))
    return {"train": take_subset(*train, subset), "val": val, "test": (x_test[order], y_test[order])}


def _build(dataset: str, make_model: Callable[[int], nn.Module]) -> Callable[[TaskSettings], ImageClassification]:
    def build(settings: TaskSettings) -> ImageClassification:
        if dataset == "cifar10":
            arrays, classes = load_cifar10(settings.data_dir), 10
        else:
            arrays, classes = load_cifar100(settings.data_dir), 100
        splits = cifar_splits(arrays, None)
        mean, std = channel_stats(splits["train"][0])  # of the whole training split, whatever the subset
        splits["train"] = take_subset(*splits["train"], settings.subset)
        torch.manual_seed(settings.seed)
        model = standardized(make_model(classes), mean, std)
        return ImageClassification(
            model,
            splits,
            batch_size=settings.batch_size or 128,
            seed=settings.seed,
            device=settings.device,
            eval_batch_size=500,
            augment=random_crop_flip,
            eval_subset=settings.eval_subset,
        )

    return build


def _check(dataset: str) -> Callable[[TaskSettings], None]:
    def check(settings: TaskSettings) -> None:
        (find_cifar10 if dataset == "cifar10" else find_cifar100)(settings.data_dir)

    return check


_CIFAR10_NEEDS = (
    f"CIFAR-10: the python-version pickles from {CIFAR_URL} in data_dir, or {JPEG_TARBALL} in ../shared/data"
)
_CIFAR100_NEEDS = f"CIFAR-100: the python-version pickles (cifar-100-python) from {CIFAR_URL} in data_dir"

TASKS = [
    Task(
        "cifar10_resnet20",
        "CIFAR-10 (45k/5k/10k, crop+flip), ResNet-20 (0.27M params, option-A shortcuts)",
        _build("cifar10", resnet20),
        metric="accuracy",
        mode="max",
        target=0.85,
        epochs=30,
        needs=_CIFAR10_NEEDS,
        check=_check("cifar10"),
        tags=("image", "resnet"),
    ),
    Task(
        "cifar10_resnet18",
        "CIFAR-10 (45k/5k/10k, crop+flip), ResNet-18 CIFAR variant (11.2M params); a GPU task",
        _build("cifar10", lambda classes: ResNet18(classes)),
        metric="accuracy",
        mode="max",
        target=0.90,
        epochs=30,
        needs=_CIFAR10_NEEDS,
        check=_check("cifar10"),
        tags=("image", "resnet", "gpu"),
    ),
    Task(
        "cifar10_vit_tiny",
        "CIFAR-10 (45k/5k/10k, crop+flip), ViT-tiny (patch 4, dim 192, depth 12, 3 heads; 5.4M params); a GPU task",
        _build("cifar10", lambda classes: vit_tiny(classes)),
        metric="accuracy",
        mode="max",
        target=0.70,
        epochs=30,
        needs=_CIFAR10_NEEDS,
        check=_check("cifar10"),
        tags=("image", "transformer", "gpu"),
    ),
    Task(
        "cifar100_resnet20",
        "CIFAR-100 (45k/5k/10k, crop+flip, fine labels), ResNet-20 (0.28M params)",
        _build("cifar100", resnet20),
        metric="accuracy",
        mode="max",
        target=0.55,
        epochs=30,
        needs=_CIFAR100_NEEDS,
        check=_check("cifar100"),
        tags=("image", "resnet"),
    ),
]
