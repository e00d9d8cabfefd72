"""Several processes on one store, and stores that cannot be used.

Compares and workers on one store share its budget: every tuning slot and seed runs exactly once,
and no process fails a trial another live process is running; a process killed with SIGKILL has its
trial failed and queued again (at once on its machine, where its pid is gone; from another machine
once its heartbeat is older than its grace period). A second compare that would change what the
stored runs mean is refused. A damaged, foreign or read-only store is one line, not a traceback.

Each concurrency test runs on SQLite and on PostgreSQL (OPTARENA_TEST_POSTGRES; under CI=true a
missing server fails instead of skipping, as in tests/test_workers.py). Processes meet at fixed
points — a trial marks a file at its first epoch and waits for another process's mark — never by
sleeping and hoping.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from optarena.arena.spec.experiment import Experiment, default_storage_url
from optarena.arena.study import objectives, ownership, records, store, workers
from optarena.arena.study.protocol import compare
from optarena.arena.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
POSTGRES = os.environ.get("OPTARENA_TEST_POSTGRES")
TIMEOUT = 300  # seconds any one process may take; each takes a few

# Runs the optarena CLI with its training patched: the first trial, at its first epoch, writes its pid
# to $TEST_MARK, then SIGKILLs itself ($TEST_KILL) or waits until the file $TEST_WAIT_FOR exists.
DRIVER = r"""
import os, signal, sys, time
from pathlib import Path
from optarena.arena.study import objectives

real_train, calls = objectives.train, []
mark, wait_for, kill = (os.environ.get(k) for k in ("TEST_MARK", "TEST_WAIT_FOR", "TEST_KILL"))

def train(*args, on_epoch=None, **kwargs):
    calls.append(1)
    first = len(calls) == 1

    def report(epoch, row):
        if on_epoch is not None:
            on_epoch(epoch, row)
        if first and epoch == 1:
            if mark:
                Path(mark + ".tmp").write_text(str(os.getpid()))
                os.replace(mark + ".tmp", mark)
            if kill:
                os.kill(os.getpid(), signal.SIGKILL)
            if wait_for:
                deadline = time.monotonic() + 240
                while not Path(wait_for).exists():
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"timed out waiting for {wait_for}")
                    time.sleep(0.02)

    return real_train(*args, on_epoch=report, **kwargs)

