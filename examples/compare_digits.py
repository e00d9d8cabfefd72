"""Compare optarena's optimizers on scikit-learn's digits (no download) with an equal lr grid.

Each optimizer gets the same learning-rate grid, chosen on a validation split; the best rate is
then rerun over three seeds and reported on the test split. A small stand-in for the arena
(``optarena compare``), which adds tuning budgets, a results store and a report.

    python examples/compare_digits.py [--epochs 12] [--optimizers adamw sgdm adaburst ...]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from sklearn.datasets import load_digits
from torch import nn

import optarena
from optarena.optim.hooks import LoopContext

LR_GRID = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
DEFAULT_OPTIMIZERS = ("adamw", "sgdm", "adaburst", "adamnx", "adax", "adamw_agr")


def load_splits(seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Digits as float tensors, split 60/20/20 into train/validation/test."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_train, n_val = int(0.6 * len(y)), int(0.2 * len(y))
    parts = {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
    return {name: (x[idx], y[idx]) for name, idx in parts.items()}


def accuracy(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> float:
    with torch.no_grad():
        return (model(data[0]).argmax(1) == data[1]).float().mean().item()


def train(name: str, lr: float, seed: int, splits, epochs: int, batch_size: int = 64) -> dict[str, float]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    x, y = splits["train"]
    # What the loop must do for this optimizer beyond zero_grad/backward/step, as its registry entry declares:
    # Adaburst needs the run's length and every step's loss (its burst trigger); most optimizers need nothing.
    hooks = optarena.get_optimizer_info(name).hooks
    steps_per_epoch = math.ceil(len(y) / batch_size)
    context = LoopContext(batch_size=batch_size, classification=True, steps_per_epoch=steps_per_epoch,
                          total_steps=epochs * steps_per_epoch)  # fmt: skip
    opt = optarena.create_optimizer(model, name, lr=lr, **hooks.options(context))
    step = 0
    for _ in range(epochs):
        for idx in torch.randperm(len(y)).split(batch_size):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            step += 1
            hooks.after_step(opt, model, x[idx], step, context, loss.detach())
        hooks.after_epoch(opt, {"train_metric": accuracy(model, splits["train"])}, context)
    return {split: accuracy(model, splits[split]) for split in ("train", "val", "test")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--optimizers", nargs="+", default=list(DEFAULT_OPTIMIZERS))
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    splits = load_splits()
    print(f"digits: {len(splits['train'][1])} train / {len(splits['val'][1])} val / {len(splits['test'][1])} test")
    print(f"lr grid {LR_GRID}, {args.epochs} epochs, best lr rerun over {args.seeds} seeds\n")
    print(f"{'optimizer':<12} {'best lr':>8} {'val acc':>8} {'test acc (mean ± sd)':>22} {'seconds':>8}")
    for name in args.optimizers:
        start = time.perf_counter()
        val = {lr: train(name, lr, 0, splits, args.epochs)["val"] for lr in LR_GRID}
        best_lr = max(val, key=val.get)
        tests = [train(name, best_lr, seed, splits, args.epochs)["test"] for seed in range(1, args.seeds + 1)]
        sd = statistics.stdev(tests) if len(tests) > 1 else 0.0
        spent = time.perf_counter() - start
        print(
            f"{name:<12} {best_lr:>8.0e} {val[best_lr]:>8.3f} {statistics.mean(tests):>14.3f} ± {sd:.3f} {spent:>8.1f}"
        )


if __name__ == "__main__":
    main()
