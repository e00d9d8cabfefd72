"""The results store: Optuna's RDB storage (SQLite under the output directory by default).

Every tuning trial and every seeded rerun is an Optuna trial. A trial keeps its hyperparameters,
its objective value, its per-epoch validation metric as intermediate values, and in user attributes
the full per-epoch records and diagnostics (written and read by :mod:`optarena.arena.study.records`
alone). Studies are named ``experiment/task/optimizer/phase`` with phase ``tune`` or ``final``.

Several processes may share a store (:mod:`optarena.arena.study.workers`); :func:`lock` serialises the
few steps that must not interleave (queueing the budget, taking a trial, reclaiming a dead
process's trial). A store that cannot be read or written raises :class:`StoreError`, whose message
names the store and what is wrong with it, in one line.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sqlite3
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

PHASES = ("tune", "final")


class StoreError(RuntimeError):
    """The store cannot be used as asked (unreadable, damaged, read-only, busy); the message says which."""


def describe(url: str) -> str:
    """``url`` as it may be printed: a password is masked."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception:  # not a URL SQLAlchemy parses: say it as given
        return url
    return parsed.render_as_string(hide_password=True) if parsed.password else url


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for other databases and in-memory SQLite.

    Understands SQLite URI filenames too (``sqlite:///file:path?mode=ro&uri=true``).
    """
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception:
        return None
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if parsed.query.get("uri") in ("true", "1", "True") and database.startswith("file:"):
        if parsed.query.get("mode") == "memory":
            return None
        database = urlsplit(database).path if database.startswith("file://") else database[len("file:") :]
    if not database or database == ":memory:":
        return None
    return Path(database)


READ_ONLY_SIGNS = ("readonly", "read-only", "read only", "permission denied")
DAMAGED_SIGNS = ("not a database", "malformed", "disk image", "corrupt", "file is encrypted")


def _reason(error: BaseException) -> str:
    """The database's own words for ``error``: the first line of the innermost driver error."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    for candidate in reversed(seen):
        text = str(candidate).strip()
        if text and not isinstance(candidate, optuna.exceptions.StorageInternalError):
            return text.splitlines()[0]
    return type(error).__name__


def store_error(url: str, error: BaseException) -> StoreError:
    """A one-line :class:`StoreError` naming the store ``url`` and what is wrong with it."""
    reason = _reason(error)
    lowered = reason.lower()
    where = describe(url)
    if any(sign in lowered for sign in READ_ONLY_SIGNS):
        return StoreError(
            f"Store {where} is read-only ({reason}): compare and workers must write to it; "
            "'optarena report' can still read it"
        )
    if any(sign in lowered for sign in DAMAGED_SIGNS):
        return StoreError(
            f"Store {where} is damaged or not an optarena store ({reason}); "
            "restore it from a copy, or move it away to start afresh"
        )
    if "database is locked" in lowered or "busy" in lowered:
        return StoreError(f"Store {where} is busy ({reason}): another process held it too long; run it again")
    return StoreError(f"Store {where} failed: {reason}")


DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.SQLAlchemyError,
    sqlite3.Error,
    optuna.exceptions.StorageInternalError,
)


@contextmanager
def guarded(url: str) -> Iterator[None]:
    """Turn a database error raised in the block into a one-line :class:`StoreError` about ``url``."""
    try:
        yield
    except DATABASE_ERRORS as error:
        raise store_error(url, error) from error


_STORAGES: dict[tuple[str, int | None, int | None], optuna.storages.RDBStorage] = {}
SQLITE_BUSY_SECONDS = 60  # how long a SQLite writer waits for another process's write (sqlite3 waits 5 s)