objectives.train = train
from optarena.arena.cli import main
sys.exit(main(sys.argv[1:]))
"""

TASK = "rosenbrock"  # a 2-D function: a trial trains in a fraction of a second
SETTINGS = dict(tasks=[TASK], optimizers=["adamw", "sgdm"], trials=6, seeds=2, epochs=2, threads=1)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql" and POSTGRES is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must provide a PostgreSQL server: OPTARENA_TEST_POSTGRES is not set (see .ci/run)")
        pytest.skip("set OPTARENA_TEST_POSTGRES to a PostgreSQL URL")
    return request.param


def storage_url(backend: str, out: Path) -> str:
    return default_storage_url(out) if backend == "sqlite" else POSTGRES


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"  # PostgreSQL is shared by every test: one name each


def experiment(name: str, out: Path, url: str, **overrides) -> Experiment:
    return Experiment(**{**SETTINGS, "name": name, "out": out, "storage": url, **overrides})


def compare_argv(exp: Experiment, *extra: str) -> list[str]:
    return [
        "compare", "--name", exp.name, "--storage", exp.storage_url, "--out", str(exp.out),
        "--task", *exp.tasks, "--optimizers", *exp.optimizers, "--trials", str(exp.trials),
        "--seeds", str(exp.seeds), "--epochs", str(exp.epochs), "--threads", "1", *extra,
    ]  # fmt: skip


def start(log: Path, *argv: str, mark: Path | None = None, wait_for: Path | None = None, kill: bool = False):
    env = {**os.environ, "COLUMNS": "400"}
    for key, value in (("TEST_MARK", mark), ("TEST_WAIT_FOR", wait_for), ("TEST_KILL", "1" if kill else None)):
        env.pop(key, None)
        if value is not None:
            env[key] = str(value)
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", DRIVER, *argv], cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    process.log = log  # type: ignore[attr-defined]
    STARTED.append(process)
    return process


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_process_left_behind():
    """A test that fails half-way leaves no process of its own running."""
    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait()


def finish(process: subprocess.Popen) -> int:
    try:
        return process.wait(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_for_mark(mark: Path, process: subprocess.Popen) -> int:
    """Wait until ``process`` reached its mark (returns its pid); fail if it ends before."""
    deadline = time.monotonic() + TIMEOUT
    while not mark.exists():
        if process.poll() is not None:
            pytest.fail(f"{process.args[3:5]} ended ({process.returncode}) before its mark:\n{process.log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no mark {mark} after {TIMEOUT} s")
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.05)  # returns early only if it ends
    return int(mark.read_text())


def trials_of(url: str, name: str, optimizer: str, phase: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=store.study_name(name, TASK, optimizer, phase), storage=url)
    return study.get_trials(deepcopy=False)


def assert_budget_met_exactly(exp: Experiment, failed: int = 0) -> list[optuna.trial.FrozenTrial]:
    """Every slot and seed once, nothing open; returns the FAIL trials (``failed`` of them)."""
    fails = []
    for optimizer in exp.optimizers:
        tune = trials_of(exp.storage_url, exp.name, optimizer, "tune")
        final = trials_of(exp.storage_url, exp.name, optimizer, "final")
        assert not [t for t in tune + final if t.state in (TrialState.WAITING, TrialState.RUNNING)]
        done = [t for t in tune if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        assert sorted(t.user_attrs["slot"] for t in done) == list(range(exp.trials)), optimizer
        reruns = [t for t in final if t.state == TrialState.COMPLETE]
        assert sorted(t.user_attrs["seed"] for t in reruns) == list(range(1, exp.seeds + 1)), optimizer
        fails += [t for t in tune + final if t.state == TrialState.FAIL]
    assert len(fails) == failed, [(t.number, t.system_attrs.get(records.OWNER)) for t in fails]
    return fails


def owners(exp: Experiment) -> set[int]:
    return {
        t.system_attrs[records.OWNER]["pid"]
        for optimizer in exp.optimizers
        for phase in ("tune", "final")
        for t in trials_of(exp.storage_url, exp.name, optimizer, phase)
    }


# --- several processes --------------------------------------------------------------------------------------


def test_two_compares_at_once_share_the_budget_exactly(backend, tmp_path):
    out = tmp_path / "out"  # on SQLite both use the default store in it, as two runs of one command do
    exp = experiment(unique("two"), out, storage_url(backend, out))
    first_mark, second_mark = tmp_path / "first.mark", tmp_path / "second.mark"
    first = start(tmp_path / "first.log", *compare_argv(exp), mark=first_mark, wait_for=second_mark)
    first_pid = wait_for_mark(first_mark, first)  # the first holds a RUNNING trial until the second trains too
    second = start(tmp_path / "second.log", *compare_argv(exp), mark=second_mark, wait_for=first_mark)
    results = [finish(first), finish(second)]
    assert results == [0, 0], (first.log.read_text(), second.log.read_text())
    assert_budget_met_exactly(exp, failed=0)
    assert {first_pid, int(second_mark.read_text())} <= owners(exp)  # both trained, and each only its own trials

    # TPE draws its start-up configurations per trial: distinct, and as one process alone draws them.
    alone = experiment(exp.name, tmp_path / "alone", None)
    compare(alone)
    startup = 3  # TPESampler(n_startup_trials=min(5, trials // 2))
    for optimizer in exp.optimizers:
        shared = {t.number: t.params for t in trials_of(exp.storage_url, exp.name, optimizer, "tune")}
        single = {t.number: t.params for t in trials_of(alone.storage_url, exp.name, optimizer, "tune")}
        assert [shared[n] for n in range(startup)] == [single[n] for n in range(startup)]
        assert len({shared[n]["lr"] for n in range(startup)}) == startup


# Queues an experiment (JSON in argv[1]) and prints how many trials it queued. With $TEST_PAUSE it stops
# inside the store lock, before looking at the store, until $TEST_RELEASE exists; with $TEST_REACHED it
# marks the moment it asks for the lock.
PREPARE = r"""
import json, os, sys, time
from contextlib import contextmanager
from pathlib import Path
from optarena.arena.spec.experiment import Experiment
from optarena.arena.study import store, workers

pause, release, reached = (os.environ.get(k) for k in ("TEST_PAUSE", "TEST_RELEASE", "TEST_REACHED"))
real_conflicts, real_lock = workers.conflicts, store.lock

def conflicts(*args, **kwargs):
    Path(pause).write_text(str(os.getpid()))
    deadline = time.monotonic() + 240
    while not Path(release).exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {release}")
        time.sleep(0.02)
    return real_conflicts(*args, **kwargs)

@contextmanager
def lock(storage):
    Path(reached).write_text(str(os.getpid()))
    with real_lock(storage):
        yield

if pause:
    workers.conflicts = conflicts
if reached:
    store.lock = lock
