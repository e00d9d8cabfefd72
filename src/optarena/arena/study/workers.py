"""Comparisons shared by many processes, on one machine or many, through one store.

``prepare(experiment)`` puts the whole budget in the store as Optuna WAITING trials: ``trials``
tuning trials per (task, optimizer) — with their configurations already drawn when the sampler is
``'qmc'``, drawn by TPE when a process takes them otherwise — and one trial per seed of the final
reruns. ``work(experiment)`` takes waiting trials one at a time until none is left anywhere; a final
rerun is taken only once its pair's tuning is complete: every queued tuning trial finished and no range
left to widen (:func:`optarena.arena.study.widening.extend`, which queues a widening round's trials like
the rest of the budget). After every trial it runs, a process restates its pair's budget in the tuning
study (:mod:`optarena.arena.study.budget`). ``optarena compare`` does both, so any
number of ``compare`` and ``optarena worker`` processes on the same store (SQLite on one machine,
PostgreSQL across machines) share the budget: every trial runs once.

Queueing, taking a trial and reclaiming a dead process's trial happen under the store's lock
(:func:`optarena.arena.study.store.lock`), so no slot or seed is queued twice and no trial is taken
twice; who runs a trial, and when another process may give it up, is
:mod:`optarena.arena.study.ownership`.

The TPE sampler is seeded per trial (from ``sampler_seed`` and the trial's number), so its random
start-up configurations differ from trial to trial and do not depend on which process draws them.
With ``sampler='qmc'`` and ``prune=False`` every trial's configuration and result depend only on its
place in the queue, so a study finished by any number of workers holds the same results as one
process running it.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from optarena.arena.run import preflight
from optarena.arena.spec.experiment import Experiment
from optarena.arena.spec.search import make_sampler
from optarena.arena.study import budget, objectives, ownership, records, store, widening
from optarena.arena.tasks import Task, get_task

ProgressCallback = Callable[[str], None]
OPEN = (TrialState.WAITING, TrialState.RUNNING)
# Settings that change what an experiment's stored runs mean: a second compare may not change them.
MEANING = (
    "epochs", "subset", "eval_subset", "sampler", "sampler_seed", "prune", "device", "data_dir", "task_options",
    "tune_seeds", "tune_weight_decay", "max_widenings", "widen_factor",
)  # fmt: skip


def qmc_configurations(experiment: Experiment, optimizer: str) -> list[dict[str, Any]]:
    """The ``trials`` configurations the QMC sampler draws, in order, for ``optimizer`` (its original ranges)."""
    space = widening.space_of(experiment, optimizer, [], 0)
    return widening.qmc_configurations(experiment, space, experiment.trials)


# --- queueing the budget ----------------------------------------------------------------------------


def _studies(
    experiment: Experiment, task: Task, optimizer: str, storage: Any, describe: bool = False
) -> tuple[optuna.Study, optuna.Study]:
    return (
        objectives.open_study(experiment, task, optimizer, "tune", storage=storage, describe=describe),
        objectives.open_study(experiment, task, optimizer, "final", storage=storage, describe=describe),
    )


def _plain(value: Any) -> Any:
    """``value`` as the store gives it back (JSON: tuples become lists, paths strings)."""
    return json.loads(json.dumps(value, default=str))


def _default(key: str) -> Any:
    """The default of the experiment's setting ``key`` (what a store made before the setting existed ran with)."""
    spec = Experiment.__dataclass_fields__[key]
    return spec.default_factory() if spec.default is dataclasses.MISSING else spec.default  # type: ignore[misc]


def conflicts(experiment: Experiment, storage: Any) -> list[str]:
    """The settings of ``experiment`` that differ from those its studies in ``storage`` were run with.

    Only settings that change what the stored runs mean count (:data:`MEANING`, and the definition
    of a variant already run); growing an experiment (tasks, optimizers, variants, trials, seeds) does not.
    """
    asked = _plain(experiment.to_dict())
    defaults = _plain({key: _default(key) for key in MEANING})
    differences: dict[str, tuple[Any, Any]] = {}
    for (task_name, optimizer), stored in records.stored_experiment_configs(storage, experiment.name).items():
        for key in MEANING:
            before, now = stored.get(key, defaults.get(key)), asked[key]
            if key == "epochs":
                try:
                    default_epochs = get_task(task_name).epochs
                except ValueError:  # a task this version does not know: compare as stored
                    default_epochs = None
                before, now = before or default_epochs, now or default_epochs
            if before != now:
                differences.setdefault(key, (before, now))
        before = (stored.get("variants") or {}).get(optimizer)
        now = asked["variants"].get(optimizer)
        if before != now and optimizer in experiment.optimizers:
            differences.setdefault(f"variant {optimizer}", (before, now))
    return [f"{key} {before!r} (stored) vs {now!r} (asked)" for key, (before, now) in sorted(differences.items())]


