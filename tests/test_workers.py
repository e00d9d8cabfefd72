"""Arena sweeps shared by worker processes through a real PostgreSQL server.

CI (`.ci/run`) installs and starts PostgreSQL and sets OPTARENA_TEST_POSTGRES; there a missing
server fails these tests instead of skipping them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from optarena.arena.spec.experiment import Experiment
from optarena.arena.study import store
from optarena.arena.study.protocol import compare

REPO = Path(__file__).resolve().parents[1]
POSTGRES = os.environ.get("OPTARENA_TEST_POSTGRES")

if POSTGRES is None and os.environ.get("CI") == "true":
    raise RuntimeError("CI must provide a PostgreSQL server: OPTARENA_TEST_POSTGRES is not set (see .ci/run)")
pytestmark = pytest.mark.skipif(POSTGRES is None, reason="set OPTARENA_TEST_POSTGRES to a PostgreSQL URL")


def experiment(name: str, out: Path, storage: str | None, **overrides) -> Experiment:
    settings = dict(
        name=name,
        tasks=["digits"],
        optimizers=["adamw", "lion"],
        trials=4,
        seeds=2,
        epochs=3,
        subset=300,
        sampler="qmc",
        prune=False,
        threads=1,
        out=out,
        storage=storage,
    )
    return Experiment(**{**settings, **overrides})


def optarena(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "optarena", *args], cwd=REPO, **kwargs)


def trials_of(url: str, name: str) -> dict[tuple[str, str], list[optuna.trial.FrozenTrial]]:
    out = {}
    for summary in optuna.get_all_study_summaries(store.open_storage(url), include_best_trial=False):
        if summary.study_name.startswith(f"{name}/"):
            _, task, optimizer, phase = summary.study_name.split("/")
            study = optuna.load_study(study_name=summary.study_name, storage=url)
            out[(f"{task}/{optimizer}", phase)] = study.get_trials(deepcopy=False)
    return out


def content(trial: optuna.trial.FrozenTrial) -> tuple:
    """What a trial found, without its timings (wall time differs from run to run)."""
    records = [{k: v for k, v in row.items() if k != "wall_time"} for row in trial.user_attrs["records"]]
    return (trial.params, trial.value, records)


def by_slot(trials: list[optuna.trial.FrozenTrial], key: str) -> dict[int, tuple]:
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    slots = [t.user_attrs[key] for t in done]
    assert len(slots) == len(set(slots)), slots  # every slot done exactly once
    return {t.user_attrs[key]: content(t) for t in done}


def test_two_workers_finish_the_study_exactly_once_like_one_process(tmp_path):
    name = f"workers-{uuid.uuid4().hex[:8]}"
    shared = experiment(name, tmp_path / "shared", POSTGRES)
    prepare = optarena(
        "compare", "--name", name, "--storage", POSTGRES, "--out", str(tmp_path / "shared"),
        "--task", "digits", "--optimizers", "adamw", "lion", "--trials", "4", "--seeds", "2", "--epochs", "3",
        "--subset", "300", "--sampler", "qmc", "--no-prune", "--threads", "1", "--prepare",
    )  # fmt: skip
    assert prepare.wait(timeout=300) == 0
    workers = [optarena("worker", "--storage", POSTGRES, "--study", name, "--poll", "0.5") for _ in range(2)]
    assert [w.wait(timeout=600) for w in workers] == [0, 0]

    found = trials_of(POSTGRES, name)
    assert len(found) == 4  # 2 optimizers × (tune, final)
    for (pair, phase), trials in found.items():
        assert all(t.state == TrialState.COMPLETE for t in trials), pair
        assert len(trials) == (shared.trials if phase == "tune" else shared.seeds)

    # The same experiment in one process, on SQLite: the same configurations and the same results.
    alone = experiment(name, tmp_path / "alone", None)
    compare(alone)
    single = trials_of(alone.storage_url, name)
    assert set(single) == set(found)
    for key, trials in found.items():
        slot = "slot" if key[1] == "tune" else "seed"
        assert by_slot(trials, slot) == by_slot(single[key], slot), key


KILL_AT_EPOCH_2 = """
import os, signal, sys
from optarena.arena.study import objectives
real_train = objectives.train
def train(*args, on_epoch=None, **kwargs):
    def report(epoch, row):
        if on_epoch is not None:
            on_epoch(epoch, row)
        if epoch == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_train(*args, on_epoch=report, **kwargs)
objectives.train = train
from optarena.arena.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_workers_trial_is_failed_and_retried(tmp_path):
    # On the machine of the killed worker its dead pid frees the trial at once; from another machine its
    # heartbeat would (tests/test_store_concurrency.py covers both).
    name = f"killed-{uuid.uuid4().hex[:8]}"
    exp = experiment(name, tmp_path, POSTGRES, optimizers=["adamw"], trials=3, seeds=1, epochs=6)
    compare(exp, prepare_only=True)
    beats = ["--heartbeat", "1", "--grace", "3", "--poll", "0.5"]
    doomed = subprocess.Popen(
        [sys.executable, "-c", KILL_AT_EPOCH_2, "worker", "--storage", POSTGRES, "--study", name, *beats], cwd=REPO
    )
    assert doomed.wait(timeout=300) == -signal.SIGKILL
    tune = trials_of(POSTGRES, name)[("digits/adamw", "tune")]
    running = [t for t in tune if t.state == TrialState.RUNNING]
    assert len(running) == 1  # what the dead worker left

    survivor = optarena("worker", "--storage", POSTGRES, "--study", name, *beats)
    assert survivor.wait(timeout=600) == 0
    found = trials_of(POSTGRES, name)
    tune = found[("digits/adamw", "tune")]
    failed = [t for t in tune if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [running[0].number]  # failed: its worker is gone
    retried = [t for t in tune if t.system_attrs.get("failed_trial") == running[0].number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == running[0].params and retried[0].user_attrs["slot"] == running[0].user_attrs["slot"]
    assert sorted(by_slot(tune, "slot")) == [0, 1, 2]  # the budget, exactly
    assert sorted(by_slot(found[("digits/adamw", "final")], "seed")) == [1]


def test_worker_names_a_missing_study_and_how_to_set_it_up():
    run = subprocess.run(
        [sys.executable, "-m", "optarena", "worker", "--storage", POSTGRES, "--study", "no-such-experiment"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "no experiment 'no-such-experiment'" in run.stdout and "--prepare" in run.stdout