def open_storage(
    url: str, heartbeat_interval: int | None = None, grace_period: int | None = None
) -> optuna.storages.RDBStorage:
    """An RDB storage for ``url`` (any SQLAlchemy URL: sqlite:///..., postgresql://...), opened once per process.

    ``heartbeat_interval`` and ``grace_period`` (seconds) are what a worker using this storage
    records and promises (:func:`optarena.arena.study.workers.work`): it beats every interval, and a trial
    of its silent for the grace period may be failed and queued again by another process.
    """
    key = (url, heartbeat_interval, grace_period)
    if key not in _STORAGES:
        path = sqlite_file(url)
        engine_kwargs: dict[str, Any] = {}
        if path is not None:
            engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_SECONDS}
            if not path.parent.is_dir():
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as error:
                    raise StoreError(f"Store {describe(url)} cannot be created: {error}") from error
        try:
            # Heartbeats are "experimental" in optuna; tests/test_workers.py covers what we rely on.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                beats: dict[str, Any] = {}
                if heartbeat_interval is not None:
                    beats = dict(heartbeat_interval=heartbeat_interval, grace_period=grace_period)
                _STORAGES[key] = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **beats)
        except DATABASE_ERRORS as error:
            raise store_error(url, error) from error
        except Exception as error:  # a malformed URL, a missing driver: SQLAlchemy's errors share no base with ours
            raise ValueError(f"Invalid storage: cannot open {describe(url)!r}: {_reason(error)}") from error
    return _STORAGES[key]


# --- one process at a time ---------------------------------------------------------------------------

_LOCAL_LOCKS: dict[str, threading.Lock] = {}
# One key for every optarena process on a PostgreSQL database (advisory locks are per database).
_ADVISORY_KEY = int.from_bytes(hashlib.sha256(b"optarena store lock").digest()[:8], "big", signed=True)


def _rdb(storage: Any) -> optuna.storages.RDBStorage:
    """The RDB storage behind ``storage`` (itself, or what optuna's cache wraps)."""
    return getattr(storage, "_backend", storage)


@contextmanager
def lock(storage: Any) -> Iterator[None]:
    """Hold the store-wide lock of ``storage`` while the block runs; it waits for another holder.

    A SQLite store is locked with ``flock`` on a file beside it (``optarena.db.lock``), PostgreSQL
    with a transaction-level advisory lock, any other database with a row lock on optuna's
    ``version_info`` row (untested). The operating system or the server releases the lock of a
    process that dies, so a killed holder never leaves the store locked.
    """
    rdb = _rdb(storage)
    url = rdb.url
    path = sqlite_file(url)
    if path is not None:
        import fcntl

        lock_path = path.with_name(path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise StoreError(
                f"Store {describe(url)} is read-only (cannot create its lock file {lock_path}: {error.strerror}): "
                "compare and workers must write to it; 'optarena report' can still read it"
            ) from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock
        return
    if rdb.engine.dialect.name == "sqlite":  # in memory: this process is the only user
        with _LOCAL_LOCKS.setdefault(url, threading.Lock()):
            yield
        return
    with guarded(url), rdb.engine.begin() as connection:  # the lock lasts until this transaction ends
        if rdb.engine.dialect.name == "postgresql":
            connection.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_KEY})
        else:
            from optuna.storages._rdb import models

            table = models.VersionInfoModel.__table__
            connection.execute(sqlalchemy.select(table.c.version_info_id).with_for_update())
        yield


def check_writable(storage: Any) -> None:
    """Raise :class:`StoreError` if ``storage`` cannot be written (before any training is spent on it)."""
    rdb = _rdb(storage)
    if rdb.engine.dialect.name != "sqlite":
        return  # a server says so at the first write, which comes before any training too
    with guarded(rdb.url), rdb.engine.connect() as connection:
        version = connection.exec_driver_sql("PRAGMA user_version").scalar()
        connection.exec_driver_sql(f"PRAGMA user_version = {int(version or 0)}")  # a write that changes nothing
        connection.commit()


def study_name(experiment: str, task: str, optimizer: str, phase: str) -> str:
    if phase not in PHASES:
        raise ValueError(f"Invalid phase: {phase!r}; expected one of {PHASES}")
    return f"{experiment}/{task}/{optimizer}/{phase}"


def parse_study_name(name: str) -> tuple[str, str, str, str] | None:
    """(experiment, task, optimizer, phase) of an optarena study's name; None for any other study."""
    parts = name.split("/")
    if len(parts) != 4 or parts[3] not in PHASES:
        return None
    return parts[0], parts[1], parts[2], parts[3]


def versions() -> dict[str, str]:
    import numpy
    import torch

    from optarena.version import __version__

    return {
        "optarena": __version__,
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def finished(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that count against the budget: completed or pruned."""
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def list_experiments(url: str) -> list[str]:
    with guarded(url):
        summaries = optuna.get_all_study_summaries(open_storage(url), include_best_trial=False)
    return sorted({s.study_name.split("/")[0] for s in summaries})