def prepare(experiment: Experiment, storage: Any = None) -> int:
    """Queue every trial of ``experiment`` not yet in the store; returns how many were queued.

    Safe while other processes prepare or work on the same store. Raises ``ValueError`` if the
    store holds ``experiment``'s name with settings that change its runs' meaning (:func:`conflicts`),
    and :class:`~optarena.arena.study.store.StoreError` if the store cannot be written.
    """
    storage = storage if storage is not None else store.open_storage(experiment.storage_url)
    url = store._rdb(storage).url
    queued = 0
    with store.guarded(url):
        store.check_writable(storage)
        with store.lock(storage):
            differences = conflicts(experiment, storage)
            if differences:
                raise ValueError(
                    f"Invalid experiment: {experiment.name!r} is already in {store.describe(url)} with other "
                    f"settings ({'; '.join(differences)}), which would change what its stored runs mean; "
                    "run it with the stored settings, or under another --name (or --storage)"
                )
            for task_name in experiment.tasks:
                task = get_task(task_name)
                for optimizer in experiment.optimizers:
                    queued += _queue(experiment, task, optimizer, storage)
    return queued


def _queue(experiment: Experiment, task: Task, optimizer: str, storage: Any) -> int:
    tune, final = _studies(experiment, task, optimizer, storage, describe=True)
    queued = widening.queue_rounds(experiment, optimizer, tune)
    seeds = {records.seed_of(t) for t in final.get_trials(deepcopy=False) if t.state != TrialState.FAIL}
    for seed in range(1, experiment.seeds + 1):
        if seed not in seeds:
            records.enqueue_rerun(final, seed)
            queued += 1
    return queued


# --- working it off ---------------------------------------------------------------------------------


def _has_open(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=OPEN))


def _give_back(study: optuna.Study, trial_id: int, storage: Any) -> None:
    """Close an interrupted trial of ours as failed and queue its copy, so the budget is still met."""
    try:
        with store.lock(storage):
            if study._storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                ownership.requeue(study, trial_id)
    except (optuna.exceptions.UpdateFinishedTrialError, *store.DATABASE_ERRORS, store.StoreError):
        pass  # already closed by another process, or the store is gone: nothing more to save


def _run(
    experiment: Experiment,
    study: optuna.Study,
    trial_id: int,
    objective: objectives.Objective,
    storage: Any,
    interval: float,
) -> None:
    """Run the trial ``trial_id`` this process took, beating while it trains, and tell its outcome."""
    if experiment.sampler != "qmc" and study.study_name.endswith("/tune"):  # QMC's configurations are queued
        number = study._storage.get_trial(trial_id).number
        study.sampler = make_sampler(experiment, experiment.trials, trial_number=number)
    trial = optuna.Trial(study, trial_id)
    state, value = TrialState.COMPLETE, None
    with ownership.heartbeat(study._storage, trial_id, interval):
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except (KeyboardInterrupt, SystemExit):
            _give_back(study, trial_id, storage)
            raise
        except BaseException:
            try:
                study.tell(trial, state=TrialState.FAIL)
            except (optuna.exceptions.UpdateFinishedTrialError, *store.DATABASE_ERRORS):
                pass  # the error that stopped the trial is the one to report
            raise
    try:
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:
        # Another machine judged this trial's heartbeat too old and queued a copy, which runs instead.
        warnings.warn(
            f"{study.study_name}: trial {trial.number} was given up by another process (no heartbeat within "
            "its grace period); its copy in the queue replaces it",
            RuntimeWarning,
            stacklevel=2,
        )