print(workers.prepare(Experiment(**json.loads(sys.argv[1]))))
"""


def test_two_prepares_at_once_queue_each_slot_and_seed_once(backend, tmp_path):
    exp = experiment(unique("prep"), tmp_path, storage_url(backend, tmp_path))
    definition = json.dumps({**SETTINGS, "name": exp.name, "out": str(exp.out), "storage": exp.storage_url})
    paused, reached, release = tmp_path / "paused", tmp_path / "reached", tmp_path / "release"

    def prepare(log: str, **env: Path) -> subprocess.Popen:
        environment = {**os.environ, **{f"TEST_{key.upper()}": str(value) for key, value in env.items()}}
        with open(tmp_path / log, "w") as output:
            process = subprocess.Popen([sys.executable, "-c", PREPARE, definition], cwd=REPO, env=environment,
                                       stdout=output, stderr=subprocess.STDOUT)  # fmt: skip
        process.log = tmp_path / log  # type: ignore[attr-defined]
        STARTED.append(process)
        return process

    first = prepare("first.log", pause=paused, release=release)
    wait_for_mark(paused, first)  # it holds the lock and has queued nothing yet
    second = prepare("second.log", reached=reached)
    wait_for_mark(reached, second)  # it asks for the lock while the first holds it
    release.touch()
    assert [finish(first), finish(second)] == [0, 0], (first.log.read_text(), second.log.read_text())
    queued = [int(process.log.read_text().split()[-1]) for process in (first, second)]
    assert queued == [len(exp.optimizers) * (exp.trials + exp.seeds), 0]
    for optimizer in exp.optimizers:
        slots = [t.user_attrs["slot"] for t in trials_of(exp.storage_url, exp.name, optimizer, "tune")]
        seeds = [t.user_attrs["seed"] for t in trials_of(exp.storage_url, exp.name, optimizer, "final")]
        assert sorted(slots) == list(range(exp.trials)) and sorted(seeds) == list(range(1, exp.seeds + 1))


def test_a_compare_joining_a_running_worker_leaves_its_trial_alone(backend, tmp_path):
    exp = experiment(unique("join"), tmp_path, storage_url(backend, tmp_path), optimizers=["adamw"], trials=3, seeds=1)
    compare(exp, prepare_only=True)
    worker_mark, compare_mark = tmp_path / "worker.mark", tmp_path / "compare.mark"
    worker = start(
        tmp_path / "worker.log", "worker", "--storage", exp.storage_url, "--study", exp.name, "--poll", "0.2",
        mark=worker_mark, wait_for=compare_mark,
    )  # fmt: skip
    worker_pid = wait_for_mark(worker_mark, worker)  # its first trial is RUNNING, and waits for the compare
    joining = start(tmp_path / "compare.log", *compare_argv(exp), mark=compare_mark)
    results = [finish(worker), finish(joining)]
    assert results == [0, 0], (worker.log.read_text(), joining.log.read_text())
    assert_budget_met_exactly(exp, failed=0)
    first = next(t for t in trials_of(exp.storage_url, exp.name, "adamw", "tune") if t.user_attrs["slot"] == 0)
    assert first.state == TrialState.COMPLETE and first.system_attrs[records.OWNER]["pid"] == worker_pid
    assert int(compare_mark.read_text()) in owners(exp)  # the compare ran trials of its own meanwhile


def test_a_killed_workers_trial_is_retried_at_once_on_its_machine(backend, tmp_path):
    exp = experiment(unique("kill"), tmp_path, storage_url(backend, tmp_path), optimizers=["adamw"], trials=3, seeds=1)
    compare(exp, prepare_only=True)
    # An hour of grace: only the dead pid, not the heartbeat, can free the trial within the test's time.
    beats = ["--heartbeat", "1800", "--grace", "3600"]
    mark = tmp_path / "doomed.mark"
    doomed = start(tmp_path / "doomed.log", "worker", "--storage", exp.storage_url, "--study", exp.name, *beats,
                   mark=mark, kill=True)  # fmt: skip
    assert finish(doomed) == -signal.SIGKILL
    running = [t for t in trials_of(exp.storage_url, exp.name, "adamw", "tune") if t.state == TrialState.RUNNING]
    assert len(running) == 1 and running[0].system_attrs[records.OWNER]["pid"] == int(mark.read_text())

    rerun = start(tmp_path / "rerun.log", *compare_argv(exp, *beats))
    assert finish(rerun) == 0, rerun.log.read_text()
    (failed,) = assert_budget_met_exactly(exp, failed=1)
    assert failed.number == running[0].number
    tune = trials_of(exp.storage_url, exp.name, "adamw", "tune")
    (copy,) = [t for t in tune if t.system_attrs.get("failed_trial") == failed.number]
    assert copy.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert copy.params == failed.params and copy.user_attrs["slot"] == failed.user_attrs["slot"]


def _age_heartbeat(url: str, trial_id: int, hours: float) -> None:
    from optuna.storages._rdb import models

    table = models.TrialHeartbeatModel.__table__
    engine = store.open_storage(url).engine
    with engine.begin() as connection:
        beat = connection.execute(sqlalchemy.select(table.c.heartbeat).where(table.c.trial_id == trial_id)).scalar()
        older = beat - datetime.timedelta(hours=hours)
        connection.execute(table.update().where(table.c.trial_id == trial_id).values(heartbeat=older))


def test_a_trial_from_another_machine_is_given_up_only_when_its_heartbeat_is_stale(backend, tmp_path):
    exp = experiment(unique("beat"), tmp_path, storage_url(backend, tmp_path), optimizers=["adamw"], trials=4, seeds=1)
    storage = store.open_storage(exp.storage_url)
    workers.prepare(exp, storage)
    tune = optuna.load_study(study_name=store.study_name(exp.name, TASK, "adamw", "tune"), storage=storage)
    here = ownership.owner_record(heartbeat=10, grace=30)
    elsewhere = {**here, "host": "elsewhere", "machine": "another-boot/pid:[1]"}
    with store.lock(storage):
        stale = ownership.take(tune, elsewhere)
        fresh = ownership.take(tune, elsewhere)
        patient = ownership.take(tune, {**elsewhere, "grace": 3 * 3600})
        ours = ownership.take(tune, here)  # this very process: alive, whatever its heartbeat says
    for trial_id in (stale, patient, ours):
        _age_heartbeat(exp.storage_url, trial_id, hours=1)
    number = {t._trial_id: t.number for t in tune.get_trials(deepcopy=False)}
    with store.lock(storage):
        assert ownership.reclaim(tune, grace=30) == [number[stale]]
    states = {t._trial_id: t.state for t in tune.get_trials(deepcopy=False)}
    assert [states[i] for i in (stale, fresh, patient, ours)] == [TrialState.FAIL] + [TrialState.RUNNING] * 3

    for trial_id in (fresh, patient, ours):  # let them go too, so that work() can finish the budget
        _age_heartbeat(exp.storage_url, trial_id, hours=4)
        storage.set_trial_system_attr(trial_id, records.OWNER, {**elsewhere, "grace": 30})
    assert workers.work(exp, storage) == 4 + 1  # the four copies and the rerun
    assert_budget_met_exactly(exp, failed=4)


def test_a_store_from_before_the_queue_resumes_without_repeating_a_trial(tmp_path):
    """Before the queue, a SQLite compare ran trials one after another (no slot) and a kill left one RUNNING."""
    exp = experiment("legacy", tmp_path, None, optimizers=["adamw"], trials=3, seeds=1)
    task = get_task(TASK)
    tune = objectives.open_study(exp, task, "adamw", "tune", storage=store.open_storage(exp.storage_url))
    tune.optimize(objectives.tune_objective(exp, task, "adamw"), n_trials=2)
    tune.ask()  # the killed one: no owner, no heartbeat
    done = [(t.number, t.value) for t in tune.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    assert len(done) == 2
    compare(exp)
    trials = trials_of(exp.storage_url, exp.name, "adamw", "tune")
    assert [(t.number, t.value) for t in trials if t.number < 2] == done  # kept, not run again
    assert trials[2].state == TrialState.FAIL  # closed at once, and replaced
    assert len([t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]) == exp.trials
    assert [t.user_attrs["seed"] for t in trials_of(exp.storage_url, exp.name, "adamw", "final")] == [1]


# --- a second compare that would change the experiment ----------------------------------------------------


def test_a_conflicting_compare_is_refused_and_a_growing_one_is_not(backend, tmp_path):
    url = storage_url(backend, tmp_path)
    variants = {"sgdm_step": {"optimizer": "sgdm", "schedule": "step"}}
    base = dict(optimizers=["adamw", "sgdm_step"], variants=variants, trials=2, seeds=1, subset=None)
    exp = experiment(unique("conflict"), tmp_path, url, **base)
    compare(exp, prepare_only=True)

    def refused(**changes) -> str:
        with pytest.raises(ValueError, match="already in") as error:
            compare(experiment(exp.name, tmp_path, url, **{**base, **changes}), prepare_only=True)
        return str(error.value)

    assert "epochs 2 (stored) vs 3 (asked)" in refused(epochs=3)
    message = refused(subset=64, sampler="qmc", prune=False)
    assert all(key in message for key in ("subset None (stored) vs 64", "sampler 'tpe'", "prune True"))
    assert "variant sgdm_step" in refused(variants={"sgdm_step": {"optimizer": "sgdm", "schedule": "cosine"}})
    assert "sampler_seed 0 (stored) vs 1" in refused(sampler_seed=1)

    # Growing it is no conflict: more trials, seeds, optimizers and variants are queued.
    grown = {"sgdm_cos": {"optimizer": "sgdm", "schedule": "cosine"}, **variants}
    bigger = experiment(exp.name, tmp_path, url, optimizers=["adamw", "sgdm_step", "sgdm", "sgdm_cos"],
                        variants=grown, trials=3, seeds=2)  # fmt: skip
    assert workers.prepare(bigger) == 2 * (1 + 1) + 2 * (3 + 2)

    # On the command line: one line, before anything is queued or trained.
    stored = {optimizer: len(trials_of(url, exp.name, optimizer, "tune")) for optimizer in ("adamw", "sgdm")}
    argv = compare_argv(experiment(exp.name, tmp_path, url, optimizers=["adamw", "sgdm"], trials=9, epochs=1))
    line = one_line_error(optarena(*argv))
    assert "epochs 2 (stored) vs 1 (asked)" in line and "--name" in line, line
    assert {optimizer: len(trials_of(url, exp.name, optimizer, "tune")) for optimizer in stored} == stored


# --- stores that cannot be used ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_store(tmp_path_factory: pytest.TempPathFactory) -> Experiment:
    out = tmp_path_factory.mktemp("finished")
    exp = experiment("done", out, None, optimizers=["adamw"], trials=2, seeds=1)
    compare(exp)
    return exp


def optarena(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "optarena", *argv], cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT,
        env={**os.environ, "COLUMNS": "400"},
    )  # fmt: skip


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    return line


def test_a_damaged_or_foreign_store_is_one_line(finished_store, tmp_path):
    damaged = tmp_path / "damaged" / "optarena.db"
    damaged.parent.mkdir()
    data = bytearray(Path(store.sqlite_file(finished_store.storage_url)).read_bytes())
    half = len(data) // 2
    data[half:] = (b"\xde\xad\xbe\xef" * len(data))[: len(data) - half]  # its data pages overwritten
    damaged.write_bytes(bytes(data))
    foreign = tmp_path / "foreign" / "optarena.db"
    foreign.parent.mkdir()
    foreign.write_text("these are my notes, not a database\n" * 200)
    for path in (damaged, foreign):
        url = default_storage_url(path.parent)
        for argv in (
            ["report", "--name", "done", "--out", str(path.parent)],
            compare_argv(experiment("done", path.parent, url, optimizers=["adamw"], trials=2, seeds=1)),
        ):
            line = one_line_error(optarena(*argv))
            assert f"Store {url} is damaged or not an optarena store" in line, line
    assert "(file is not a database)" in line


def test_a_read_only_store_reports_but_refuses_to_compare(finished_store, tmp_path):
    path = store.sqlite_file(finished_store.storage_url)
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"  # SQLite opens it read-only, even for root
    before = path.read_bytes()
    report = optarena("report", "--name", "done", "--storage", read_only, "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stdout + report.stderr
    assert (tmp_path / "report" / "report.md").is_file()
    grown = experiment("done", tmp_path / "out", read_only, optimizers=["adamw"], trials=3, seeds=1)
    line = one_line_error(optarena(*compare_argv(grown)))
    assert f"Store {read_only} is read-only" in line and "'optarena report' can still read it" in line
    assert path.read_bytes() == before  # nothing was trained or written


def test_a_store_on_a_read_only_file_system_reports_but_refuses_to_compare(finished_store, tmp_path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a read-only file system needs root")
    mount = tmp_path / "mnt"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("this machine does not let us mount a tmpfs")
    try:
        shutil.copy(store.sqlite_file(finished_store.storage_url), mount / "optarena.db")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        report = optarena("report", "--name", "done", "--storage", default_storage_url(mount),
                          "--out", str(tmp_path / "report"))  # fmt: skip
        assert report.returncode == 0, report.stdout + report.stderr
        assert (tmp_path / "report" / "report.md").is_file()
        grown = experiment("done", mount, None, optimizers=["adamw"], trials=3, seeds=1)
        line = one_line_error(optarena(*compare_argv(grown)))
        assert str(mount) in line and "ead-only" in line, line
    finally:
        subprocess.run(["umount", str(mount)], check=True)
