"""What one trial of the protocol is: its study, and the objective a process runs for it.

A tuning trial trains a configuration from its round's search space (:mod:`optarena.arena.study.widening`)
on each of the experiment's tuning seeds (:func:`~optarena.arena.spec.experiment.tune_seed_list`: seed 0,
then 1000001, 1000002, ...) in turn and scores the mean of their final validation metrics, a diverged seed
counting as the task's worst value. The first seed reports its validation metric after every epoch, so the
pruner compares every trial on the same seed's curve and may stop it there; the trial's stored run is the
first seed's, and every seed's value, step count and time are kept beside it (``tune_runs``). A rerun trains
the best tuning configuration on its seed with full diagnostics and scores the test metric. A diverged run
scores the task's worst value. Everything a run measured is written through
:mod:`optarena.arena.study.records`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import optuna

from optarena.arena.run.runner import train
from optarena.arena.spec.experiment import Experiment, tune_seed_list
from optarena.arena.spec.search import make_pruner, make_sampler, repr_pruner, repr_sampler, suggest
from optarena.arena.study import records, store, widening
from optarena.arena.tasks import Task

Objective = Callable[[optuna.Trial], float]


def open_study(
    experiment: Experiment, task: Task, optimizer: str, phase: str, storage: Any = None, describe: bool = True
) -> optuna.Study:
    """The study of (task, optimizer, phase), created if missing; ``describe`` records the experiment in a
    tuning study that does not say yet (:func:`~optarena.arena.study.records.write_study_config`)."""
    epochs = experiment.epochs_for(task)
    study = optuna.create_study(
        study_name=store.study_name(experiment.name, task.name, optimizer, phase),
        storage=storage if storage is not None else store.open_storage(experiment.storage_url),
        sampler=make_sampler(experiment, experiment.trials),
        pruner=make_pruner(experiment, epochs) if phase == "tune" else optuna.pruners.NopPruner(),
        direction="maximize" if task.mode == "max" else "minimize",
        load_if_exists=True,
    )
    if describe and phase == "tune" and not records.is_described(study):
        config = records.StudyConfig(
            experiment=experiment.to_dict(),
            versions=store.versions(),
            task=records.TaskInfo(task.metric, task.mode, experiment.target_for(task), task.kind),
            sampler=repr_sampler(experiment),
            pruner=repr_pruner(experiment, epochs),
        )
        records.write_study_config(study, config)
    return study


def tune_objective(experiment: Experiment, task: Task, optimizer: str) -> Objective:
    """One tuning trial: train on every tuning seed (the first reports per epoch), score the mean validation metric."""
    epochs = experiment.epochs_for(task)

    def objective(trial: optuna.Trial) -> float:
        round = records.round_of(trial)
        space = widening.space_of(experiment, optimizer, widening.recorded(trial.study), round)
        params = suggest(trial, experiment.spec(optimizer), space)

        def report(epoch: int, row: dict[str, float]) -> None:
            if epoch == 0:
                return
            value = row["val_metric"]
            trial.report(value if math.isfinite(value) else task.worst, epoch)
            if trial.should_prune():
                records.write_pruned_at(trial, row["step"], row["epoch"])
                raise optuna.TrialPruned()

        variant, settings = experiment.spec(optimizer), experiment.settings(task.name)
        values, runs = [], []
        for index, seed in enumerate(tune_seed_list(experiment.tune_seeds)):
            start = time.perf_counter()
            result = train(
                task,
                variant,
                params,
                seed=seed,
                epochs=epochs,
                settings=settings,
                score_test=False,  # the objective and pruning read validation; tuning never sees the test split
                on_epoch=report if index == 0 else None,
            )
            value = task.worst if result.diverged else result.records[-1]["val_metric"]
            if index == 0:
                records.write_run(trial, result)
            last = result.records[-1] if result.records else {"step": 0.0, "epoch": 0.0}
            runs.append(
                {
                    "seed": seed,
                    "value": value,
                    "diverged": result.diverged,
                    "step": last["step"],
                    "epoch": last["epoch"],
                    "seconds": time.perf_counter() - start,
                }
            )
            values.append(value)
        records.write_tune_runs(trial, runs)
        return sum(values) / len(values)

    return objective


def final_objective(
    experiment: Experiment, task: Task, optimizer: str, tune_study: optuna.Study, seed: int | None = None
) -> Objective:
    """One rerun of the tuned configuration on ``seed`` (or the trial's queued ``seed``), scored on test."""
    epochs = experiment.epochs_for(task)

    def objective(trial: optuna.Trial) -> float:
        params = best_params(tune_study)
        run_seed = seed if seed is not None else records.queued_seed(trial)
        records.write_rerun(trial, run_seed, params)
        logs = experiment.tensorboard
        log_dir = None if logs is None else logs / experiment.name / task.name / optimizer / f"seed{run_seed}"
        result = train(
            task,
            experiment.spec(optimizer),
            params,
            seed=run_seed,
            epochs=epochs,
            settings=experiment.settings(task.name),
            diagnostics=True,
            tensorboard_dir=log_dir,
        )
        records.write_run(trial, result)
        return task.worst if result.diverged else result.records[-1]["test_metric"]

    return objective


def best_params(study: optuna.Study) -> dict[str, Any]:
    completed = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise RuntimeError(f"Study {study.study_name} has no completed trial to take a best configuration from")
    return dict(study.best_trial.params)
