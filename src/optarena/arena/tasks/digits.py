"""scikit-learn's digits (1,797 8×8 images, shipped with the package: no download)."""

from __future__ import annotations

import torch

from optarena.arena.tasks.base import InMemoryClassification, MissingDataError, Task, TaskSettings, take_subset
from optarena.arena.tasks.models import SmallCNN, mlp


def load_digits_splits(subset: int | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Digits as float tensors in [0, 1], split 60/20/20 into train/val/test with a fixed permutation."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise MissingDataError("The digits task needs scikit-learn: pip install scikit-learn") from error
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(y, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    n_train, n_val = int(0.6 * len(y)), int(0.2 * len(y))
    train, val, test = order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
    return {
        "train": take_subset(x[train], y[train], subset),
        "val": (x[val], y[val]),
        "test": (x[test], y[test]),
    }


def check(settings: TaskSettings) -> None:
    """scikit-learn, which ships the data, is importable."""
    try:
        import sklearn.datasets  # noqa: F401
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise MissingDataError("The digits task needs scikit-learn: pip install scikit-learn") from error


def _build(model_name: str):
    def build(settings: TaskSettings) -> InMemoryClassification:
        splits = load_digits_splits(settings.subset)
        torch.manual_seed(settings.seed)
        model = mlp(64, (128,), 10) if model_name == "mlp" else SmallCNN(1, 10, 8)
        return InMemoryClassification(
            model,
            splits,
            batch_size=settings.batch_size or 64,
            seed=settings.seed,
            device=settings.device,
            eval_subset=settings.eval_subset,
        )

    return build


TASKS = [
    Task(
        "digits",
        "scikit-learn digits (8x8), 64-128-10 MLP; embedded data, seconds per run",
        _build("mlp"),
        metric="accuracy",
        mode="max",
        target=0.95,
        epochs=10,
        needs="scikit-learn (pip install scikit-learn)",
        check=check,
    ),
    Task(
        "digits_cnn",
        "scikit-learn digits (8x8), small CNN",
        _build("cnn"),
        metric="accuracy",
        mode="max",
        target=0.95,
        epochs=10,
        needs="scikit-learn (pip install scikit-learn)",
        check=check,
    ),
]
