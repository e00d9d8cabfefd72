"""MNIST-1D (Greydanus 2020): 1-D signals of length 40 in 10 classes, generated offline by the ``mnist1d`` package.

The data set is generated with the package's default arguments (4,000 train + 1,000 test, its fixed
seed 42: the same data as the published ``mnist1d_data.pkl``), then cached as ``.npz`` in the cache
folder (``$OPTARENA_CACHE``, else ``~/.cache/optarena``): generating takes about 2 s, loading a few ms.
The 4,000 training signals are split 3,600 train / 400 validation (fixed).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random

import numpy as np
import torch
from torch import Tensor

from optarena.arena.tasks.base import (
    InMemoryClassification,
    MissingDataError,
    Task,
    TaskSettings,
    split_train_val,
    take_subset,
)
from optarena.arena.tasks.idx import cache_dir, load_npz, save_npz_atomic
from optarena.arena.tasks.models import Conv1DNet, mlp

VAL_FRACTION = 0.1
NEEDS = "the mnist1d package (pip install mnist1d); the data are generated, nothing is downloaded"


def _default_args() -> dict:
    try:
        from mnist1d.data import get_dataset_args
    except ImportError as error:
        raise MissingDataError(f"The MNIST-1D tasks need {NEEDS}") from error
    return get_dataset_args(as_dict=True)


def generate_mnist1d() -> dict[str, np.ndarray]:
    """MNIST-1D generated with the package's defaults: float32 ``x``/``x_test`` ``(n, 40)``, int64 ``y``/``y_test``.

    The package seeds Python's and NumPy's global generators; their states are restored afterwards so
    that building a task never changes anybody else's random stream.
    """
    from mnist1d.data import ObjectView, make_dataset

    args = _default_args()
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(ObjectView(dict(args)))
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
    return {
        "x": data["x"].astype(np.float32),
        "y": data["y"].astype(np.int64),
        "x_test": data["x_test"].astype(np.float32),
        "y_test": data["y_test"].astype(np.int64),
    }


def load_mnist1d() -> dict[str, np.ndarray]:
    """MNIST-1D from the cache, generated and cached on first use (the key follows the generation arguments)."""
    args = _default_args()
    args.pop("url", None)  # where the package would download from: not part of what is generated
    key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"mnist1d-{key}.npz"
    cached = load_npz(path)
    if cached is not None and {"x", "y", "x_test", "y_test"} <= set(cached):
        return cached
    data = generate_mnist1d()
    with contextlib.suppress(OSError):  # a read-only cache folder: generate again next time
        save_npz_atomic(path, **data)
    return data


def mnist1d_splits(subset: int | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """Float signals ``(n, 40)`` and labels, split 3,600/400/1,000 into train/val/test."""
    data = {k: torch.from_numpy(v) for k, v in load_mnist1d().items()}
    train, val = split_train_val(data["x"], data["y"], val_fraction=VAL_FRACTION)
    return {"train": take_subset(*train, subset), "val": val, "test": (data["x_test"], data["y_test"])}


def check(settings: TaskSettings) -> None:
    """The mnist1d package is importable (the data are generated from it)."""
    _default_args()


def _build(kind: str):
    def build(settings: TaskSettings) -> InMemoryClassification:
        splits = mnist1d_splits(settings.subset)
        torch.manual_seed(settings.seed)
        model = mlp(40, (100, 100), 10) if kind == "mlp" else Conv1DNet(40, 10)
        return InMemoryClassification(
            model,
            splits,
            batch_size=settings.batch_size or 128,
            seed=settings.seed,
            device=settings.device,
            eval_subset=settings.eval_subset,
        )

    return build


TASKS = [
    Task(
        "mnist1d_mlp",
        "MNIST-1D (length 40, 3.6k/0.4k/1k), 40-100-100-10 ReLU MLP; generated data, seconds per run",
        _build("mlp"),
        metric="accuracy",
        mode="max",
        target=0.60,
        epochs=30,
        needs=NEEDS,
        check=check,
        tags=("1d",),
    ),
    Task(
        "mnist1d_cnn",
        "MNIST-1D (length 40, 3.6k/0.4k/1k), the paper's 3-layer Conv1d net (5.2k params)",
        _build("cnn"),
        metric="accuracy",
        mode="max",
        target=0.80,
        epochs=50,
        needs=NEEDS,
        check=check,
        tags=("1d",),
    ),
]