def work(
    experiment: Experiment,
    storage: Any = None,
    progress: ProgressCallback | None = None,
    poll_seconds: float = 2.0,
    *,
    heartbeat_seconds: float | None = None,
    grace_seconds: float | None = None,
) -> int:
    """Run waiting trials of ``experiment`` until none is left anywhere; returns how many this process ran.

    While a trial trains this process records a heartbeat every ``heartbeat_seconds`` and declares
    ``grace_seconds`` of silence as the point where another machine may give the trial up (default:
    the storage's heartbeat settings, else 10 and 60). Trials whose owner is gone are failed and
    queued again as they are met (:func:`~optarena.arena.study.ownership.reclaim`).
    """
    storage = storage if storage is not None else store.open_storage(experiment.storage_url)
    rdb = store._rdb(storage)
    interval = heartbeat_seconds or rdb.heartbeat_interval or ownership.DEFAULT_HEARTBEAT
    grace = grace_seconds or rdb.grace_period or (2 * interval if rdb.heartbeat_interval else ownership.DEFAULT_GRACE)
    owner = ownership.owner_record(interval, grace)
    ran = 0
    with store.guarded(rdb.url):
        pairs = [
            (task, optimizer, *_studies(experiment, task, optimizer, storage))
            for task in map(get_task, experiment.tasks)
            for optimizer in experiment.optimizers
        ]
        while True:
            taken = None
            open_anywhere = False
            with store.lock(storage):
                for task, optimizer, tune, final in pairs:
                    ownership.reclaim(tune, grace)
                    trial_id = ownership.take(tune, owner)
                    if trial_id is not None:
                        objective = objectives.tune_objective(experiment, task, optimizer)
                        taken = (task, optimizer, tune, trial_id, objective)
                        break
                    if _has_open(tune):
                        open_anywhere = True  # its reruns wait for the best configuration
                        continue
                    if widening.extend(experiment, optimizer, tune):  # a best value on an edge: search beyond it
                        budget.update(experiment, tune, final)
                        trial_id = ownership.take(tune, owner)
                        if trial_id is not None:
                            objective = objectives.tune_objective(experiment, task, optimizer)
                            taken = (task, optimizer, tune, trial_id, objective)
                            break
                        open_anywhere = True
                        continue
                    ownership.reclaim(final, grace)
                    trial_id = ownership.take(final, owner)
                    if trial_id is not None:
                        objective = objectives.final_objective(experiment, task, optimizer, tune)
                        taken = (task, optimizer, final, trial_id, objective)
                        break
                    open_anywhere = open_anywhere or _has_open(final)
            if taken is None:
                if not open_anywhere:
                    return ran
                time.sleep(poll_seconds)  # other processes hold the last trials: wait for them (or their end)
                continue
            task, optimizer, study, trial_id, objective = taken
            _run(experiment, study, trial_id, objective, storage, interval)
            ran += 1
            with store.lock(storage):
                tune_study, final_study = next((t, f) for k, o, t, f in pairs if (k, o) == (task, optimizer))
                budget.update(experiment, tune_study, final_study)
            if progress is not None:
                if study.study_name.endswith("/tune"):
                    planned = sum(widening.round_sizes(experiment, widening.recorded(study)).values())
                    label = f"{task.name}/{optimizer}: trial {len(store.finished(study))}/{planned}"
                else:
                    label = f"{task.name}/{optimizer}: seed rerun"
                progress(label)


def load_experiment_config(storage_url: str, name: str) -> Experiment:
    """The experiment ``name`` as ``compare`` last stored it, to run against ``storage_url``.

    An experiment that grew (optimizers or variants added, then ``compare --prepare`` again) keeps its older
    configuration in its older studies: the newest study's is the whole experiment.
    """
    with store.guarded(storage_url):
        config = records.newest_experiment_config(store.open_storage(storage_url), name)
    if config is not None:
        return Experiment(**{**config, "storage": storage_url})
    raise ValueError(
        f"Invalid study: no experiment {name!r} in {store.describe(storage_url)}; set it up first with "
        f"'optarena compare --name {name} --storage {storage_url} --prepare'"
    )


def worker_experiment(storage_url: str, name: str) -> Experiment:
    """The experiment ``optarena worker`` joins, checked before it takes a trial: its data are there and
    its TensorBoard folder (if any) can be written."""
    experiment = load_experiment_config(storage_url, name)
    preflight.check_tensorboard(experiment.tensorboard, "tensorboard (of the experiment)")
    for task in experiment.tasks:
        preflight.check_data([task], experiment.settings(task))
    return experiment
