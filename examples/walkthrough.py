"""optarena in a few minutes: an optimizer in your own loop, a fair comparison of two, the results in pandas.

    pip install -e ".[export]"                 # pandas, for part 3
    python examples/walkthrough.py             # well under a minute on 2 CPU cores; writes runs/walkthrough/
    python examples/walkthrough.py --help      # smaller or larger sizes

Each part prints what it did; read the code top to bottom, or paste the parts into a notebook.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn

import optarena
from optarena.optim.hooks import LoopContext


# --- 1. An optarena optimizer in your own training loop ------------------------------------------------------
def own_loop(epochs: int, batch_size: int = 64) -> float:
    """Train a small MLP on scikit-learn's digits with Adaburst, calling the loop hooks its registry entry declares.

    Most optimizers need only ``zero_grad``/``backward``/``step``. Adaburst also needs the run's length (its
    SGD-momentum rate anneals over the run) and every step's loss (its burst restarts when the loss stops
    falling): ``hooks.options`` gives the first, ``hooks.after_step`` and ``hooks.after_epoch`` do the rest.
    The same code works for every registered optimizer; Lightning and the Hugging Face Trainer get it from
    ``optarena.integrations``.
    """
    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
    train, test = slice(0, 1400), slice(1400, None)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))

    name = "adaburst"
    hooks = optarena.get_optimizer_info(name).hooks
    steps_per_epoch = math.ceil(1400 / batch_size)
    context = LoopContext(metric_mode="max", batch_size=batch_size, classification=True,
                          steps_per_epoch=steps_per_epoch, total_steps=epochs * steps_per_epoch)  # fmt: skip
    optimizer = optarena.create_optimizer(model, name, lr=3e-3, **hooks.options(context))

    step = 0
    for epoch in range(1, epochs + 1):
        for batch in torch.randperm(1400).split(batch_size):
            inputs, labels = x[train][batch], y[train][batch]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(inputs), labels)
            loss.backward()
            optimizer.step()
            step += 1
            for event in hooks.after_step(optimizer, model, inputs, step, context, loss.detach()):
                print(f"  step {step}: {event}")  # Adaburst's burst restarts
        with torch.no_grad():
            train_accuracy = (model(x[train]).argmax(1) == y[train]).float().mean().item()
        hooks.after_epoch(optimizer, {"train_metric": train_accuracy}, context)
        print(f"  epoch {epoch}: train accuracy {train_accuracy:.3f}, burst factor {optimizer.burst_factor:.3f}")
    with torch.no_grad():
        accuracy = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    print(f"1. own loop: {name} reaches test accuracy {accuracy:.3f} on digits after {epochs} epochs\n")
    return accuracy


# --- 2. Compare two optimizers in the arena --------------------------------------------------------------------
def compare_two(out: Path, epochs: int, trials: int, seeds: int, subset: int) -> str:
    """``optarena compare`` from Python: tune each optimizer with the same budget, rerun the best over seeds.

    The same as ``optarena compare --name walkthrough --task digits --optimizers adamw adaburst --trials T
    --seeds S --epochs E --subset N --out OUT``. Everything goes to an Optuna store in ``out`` as it finishes
    (rerun the same call after an interruption and it continues); the report is ``out/report.md`` and ``.html``.
    """
    from optarena.arena.render.report import build_report
    from optarena.arena.spec.experiment import Experiment
    from optarena.arena.study.protocol import compare

    experiment = Experiment(name="walkthrough", out=out, tasks=["digits"], optimizers=["adamw", "adaburst"],
                            trials=trials, seeds=seeds, epochs=epochs, subset=subset, threads=1)  # fmt: skip
    compare(experiment, progress=lambda message: print(f"  {message}"))
    report = build_report(experiment.storage_url, experiment.name, out)
    print(f"2. compare: the report is {report} (and {report.with_suffix('.html')})\n")
    return experiment.storage_url


# --- 3. Read the results as data ------------------------------------------------------------------------------
def read_results(storage_url: str, out: Path) -> None:
    """The store as a pandas DataFrame, one row per run and evaluation (``optarena export`` writes the same
    table as CSV or Parquet): the numbers of the report's summary, and one of its figures redrawn."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    from optarena.arena.analysis import stats
    from optarena.arena.analysis.frames import results_frame

    df = results_frame(storage_url, "walkthrough")
    print(f"3. results: {len(df)} rows; columns {', '.join(df.columns[:14])}, ...")
    finals = df[(df.phase == "final") & ~df.diverged.astype(bool)]
    last = finals[finals.epoch == finals.epoch.max()]
    print(last.groupby("optimizer").test_metric.agg(["mean", "std", "count"]).to_string(float_format="%.4f"))
    tuned = last.groupby("optimizer").params_lr.first()
    print("tuned learning rates: " + ", ".join(f"{name} {lr:.2g}" for name, lr in tuned.items()))

    figure, axes = pyplot.subplots(figsize=(6, 4))
    for optimizer, rows in finals.groupby("optimizer"):
        curves = rows.pivot(index="seed", columns="step", values="test_metric")
        mean, low, high = stats.curve_ci(curves.to_numpy().tolist(), 0.95)
        axes.plot(curves.columns, mean, marker="o", label=optimizer)
        axes.fill_between(curves.columns, low, high, alpha=0.2)
    axes.set_xlabel("step")
    axes.set_ylabel("test accuracy")
    axes.set_title("digits: mean and 95% interval over seeds")
    axes.legend()
    path = out / "walkthrough_curves.png"
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    print(f"the report's curves figure, redrawn from the DataFrame: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/walkthrough"), help="where the store and report go")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of every run (default 6)")
    parser.add_argument("--trials", type=int, default=6, help="tuning trials per optimizer (default 6)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds the tuned configuration is rerun on (default 3)")
    parser.add_argument("--subset", type=int, default=1000, help="training examples of digits (default 1000)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and fair on a shared machine
    own_loop(args.epochs)
    storage_url = compare_two(args.out, args.epochs, args.trials, args.seeds, args.subset)
    read_results(storage_url, args.out)


if __name__ == "__main__":
    main()
