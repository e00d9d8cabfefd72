"""The results store: Optuna's RDB storage (SQLite under the output directory by default).

Every tuning trial and every seeded rerun is an Optuna trial. A trial keeps its hyperparameters,
its objective value, its per-epoch validation metric as intermediate values, and in user attributes
the full per-epoch records and diagnostics. Studies are named ``experiment/task/optimizer/phase``
with phase ``tune`` or ``final``; the experiment's configuration and the software versions are
user attributes of each study.
"""

from __future__ import annotations

import platform
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

PHASES = ("tune", "final")


def default_storage_url(out_dir: Path) -> str:
    return f"sqlite:///{(Path(out_dir) / 'optarena.db').resolve()}"


_STORAGES: dict[tuple[str, int | None, int | None], optuna.storages.BaseStorage] = {}


def open_storage(
    url: str, heartbeat_interval: int | None = None, grace_period: int | None = None
) -> optuna.storages.BaseStorage:
    """An RDB storage for ``url`` (any SQLAlchemy URL: sqlite:///..., postgresql://...), opened once per process.

    With ``heartbeat_interval`` (seconds), running trials record heartbeats; a trial silent for
    ``grace_period`` seconds is failed by the next worker to look, and a copy is queued again.
    """
    key = (url, heartbeat_interval, grace_period)
    if key not in _STORAGES:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            # Heartbeats are "experimental" in optuna; tests/test_workers.py covers what we rely on.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                beats: dict[str, Any] = {}
                if heartbeat_interval is not None:
                    beats = dict(
                        heartbeat_interval=heartbeat_interval,
                        grace_period=grace_period,
                        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
                    )
                _STORAGES[key] = optuna.storages.RDBStorage(url, **beats)
        except Exception as error:  # SQLAlchemy's errors do not share a base with ours
            raise ValueError(f"Invalid storage: cannot open {url!r}: {error}") from error
    return _STORAGES[key]


def study_name(experiment: str, task: str, optimizer: str, phase: str) -> str:
    if phase not in PHASES:
        raise ValueError(f"Invalid phase: {phase!r}; expected one of {PHASES}")
    return f"{experiment}/{task}/{optimizer}/{phase}"


def versions() -> dict[str, str]:
    import numpy
    import torch

    import optarena

    return {
        "optarena": optarena.__version__,
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def fail_interrupted(study: optuna.Study) -> int:
    """Mark trials left RUNNING by a killed process as FAILED; returns how many.

    Single-process use only: a live worker's running trial would be failed too (distributed
    workers rely on Optuna's heartbeat instead).
    """
    count = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        count += 1
    return count


def finished(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that count against the budget: completed or pruned."""
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


@dataclass
class StudyRecord:
    """What the report needs from one (task, optimizer) pair."""

    task: str
    optimizer: str
    tune: list[FrozenTrial] = field(default_factory=list)
    final: list[FrozenTrial] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)


def load_experiment(url: str, experiment: str) -> dict[tuple[str, str], StudyRecord]:
    """Every (task, optimizer) of ``experiment`` in the store, with its finished trials."""
    storage = open_storage(url)
    records: dict[tuple[str, str], StudyRecord] = {}
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        parts = summary.study_name.split("/")
        if len(parts) != 4 or parts[0] != experiment or parts[3] not in PHASES:
            continue
        _, task, optimizer, phase = parts
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        record = records.setdefault((task, optimizer), StudyRecord(task, optimizer))
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if phase == "tune":
            record.tune = trials
            record.attrs = dict(study.user_attrs)
        else:
            record.final = [t for t in trials if t.state == TrialState.COMPLETE]
    return records


def list_experiments(url: str) -> list[str]:
    storage = open_storage(url)
    names = {s.study_name.split("/")[0] for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    return sorted(names)
