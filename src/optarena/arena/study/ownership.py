"""Who runs a trial: a process records itself in the trial it takes and beats while it trains.

A process that takes a trial (under the store's lock, :func:`optarena.arena.study.store.lock`)
records its host, machine, pid and the pid's start time in it, and a heartbeat every ``heartbeat``
seconds while it trains. Another process fails a RUNNING trial, and queues a copy of it (same
configuration, same slot or seed), only when its owner is provably gone: on the same machine, when
that pid no longer runs (or is a newer process with the same number); from another machine, when
its heartbeat is older than the grace period the owner declared. A live trial is never failed by
another process on its machine, and a killed single compare resumes at once when run again.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import TrialState

from optarena.arena.study import records, store

DEFAULT_HEARTBEAT = 10  # seconds between a running trial's heartbeats
DEFAULT_GRACE = 60  # seconds of silence after which a trial from another machine is given up
MAX_RETRIES = 3  # a trial that kills every process that runs it is queued again at most this often


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


def requeue(study: optuna.Study, trial_id: int) -> bool:
    """Queue a copy of the failed trial ``trial_id`` (same configuration, slot or seed); False past the retries.

    The copy is marked as optuna's ``RetryFailedTrialCallback`` marks one
    (:func:`~optarena.arena.study.records.retry_attrs`).
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

    Call it under the store lock (:func:`optarena.arena.study.store.lock`).
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
        requeue(study, trial._trial_id)
        reclaimed.append(trial.number)
    return reclaimed


def take(study: optuna.Study, owner: dict[str, Any]) -> int | None:
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
