"""The equal-budget protocol: tune every optimizer alike, rerun the best configuration over seeds.

For each task and optimizer:

1. **Tune** — ``trials`` Optuna trials with the same sampler (TPE, same seed and settings) and the
   same pruner (median, identical for all, or none) over the same shape of search space: ``lr``
   log-uniform over the optimizer's stated range plus its registered key knobs (and ``weight_decay``
   with ``tune_weight_decay``). A trial trains on ``tune_seeds`` seeds (0, 1000001, ...) and scores the
   mean of their final *validation* metrics; a diverged seed scores the worst value. With
   ``max_widenings``, a log-scale knob whose best value sits on an edge of its range has that range
   widened and more trials search it (:mod:`optarena.arena.study.widening`), the same rule for all.
2. **Rerun** — the best configuration on seeds 1..``seeds`` (never the tuning seed), recording
   full curves and diagnostics; these, scored on the *test* split, are what the report compares.

The budget is queued in the store and worked off trial by trial (:mod:`optarena.arena.study.workers`),
and everything lands in the store as it finishes: an interrupted comparison rerun with the same
arguments continues where it stopped, losing no completed trial and running none twice, and
several ``compare`` or ``optarena worker`` processes on one store share its budget.
"""

from __future__ import annotations

import optuna
import torch

from optarena.arena.run import preflight
from optarena.arena.spec.experiment import PROTOCOLS, Experiment
from optarena.arena.study import records, store, workers
from optarena.arena.tasks import get_task


def check_experiment(
    experiment: Experiment, *, option: str = "--out", storage_option: str = "--storage", train: bool = True
) -> None:
    """Check everything :func:`compare` needs before its first trial (a ``PreflightError`` names what fails).

    The output folder and the SQLite store's folder can be written; with ``train`` (not when only
    queueing for workers) every task's data is found, every optimizer and variant builds with its
    fixed options on the experiment's device, and TensorBoard can log.
    """
    preflight.check_writable_dir(experiment.out, option)
    preflight.check_store_location(experiment.storage_url, storage_option if experiment.storage else option)
    if not train:
        return
    preflight.check_tensorboard(experiment.tensorboard)
    for task in experiment.tasks:
        preflight.check_data([task], experiment.settings(task))
    for name in experiment.optimizers:
        spec = experiment.spec(name)
        options = spec.options_for(10)
        if options or spec.schedule is not None:
            preflight.check_optimizer(
                spec.optimizer, options, label=f"variant {name!r}", device=experiment.device, spec=spec
            )


def planned_runs(experiment: Experiment) -> int:
    return len(experiment.tasks) * len(experiment.optimizers) * (experiment.trials + experiment.seeds)


def planned_budget(experiment: Experiment) -> str:
    """The budget ``experiment`` plans, in words: per (task, optimizer) pair and in all, in runs and epochs."""
    pairs = len(experiment.optimizers)
    widen = experiment.max_widenings * experiment.widen_trials()
    tune_low = experiment.trials * experiment.tune_seeds
    tune_high = (experiment.trials + widen) * experiment.tune_seeds
    low, high = tune_low + experiment.seeds, tune_high + experiment.seeds
    epochs = [experiment.epochs_for(get_task(task)) for task in experiment.tasks]

    def span(first: int, last: int) -> str:
        return f"{first}" if first == last else f"{first}-{last}"

    runs, all_epochs = pairs * len(epochs), pairs * sum(epochs)
    widening = (
        f" + up to {experiment.max_widenings} widening(s) of {experiment.widen_trials()} trial(s)"
        if experiment.max_widenings
        else ""
    )
    scored = "full splits" if experiment.eval_subset is None else f"first {experiment.eval_subset} examples per split"
    text = (
        f"budget ({experiment.protocol} protocol): per task and optimizer {experiment.trials} tuning trials{widening}, "
        f"each on {experiment.tune_seeds} tuning seed(s), + {experiment.seeds} rerun seeds = {span(low, high)} runs; "
        f"in all {span(low * runs, high * runs)} runs, {span(low * all_epochs, high * all_epochs)} epochs; "
        f"{'weight decay tuned; ' if experiment.tune_weight_decay else ''}scored on {scored}"
    )
    preset = PROTOCOLS[experiment.protocol]
    below = [
        f"{key} {getattr(experiment, key)!r} (preset {value!r})"
        for key, value in preset.items()
        if getattr(experiment, key) != value
    ]
    if below and experiment.protocol != "quick":  # quick is the defaults: any setting may differ from them
        text += f"; set apart from the {experiment.protocol} preset: {', '.join(below)}"
    return text


def completed_runs(experiment: Experiment) -> int:
    """Runs of ``experiment`` already in the store (for a resumed progress bar)."""
    results = records.load_results(experiment.storage_url, experiment.name)
    total = 0
    for (task, optimizer), pair in results.pairs.items():
        if task in experiment.tasks and optimizer in experiment.optimizers:
            total += min(len(pair.tune), experiment.trials) + min(len(pair.final), experiment.seeds)
    return total


def compare(
    experiment: Experiment,
    progress: workers.ProgressCallback | None = None,
    *,
    prepare_only: bool = False,
    heartbeat_seconds: int = 10,
    grace_seconds: int = 60,
    poll_seconds: float = 2.0,
) -> None:
    """Tune and rerun every (task, optimizer) pair; results go to the store as they finish.

    The budget is first queued (:func:`optarena.arena.study.workers.prepare`) and then worked off like
    any ``optarena worker`` does (:func:`optarena.arena.study.workers.work`), so another ``compare`` or
    worker on the same store shares it; ``prepare_only`` stops after queueing, for workers to run.
    While a trial trains, a heartbeat is recorded every ``heartbeat_seconds``; another machine may
    give up a trial silent for ``grace_seconds`` (on this machine, only a trial whose process is
    gone). Raises ``ValueError`` if the store holds this experiment's name with settings that
    change its stored runs' meaning.
    """
    if heartbeat_seconds < 1 or grace_seconds <= heartbeat_seconds:
        raise ValueError(
            f"Invalid heartbeat/grace: {heartbeat_seconds}/{grace_seconds}; expected 1 <= heartbeat < grace"
        )
    experiment.out.mkdir(parents=True, exist_ok=True)
    if experiment.threads:
        torch.set_num_threads(experiment.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = store.open_storage(experiment.storage_url)
    workers.prepare(experiment, storage)
    if not prepare_only:
        workers.work(
            experiment,
            storage,
            progress,
            poll_seconds,
            heartbeat_seconds=heartbeat_seconds,
            grace_seconds=grace_seconds,
        )
