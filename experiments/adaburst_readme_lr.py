"""Adaburst's defaults at the README's learning rate, against AdamW: the check behind docs/algorithms/adaburst.md.

Fashion-MNIST, the arena's two-block CNN (``fashion_mnist_cnn``), the whole training set, 2 epochs, lr 1e-3 and
every other hyperparameter at its default, seeds 1-3 (the same initial weights and batch order for every
optimizer). Adaburst in its default reading (A is AdamW's direction, the burst spanning the run, the loss-trend
trigger) and in the unofficial sketch's reading (``moments='undamped'``), and torch's AdamW. Writes the table to
``experiments/results/adaburst_readme_lr.md``::

    python experiments/adaburst_readme_lr.py            # about 15 minutes on 2 cores
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

from optarena.arena.analysis.stats import mean_ci
from optarena.arena.run.runner import train
from optarena.arena.tasks import TaskSettings, get_task

CONFIGURATIONS = {
    "adamw": ("adamw", {}),
    "adaburst (default)": ("adaburst", {}),
    "adaburst, moments='undamped'": ("adaburst", {"moments": "undamped"}),
}
SEEDS = (1, 2, 3)
OUT = Path(__file__).parent / "results" / "adaburst_readme_lr.md"


def main() -> None:
    torch.set_num_threads(1)
    task = get_task("fashion_mnist_cnn")
    rows = []
    for label, (name, options) in CONFIGURATIONS.items():
        accuracies, bursts = [], []
        for seed in SEEDS:
            result = train(task, name, {"lr": 1e-3, **options}, seed=seed, epochs=2, settings=TaskSettings())
            accuracies.append(result.records[-1]["test_metric"])
            bursts.append(len(result.events.get("burst", [])))
            print(f"{label} seed {seed}: {accuracies[-1]:.4f}, {bursts[-1]} burst(s)", file=sys.stderr, flush=True)
        mean, low, high = mean_ci(accuracies, 0.95)
        per_seed = ", ".join(f"{100 * a:.2f}" for a in accuracies)
        rows.append(
            f"| {label} | {100 * mean:.2f} [{100 * low:.2f}, {100 * high:.2f}] | {per_seed} | "
            f"{statistics.mean(bursts):.1f} |"
        )
    text = (
        "| optimizer (lr 1e-3) | test accuracy %, mean [95% CI] | per seed | bursts per run |\n"
        "| --- | --- | --- | --- |\n" + "\n".join(rows) + "\n"
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
