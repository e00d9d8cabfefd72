"""Fashion-MNIST and MNIST (28x28 grey images, MNIST-format IDX files): an MLP and a small CNN.

Fashion-MNIST is read from ``settings.data_dir`` when it holds the four IDX files (in
``fashion-mnist/``, ``FashionMNIST/raw/`` as torchvision downloads them, or the folder itself),
else from Debian's ``dataset-fashion-mnist`` package. MNIST is read only from ``settings.data_dir``.
The 60,000 training images are split 55,000 train / 5,000 validation (fixed); the 10,000 test
images are the test set. Images stay uint8 in memory; the model's first layer standardises them.
The epoch's train loss and accuracy are measured on a fixed 10,000-image part of the training split
(the whole of it would cost as much as the epoch's training for the CNN on a CPU).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from optarena.arena.tasks.base import (
    MissingDataError,
    Task,
    TaskSettings,
    split_train_val,
    take_subset,
)
from optarena.arena.tasks.cifar import ImageClassification
from optarena.arena.tasks.idx import MNIST_FILES, DataFileError, as_path, find_mnist_files, load_mnist_format
from optarena.arena.tasks.models import SmallCNN, mlp, standardized

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # apt install dataset-fashion-mnist
VAL_EXAMPLES = 5000  # carved from the 60,000 training images, as the 5,000 of the CIFAR tasks

# Per-pixel mean and std of the training images (pixel / 255), standard values for each dataset.
STATS = {"fashion_mnist": ((0.2860,), (0.3530,)), "mnist": ((0.1307,), (0.3081,))}

# The first ten training labels of each dataset: files of one found under the other's name are refused, since
# both use the same file names and a data_dir holding the wrong one would otherwise train on it silently.
FIRST_TRAIN_LABELS = {"fashion_mnist": (9, 0, 0, 3, 0, 2, 7, 2, 5, 5), "mnist": (5, 0, 4, 1, 9, 2, 1, 3, 1, 4)}

# Sub-folders of data_dir looked at before data_dir itself (the names of common downloads).
SUBFOLDERS = {
    "fashion_mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw", "FashionMNIST"),
    "mnist": ("mnist", "MNIST/raw", "MNIST"),
}


def _candidate_folders(dataset: str, data_dir: str | Path | None) -> list[Path]:
    data_dir = as_path(data_dir)
    folders = [] if data_dir is None else [data_dir / sub for sub in SUBFOLDERS[dataset]] + [data_dir]
    if dataset == "fashion_mnist":
        folders.append(DEBIAN_FASHION_MNIST)
    return folders


def _file_list() -> str:
    return ", ".join(MNIST_FILES.values())


def locate_mnist_format(dataset: str, data_dir: str | Path | None) -> dict[str, Path]:
    """The four IDX files of ``dataset`` (``'fashion_mnist'`` or ``'mnist'``): the first folder that holds them."""
    folders = _candidate_folders(dataset, data_dir)
    for folder in folders:
        files = find_mnist_files(folder)
        if files is not None:
            return files
    tried = "; ".join(str(f) for f in folders) or "(no data_dir given)"
    if dataset == "mnist":
        hint = (
            "MNIST is not shipped offline: download the four files from https://yann.lecun.com/exdb/mnist/ "
            "(or a mirror) and put them in <data_dir>/mnist/ (MNIST/raw/ as torchvision stores them also works), "
            "then pass that data_dir (TaskSettings.data_dir)"
        )
    else:
        hint = (
            "install Debian's dataset-fashion-mnist (apt install dataset-fashion-mnist), or put the files from "
            "https://github.com/zalandoresearch/fashion-mnist in <data_dir>/fashion-mnist/ and pass that data_dir"
        )
    raise MissingDataError(
        f"{dataset} needs the MNIST-format files {_file_list()} (each optionally .gz); looked in: {tried}. To get "
        f"them: {hint}."
    )


def load_mnist_format_splits(
    dataset: str, data_dir: str | Path | None, subset: int | None = None
) -> dict[str, tuple[Tensor, Tensor]]:
    """uint8 images ``(n, 1, 28, 28)`` and int64 labels, split 55k/5k/10k into train/val/test."""
    files = locate_mnist_format(dataset, data_dir)
    x_train, y_train, x_test, y_test = load_mnist_format(files)
    other = "mnist" if dataset == "fashion_mnist" else "fashion_mnist"
    if len(y_train) == 60_000 and tuple(y_train[:10].tolist()) == FIRST_TRAIN_LABELS[other]:
        raise DataFileError(f"{files['train_labels']}: these are {other}'s labels, not {dataset}'s")
    x = torch.from_numpy(x_train).unsqueeze(1)
    y = torch.from_numpy(y_train)
    train, val = split_train_val(x, y, val_fraction=VAL_EXAMPLES / 60_000)
    return {
        "train": take_subset(*train, subset),
        "val": val,
        "test": (torch.from_numpy(x_test).unsqueeze(1), torch.from_numpy(y_test)),
    }


def _model(dataset: str, kind: str) -> nn.Module:
    mean, std = STATS[dataset]
    net = mlp(28 * 28, (256, 128), 10) if kind == "mlp" else SmallCNN(1, 10, 28, width=32)
    return standardized(net, mean, std)


def _build(dataset: str, kind: str):
    def build(settings: TaskSettings) -> ImageClassification:
        splits = load_mnist_format_splits(dataset, settings.data_dir, settings.subset)
        torch.manual_seed(settings.seed)
        return ImageClassification(
            _model(dataset, kind),
            splits,
            batch_size=settings.batch_size or 128,
            seed=settings.seed,
            device=settings.device,
            eval_batch_size=256,  # faster than larger chunks for these small convolutions on CPU
            eval_subset=settings.eval_subset,
        )

    return build


def _check(dataset: str):
    def check(settings: TaskSettings) -> None:
        locate_mnist_format(dataset, settings.data_dir)  # finds the four files; reads none

    return check


_FASHION_NEEDS = "Fashion-MNIST IDX files: apt install dataset-fashion-mnist, or <data_dir>/fashion-mnist/"

TASKS = [
    Task(
        "fashion_mnist_mlp",
        "Fashion-MNIST (28x28, 55k/5k/10k), 784-256-128-10 ReLU MLP",
        _build("fashion_mnist", "mlp"),
        metric="accuracy",
        mode="max",
        target=0.88,  # Adam (lr 1e-3) has 0.857 after one epoch, 0.88 after five: 0.85 would not separate optimizers
        epochs=10,
        needs=_FASHION_NEEDS,
        check=_check("fashion_mnist"),
        tags=("image",),
    ),
    Task(
        "fashion_mnist_cnn",
        "Fashion-MNIST (28x28, 55k/5k/10k), two-block CNN (32/64 channels)",
        _build("fashion_mnist", "cnn"),
        metric="accuracy",
        mode="max",
        target=0.90,
        epochs=10,
        needs=_FASHION_NEEDS,
        check=_check("fashion_mnist"),
        tags=("image",),
    ),
    Task(
        "mnist_cnn",
        "MNIST (28x28, 55k/5k/10k), two-block CNN (32/64 channels); data from the user's data_dir",
        _build("mnist", "cnn"),
        metric="accuracy",
        mode="max",
        target=0.99,
        epochs=10,
        needs=f"MNIST IDX files ({_file_list()}, optionally .gz) in <data_dir>/mnist/",
        check=_check("mnist"),
        tags=("image",),
    ),
]
