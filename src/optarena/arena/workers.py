"""Comparisons shared by many processes, on one machine or many, through one store.

``prepare(experiment)`` puts the whole budget in the store as Optuna WAITING trials: ``trials``
tuning trials per (task, optimizer) — with their configurations already drawn when the sampler is
``'qmc'``, drawn by TPE when a process takes them otherwise — and one trial per seed of the final
reruns. ``work(experiment)`` takes waiting trials one at a time until none is left anywhere; a final
rerun is taken only once its pair's tuning is complete. ``optarena compare`` does both, so any
number of ``compare`` and ``optarena worker`` processes on the same store (SQLite on one machine,
PostgreSQL across machines) share the budget: every trial runs once.

Who runs what. Queueing, taking a trial and reclaiming a dead process's trial happen under the
store's lock (:func:`optarena.arena.store.lock`), so no slot or seed is queued twice and no trial is
taken twice. A process that takes a trial records itself in it (host, machine, pid and the pid's
start time) and records a heartbeat every ``heartbeat`` seconds while it trains. Another process
fails a RUNNING trial, and queues a copy of it (same configuration, same slot or seed), only when
its owner is provably gone: on the same machine, when that pid no longer runs (or is a newer
process with the same number); from another machine, when its heartbeat is older than the grace
period the owner declared. A live trial is never failed by another process on its machine, and a
killed single compare resumes at once when run again.

The TPE sampler is seeded per trial (from ``sampler_seed`` and the trial's number), so its random
start-up configurations differ from trial to trial and do not depend on which process draws them.
With ``sampler='qmc'`` and ``prune=False`` every trial's configuration and result depend only on its
place in the queue, so a study finished by any number of workers holds the same results as one
process running it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import TrialState

from optarena.arena import records, store
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
DEFAULT_HEARTBEAT = 10  # seconds between a running trial's heartbeats
DEFAULT_GRACE = 60  # seconds of silence after which a trial from another machine is given up
MAX_RETRIES = 3  # a trial that kills every process that runs it is queued again at most this often
# Settings that change what an experiment's stored runs mean: a second compare may not change them.
MEANING = ("epochs", "subset", "eval_subset", "sampler", "sampler_seed", "prune", "device", "data_dir")


def qmc_configurations(experiment: Experiment, optimizer: str) -> list[dict[str, Any]]:
    """The ``trials`` configurations the QMC sampler draws, in order, for ``optimizer``."""
    study = optuna.create_study(sampler=make_sampler(experiment, experiment.trials))
    configurations = []
    for _ in range(experiment.trials):
        trial = study.ask()
        configurations.append(suggest(trial, experiment.spec(optimizer)))
        study.tell(trial, 0.0)  # a told trial fixes the search space, as in a sequential run
    return configurations


# --- who runs a trial ------------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


@cache
def _machine() -> str | None:
    """This machine's boot and pid namespace; None where the system does not say (not Linux).

    Two processes with the same value see the same pids, so one can tell whether the other runs.
    """
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return None if boot is None else f"{boot}/{namespace}"


def _started(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot); None if no such process is visible."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name before ')' may hold spaces
    except (IndexError, ValueError):
        return None


def owner_record(heartbeat: float, grace: float) -> dict[str, Any]:
    """What a process records in a trial it takes: who it is, and how often it promises to beat."""
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "machine": _machine(),
        "pid": pid,
        "started": _started(pid),
        "heartbeat": heartbeat,
        "grace": grace,
    }


def owner_is_gone(owner: Any, heartbeat_age: float | None, grace: float) -> bool:
    """Whether the process that took a RUNNING trial is provably gone.

    ``owner`` is the trial's :func:`owner_record` and ``heartbeat_age`` the seconds since its last
    heartbeat (both None when missing). A trial is taken under the store lock, which records both
    before it is released, so a trial missing either was left by a process that died taking it
    (or by an optarena from before owners were recorded). On this machine the pid says it; from
    another, the heartbeat, against the grace period the owner declared (else ``grace``).
    """
    if not isinstance(owner, dict) or heartbeat_age is None:
        return True
    machine = _machine()
    if machine is not None and owner.get("machine") == machine and owner.get("started") is not None:
        started = _started(int(owner["pid"]))
        if started is not None:
            return started != owner["started"]  # a newer process with a reused pid is not the owner
        try:
            os.kill(int(owner["pid"]), 0)
        except ProcessLookupError:
            return True
        except OSError:
            pass  # it exists but /proc hides it: its heartbeat decides
    return heartbeat_age > float(owner.get("grace") or grace)


def heartbeat_ages(storage: Any, trial_ids: list[int]) -> dict[int, float]:
    """Seconds since each trial's last heartbeat, by the database's clock; trials without one are absent."""
    if not trial_ids:
        return {}
    from optuna.storages._rdb import models

    table = models.TrialHeartbeatModel.__table__
    with store._rdb(storage).engine.connect() as connection:
        now = connection.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar()
        rows = connection.execute(
            sqlalchemy.select(table.c.trial_id, table.c.heartbeat).where(table.c.trial_id.in_(trial_ids))
        ).all()
    now = now.replace(tzinfo=None)  # PostgreSQL's now() has a zone, the stored beats none (as optuna does)
    return {trial_id: (now - beat.replace(tzinfo=None)).total_seconds() for trial_id, beat in rows}


def _requeue(study: optuna.Study, trial_id: int) -> bool:
    """Queue a copy of the failed trial ``trial_id`` (same configuration, slot or seed); False past the retries.

    The copy is marked as optuna's ``RetryFailedTrialCallback`` marks one (:func:`~optarena.arena.records.retry_attrs`).
    """
    failed = study._storage.get_trial(trial_id)
    attrs, retries = records.retry_attrs(failed)
    if retries > MAX_RETRIES:
        return False
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING,
            params=failed.params,
            distributions=failed.distributions,
            user_attrs=failed.user_attrs,
            system_attrs=attrs,
        )
    )
    return True


def reclaim(study: optuna.Study, grace: float) -> list[int]:
    """Fail and queue again the RUNNING trials of ``study`` whose owner is gone; their numbers.

    Call it under the store lock (:func:`optarena.arena.store.lock`).
    """
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return []
    ages = heartbeat_ages(study._storage, [t._trial_id for t in running])
    reclaimed = []
    for trial in running:
        if not owner_is_gone(records.owner_of(trial), ages.get(trial._trial_id), grace):
            continue
        try:
            if not study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # its owner finished it meanwhile
        _requeue(study, trial._trial_id)
        reclaimed.append(trial.number)
    return reclaimed


def _take(study: optuna.Study, owner: dict[str, Any]) -> int | None:
    """Take one waiting trial of ``study`` for ``owner`` (under the store lock); None if none waits."""
    trial_id = study._pop_waiting_trial_id()  # optuna: atomic WAITING -> RUNNING, or None
    if trial_id is not None:
        study._storage.record_heartbeat(trial_id)
        records.set_owner(study._storage, trial_id, owner)
    return trial_id


@contextmanager
def heartbeat(storage: Any, trial_id: int, interval: float) -> Iterator[None]:
    """Record ``trial_id``'s heartbeat every ``interval`` seconds while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            with contextlib.suppress(Exception):  # a missed beat; the grace period allows several
                storage.record_heartbeat(trial_id)

    thread = threading.Thread(target=beat, name=f"optarena-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# --- queueing the budget ----------------------------------------------------------------------------


def _studies(
    experiment: Experiment, task: Task, optimizer: str, storage: Any, describe: bool = False
) -> tuple[optuna.Study, optuna.Study]:
    return (
        _study(experiment, task, optimizer, "tune", storage=storage, describe=describe),
        _study(experiment, task, optimizer, "final", storage=storage, describe=describe),
    )


def _plain(value: Any) -> Any:
    """``value`` as the store gives it back (JSON: tuples become lists, paths strings)."""
    return json.loads(json.dumps(value, default=str))


def conflicts(experiment: Experiment, storage: Any) -> list[str]:
    """The settings of ``experiment`` that differ from those its studies in ``storage`` were run with.

    Only settings that change what the stored runs mean count (:data:`MEANING`, and the definition
    of a variant already run); growing an experiment (tasks, optimizers, variants, trials, seeds) does not.
    """
    asked = _plain(experiment.to_dict())
    defaults = _plain({key: Experiment.__dataclass_fields__[key].default for key in MEANING})
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
    and :class:`~optarena.arena.store.StoreError` if the store cannot be written.
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
    queued = 0
    kept = [t for t in tune.get_trials(deepcopy=False) if t.state != TrialState.FAIL]
    slots = {records.slot_of(t) for t in kept} - {None}
    # Trials without a slot were run one after another by optarena before the queue: each fills one.
    unslotted = sum(records.slot_of(t) is None for t in kept)
    missing = [slot for slot in range(experiment.trials) if slot not in slots][unslotted:]
    configurations = qmc_configurations(experiment, optimizer) if experiment.sampler == "qmc" and missing else None
    for slot in missing:
        params = configurations[slot] if configurations is not None else {}
        records.enqueue_tune(tune, slot, params)
        queued += 1
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
                _requeue(study, trial_id)
    except (optuna.exceptions.UpdateFinishedTrialError, *store.DATABASE_ERRORS, store.StoreError):
        pass  # already closed by another process, or the store is gone: nothing more to save


def _run(
    experiment: Experiment,
    study: optuna.Study,
    trial_id: int,
    objective: Callable[[optuna.Trial], float],
    storage: Any,
    interval: float,
) -> None:
    """Run the trial ``trial_id`` this process took, beating while it trains, and tell its outcome."""
    if experiment.sampler != "qmc" and study.study_name.endswith("/tune"):  # QMC's configurations are queued
        number = study._storage.get_trial(trial_id).number
        study.sampler = make_sampler(experiment, experiment.trials, trial_number=number)
    trial = optuna.Trial(study, trial_id)
    state, value = TrialState.COMPLETE, None
    with heartbeat(study._storage, trial_id, interval):
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
    queued again as they are met (:func:`reclaim`).
    """
    storage = storage if storage is not None else store.open_storage(experiment.storage_url)
    rdb = store._rdb(storage)
    interval = heartbeat_seconds or rdb.heartbeat_interval or DEFAULT_HEARTBEAT
    grace = grace_seconds or rdb.grace_period or (2 * interval if rdb.heartbeat_interval else DEFAULT_GRACE)
    owner = owner_record(interval, grace)
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
                    reclaim(tune, grace)
                    trial_id = _take(tune, owner)
                    if trial_id is not None:
                        taken = (task, optimizer, tune, trial_id, tune_objective(experiment, task, optimizer))
                        break
                    if _has_open(tune):
                        open_anywhere = True  # its reruns wait for the best configuration
                        continue
                    reclaim(final, grace)
                    trial_id = _take(final, owner)
                    if trial_id is not None:
                        taken = (task, optimizer, final, trial_id, final_objective(experiment, task, optimizer, tune))
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
            if progress is not None:
                if study.study_name.endswith("/tune"):
                    label = f"{task.name}/{optimizer}: trial {len(store.finished(study))}/{experiment.trials}"
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
