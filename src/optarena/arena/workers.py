"""Comparisons shared by many worker processes, on many machines, through one database.

``prepare(experiment)`` puts the whole budget in the store as Optuna WAITING trials: ``trials``
tuning trials per (task, optimizer) — with their configurations already drawn when the sampler is
``'qmc'``, drawn by TPE when a worker takes them otherwise — and one trial per seed of the final
reruns. ``work(experiment)`` takes waiting trials one at a time (Optuna pops a WAITING trial
atomically, so no trial runs twice) until none is left anywhere; a final rerun is taken only once
its pair's tuning is complete. Any number of ``optarena worker`` processes run ``work`` on the same
storage (PostgreSQL, or any database SQLAlchemy reaches from every machine).

A worker records a heartbeat while it trains. A worker that dies stops beating; after the grace
period the next worker to look fails its trial and Optuna's ``RetryFailedTrialCallback`` puts a copy
(same configuration, same seed) back in the queue, so the budget is still met exactly.

With ``sampler='qmc'`` and ``prune=False`` every trial's configuration and result depend only on
its place in the queue, so a study finished by any number of workers holds the same results as one
process running it.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import optuna
from optuna.trial import TrialState

from optarena.arena import store
from optarena.arena.protocol import (
    Experiment,
    _study,
    final_objective,
    make_sampler,
    suggest,
    tune_objective,
)
from optarena.arena.tasks import Task, get_task

ProgressCallback = Callable[[str], None]
OPEN = (TrialState.WAITING, TrialState.RUNNING)


def qmc_configurations(experiment: Experiment, optimizer: str) -> list[dict[str, Any]]:
    """The ``trials`` configurations the QMC sampler draws, in order, for ``optimizer``."""
    study = optuna.create_study(sampler=make_sampler(experiment, experiment.trials))
    configurations = []
    for _ in range(experiment.trials):
        trial = study.ask()
        configurations.append(suggest(trial, experiment.spec(optimizer)))
        study.tell(trial, 0.0)  # a told trial fixes the search space, as in a sequential run
    return configurations


def _studies(experiment: Experiment, task: Task, optimizer: str, storage: Any) -> tuple[optuna.Study, optuna.Study]:
    return (
        _study(experiment, task, optimizer, "tune", storage=storage),
        _study(experiment, task, optimizer, "final", storage=storage),
    )


def prepare(experiment: Experiment, storage: Any = None) -> int:
    """Queue every trial of ``experiment`` not yet in the store; returns how many were queued."""
    storage = storage if storage is not None else store.open_storage(experiment.storage_url)
    queued = 0
    for task_name in experiment.tasks:
        task = get_task(task_name)
        for optimizer in experiment.optimizers:
            tune, final = _studies(experiment, task, optimizer, storage)
            slots = {t.user_attrs.get("slot") for t in tune.get_trials(deepcopy=False) if t.state != TrialState.FAIL}
            configurations = qmc_configurations(experiment, optimizer) if experiment.sampler == "qmc" else None
            for slot in range(experiment.trials):
                if slot not in slots:
                    params = configurations[slot] if configurations is not None else {}
                    tune.enqueue_trial(params, user_attrs={"slot": slot})
                    queued += 1
            seeds = {t.user_attrs.get("seed") for t in final.get_trials(deepcopy=False) if t.state != TrialState.FAIL}
            for seed in range(1, experiment.seeds + 1):
                if seed not in seeds:
                    final.enqueue_trial({}, user_attrs={"seed": seed})
                    queued += 1
    return queued


@contextmanager
def heartbeat(storage: Any, trial_id: int) -> Iterator[None]:
    """Record ``trial_id``'s heartbeat every interval while the block runs (a no-op without heartbeats)."""
    interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            storage.record_heartbeat(trial_id)
            stop.wait(interval)

    thread = threading.Thread(target=beat, name=f"optarena-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_one(study: optuna.Study, objective: Callable[[optuna.Trial], float]) -> bool:
    """Take one waiting trial of ``study`` and run it; False if none was waiting."""
    with warnings.catch_warnings():  # "experimental" in optuna; tests/test_workers.py covers it
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial: FAIL, and its copy queued again
    trial_id = study._pop_waiting_trial_id()  # optuna: atomic WAITING -> RUNNING, or None
    if trial_id is None:
        return False
    trial = optuna.Trial(study, trial_id)
    with heartbeat(study._storage, trial_id):
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        else:
            study.tell(trial, value)
    return True


def _has_open(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=OPEN))


def work(
    experiment: Experiment,
    storage: Any = None,
    progress: ProgressCallback | None = None,
    poll_seconds: float = 2.0,
) -> int:
    """Run waiting trials of ``experiment`` until none is left anywhere; returns how many this worker ran."""
    storage = storage if storage is not None else store.open_storage(experiment.storage_url)
    pairs = [(get_task(t), o) for t in experiment.tasks for o in experiment.optimizers]
    ran = 0
    while True:
        took = False
        open_anywhere = False
        for task, optimizer in pairs:
            tune, final = _studies(experiment, task, optimizer, storage)
            if run_one(tune, tune_objective(experiment, task, optimizer)):
                took = True
                label = f"{task.name}/{optimizer}: trial {len(store.finished(tune))}/{experiment.trials}"
            elif _has_open(tune):
                open_anywhere = True  # its reruns wait for the best configuration
                continue
            elif run_one(final, final_objective(experiment, task, optimizer, tune)):
                took = True
                label = f"{task.name}/{optimizer}: seed rerun"
            else:
                open_anywhere = open_anywhere or _has_open(final)
                continue
            ran += 1
            if progress is not None:
                progress(label)
            break  # start again from the first pair: tuning before reruns, in order
        if took:
            continue
        if not open_anywhere:
            return ran
        time.sleep(poll_seconds)  # other workers hold the last trials: wait for them (or their heartbeat)


def load_experiment_config(storage_url: str, name: str) -> Experiment:
    """The experiment ``name`` as ``compare`` last stored it, to run against ``storage_url``.

    An experiment that grew (optimizers or variants added, then ``compare --prepare`` again) keeps its older
    configuration in its older studies: the newest study's is the whole experiment.
    """
    storage = store.open_storage(storage_url)
    summaries = [
        s
        for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
        if s.study_name.startswith(f"{name}/") and s.study_name.endswith("/tune") and "config" in s.user_attrs
    ]
    if summaries:
        newest = max(summaries, key=lambda s: s._study_id)  # ids grow with creation
        return Experiment(**{**newest.user_attrs["config"], "storage": storage_url})
    raise ValueError(
        f"Invalid study: no experiment {name!r} in {storage_url}; set it up first with "
        f"'optarena compare --name {name} --storage {storage_url} --prepare'"
    )
