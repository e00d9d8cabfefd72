"""The arena: tasks, runner, protocol (equal budget, resume), experiment files and the CLI."""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from optarena.arena.run.runner import train
from optarena.arena.spec.config import ConfigError, load_experiment_file
from optarena.arena.spec.experiment import Experiment, default_storage_url
from optarena.arena.spec.search import suggest
from optarena.arena.study import store
from optarena.arena.study.protocol import compare
from optarena.arena.study.records import load_results
from optarena.arena.tasks import TaskSettings, get_task, list_tasks
from optarena.arena.tasks.functions import FUNCTIONS
from optarena.optim import get_optimizer_info

REPO = Path(__file__).resolve().parents[1]


def test_tasks_are_registered_and_unknown_names_list_the_valid_ones():
    names = list_tasks()
    assert {"digits", "rosenbrock", "rastrigin", "ill_conditioned", "saddle"} <= set(names)
    with pytest.raises(ValueError, match=r"Unknown task 'cifar'.*digits"):
        get_task("cifar")


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_function_tasks_record_trajectories_and_make_progress(name):
    task = get_task(name)
    result = train(task, "adamw", {"lr": 0.05}, seed=0, epochs=2, diagnostics=True)
    assert len(result.trajectory) == 1 + 2 * 50
    assert result.trajectory[0] == list(FUNCTIONS[name].start)
    assert [r["epoch"] for r in result.records] == [0.0, 1.0, 2.0]
    assert result.records[-1]["train_loss"] < result.records[0]["train_loss"]


def test_digits_run_records_curves_and_diagnostics():
    result = train(get_task("digits"), "adaburst", {"lr": 3e-3}, seed=1, epochs=3, diagnostics=True)
    steps = [r["step"] for r in result.records]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == 3 * 16
    assert result.records[-1]["test_metric"] > 0.5
    assert set(result.update_magnitudes) == {"1.weight", "3.weight"}
    assert all(len(v) == 3 and all(x > 0 for x in v) for v in result.update_magnitudes.values())
    assert result.threads >= 1 and result.load_average
    # AGR's relative change per layer type, on each epoch's last gradient: in (0, 1), smaller on the larger tensors
    assert set(result.agr_change) == {"Linear.weight", "Linear.bias"}
    assert all(len(v) == 3 and all(0 < x < 1 for x in v) for v in result.agr_change.values())
    assert max(result.agr_change["Linear.weight"]) < min(result.agr_change["Linear.bias"])
    assert not train(get_task("digits"), "adamw", {"lr": 3e-3}, seed=1, epochs=1).agr_change  # diagnostics only


def test_eval_every_scores_fewer_epochs_and_trains_the_same_model():
    """Evaluation only reads the model: scoring every second epoch, or only the last, changes the curves' points
    and nothing of the training (the same final scores, bit for bit)."""
    task = get_task("digits")
    runs = {every: train(task, "adamw", {"lr": 3e-3}, seed=1, epochs=5, eval_every=every) for every in (1, 2, None)}
    assert [r["epoch"] for r in runs[1].records] == [0, 1, 2, 3, 4, 5]
    assert [r["epoch"] for r in runs[2].records] == [0, 2, 4, 5]
    assert [r["epoch"] for r in runs[None].records] == [5]
    assert runs[2].records[1] == {**runs[1].records[2], "wall_time": runs[2].records[1]["wall_time"]}
    final = {k: v for k, v in runs[1].records[-1].items() if k != "wall_time"}
    for every in (2, None):
        assert {k: v for k, v in runs[every].records[-1].items() if k != "wall_time"} == final


@pytest.mark.parametrize(
    "optimizer,every,message",
    [
        ("adamw", 0, "Invalid eval_every: 0; expected an integer >= 1, or None"),
        ("adamw", 1.5, "Invalid eval_every: 1.5"),
        ("adamw", True, "Invalid eval_every: True"),
        ("adaburst", 2, "adaburst's loop hooks read the metrics after every epoch"),
        ("adaburst", None, "adaburst's loop hooks read the metrics after every epoch"),
    ],
)
def test_eval_every_that_a_run_cannot_have_is_refused_before_training(optimizer, every, message):
    task = dataclasses.replace(get_task("digits"), build=lambda settings: pytest.fail("built before the check"))
    with pytest.raises(ValueError, match=re.escape(message)):
        train(task, optimizer, {}, seed=0, epochs=2, eval_every=every)


def test_adaburst_bursts_are_recorded_and_follow_the_task_mode():
    # A function task is minimised: the paper's trigger must watch the value falling, not rising.
    paper = {"lr": 1e-3, "burst_trigger": "metric_plateau", "burst_patience": 0}
    result = train(get_task("rastrigin"), "adaburst", paper, seed=0, epochs=6)
    assert list(result.events) == ["burst"]  # the value stalls in a local minimum: bursts restart
    assert result.events["burst"] and all(e % 50 == 0 for e in result.events["burst"])  # at epoch ends
    # The default trigger watches every step's value: it fires too, at steps inside the epochs.
    result = train(get_task("rastrigin"), "adaburst", {"lr": 1e-3}, seed=0, epochs=6)
    assert result.events["burst"] and any(e % 50 for e in result.events["burst"])


def test_the_runner_calls_what_the_registry_entry_declares(monkeypatch):
    """The loop recognises no optimizer: it calls the hooks its registry entry declares, and records their events."""
    from types import SimpleNamespace

    from optarena.arena.run import runner
    from optarena.arena.tasks import TaskSettings
    from optarena.optim.hooks import LoopHooks

    seen: dict[str, list] = {"contexts": [], "steps": [], "metrics": [], "kwargs": []}

    class Spy(LoopHooks):
        def options(self, context):
            seen["contexts"].append(context)
            return {"weight_decay": 0.5, "betas": (0.5, 0.5)}

        def after_step(self, optimizer, model, inputs, step, context, loss=None):
            seen["steps"].append((step, len(inputs)))
            seen.setdefault("losses", []).append(loss)
            return ["stepped"] if step == 3 else []

        def after_epoch(self, optimizer, metrics, context):
            seen["metrics"].append(metrics["train_metric"])
            return ["spied"] if len(seen["metrics"]) == 2 else []

    create = runner.create_optimizer

    def spy_create(model, name, **kwargs):
        seen["kwargs"].append(kwargs)
        return create(model, name, **kwargs)

    monkeypatch.setattr(runner, "get_optimizer_info", lambda name: SimpleNamespace(hooks=Spy()))
    monkeypatch.setattr(runner, "create_optimizer", spy_create)
    hyper = {"lr": 1e-3, "betas": (0.9, 0.99)}
    result = train(get_task("digits"), "adamw", hyper, seed=0, epochs=2, settings=TaskSettings(subset=256))
    (context,) = seen["contexts"]
    per_epoch = int(result.records[1]["step"])
    assert (context.metric_mode, context.classification, context.steps_per_epoch) == ("max", True, per_epoch)
    assert context.total_steps == 2 * per_epoch and context.batch_size
    # the hooks' options go in, but the tuned hyperparameters win; the arena's nonfinite policy stays
    assert seen["kwargs"] == [{"nonfinite": "raise", "weight_decay": 0.5, "betas": (0.9, 0.99), "lr": 1e-3}]
    assert seen["steps"] == [(step, context.batch_size) for step in range(1, 2 * per_epoch + 1)]
    assert seen["metrics"] == [row["train_metric"] for row in result.records[1:]]
    assert all(loss.dim() == 0 and torch.isfinite(loss) for loss in seen["losses"])  # each step's training loss
    assert result.events == {"stepped": [3], "spied": [2 * per_epoch]}  # at the step after which each happened
    assert result.to_dict()["spied_events"] == [2 * per_epoch] and result.to_dict()["burst_events"] == []


def test_a_diverging_run_is_marked_and_stops():
    result = train(get_task("rosenbrock"), "sgdm", {"lr": 1.0}, seed=0, epochs=3)
    assert result.diverged
    assert len(result.records) < 4


def test_tensorboard_logging_writes_the_curves(tmp_path):
    pytest.importorskip("tensorboard", reason="TensorBoard logging is optional: it needs the tensorboard package")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(get_task("saddle"), "adamw", {"lr": 0.01}, seed=0, epochs=2, tensorboard_dir=tmp_path)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert {"train_loss", "test_metric", "wall_time"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train_loss")] == [0, 50, 100]
    # compare logs every rerun under <dir>/<experiment>/<task>/<optimizer>/seed<N>
    logs = tmp_path / "tb"
    compare(_tiny(tmp_path / "cmp", optimizers=["adamw"], trials=1, seeds=2, tensorboard=logs))
    assert sorted(p.name for p in (logs / "default" / "rosenbrock" / "adamw").iterdir()) == ["seed1", "seed2"]


def test_search_space_has_the_same_shape_for_every_optimizer():
    for name in ("adamw", "sgdm", "adaburst", "lookahead_adamw"):
        info = get_optimizer_info(name)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(20):
            trial = study.ask()
            params = suggest(trial, name)
            assert info.lr_range[0] <= params["lr"] <= info.lr_range[1]
            assert set(params) == {"lr", *info.search_space}
            study.tell(trial, 0.0)
        dist = study.trials[0].distributions["lr"]
        assert dist.log and (dist.low, dist.high) == info.lr_range


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"trials": 0}, "Invalid trials"),
        ({"seeds": -1}, "Invalid seeds"),
        ({"epochs": 0}, "Invalid epochs"),
        ({"optimizers": ["adamw", "adamx"]}, r"Unknown optimizer 'adamx'.*adaburst"),
        ({"tasks": ["digitz"]}, r"Unknown task 'digitz'.*digits"),
        ({"name": "a/b"}, "Invalid name"),
        ({"device": "tpu"}, "Invalid device"),
        ({"optimizers": ["adamw", "adamw"]}, "listed once"),
        ({"sampler": "grid"}, r"Invalid sampler: 'grid'; expected one of 'tpe', 'qmc'"),
    ],
)
def test_experiment_rejects_impossible_settings(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        Experiment(out=tmp_path, **kwargs)


def test_experiment_file_reads_and_reports_errors_with_line_and_key(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('name = "x"\ntasks = ["rosenbrock"]\noptimizers = ["adamw", "sgdm"]\ntrials = 3\nepochs = 2\n')
    experiment = load_experiment_file(good, seeds=2)
    assert (experiment.name, experiment.tasks, experiment.trials, experiment.seeds) == ("x", ["rosenbrock"], 3, 2)

    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\ntrials = 3\nseeds = 2 2\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: malformed TOML.*line 3"):
        load_experiment_file(bad)
    bad.write_text('name = "x"\ntrails = 3\n')
    with pytest.raises(ConfigError, match=r"bad\.toml:2: unknown key 'trails'; valid keys: .*trials"):
        load_experiment_file(bad)
    bad.write_text('name = "x"\n\ntrials = "many"\n')
    with pytest.raises(ConfigError, match=r"bad\.toml:3: key 'trials' must be of type int"):
        load_experiment_file(bad)
    bad.write_text('tasks = ["digits"]\noptimizers = ["adamw", "nope"]\n')
    with pytest.raises(ConfigError, match=r"bad\.toml:2: Unknown optimizer 'nope'"):
        load_experiment_file(bad)
    bad.write_text("seeds = 0\n")
    with pytest.raises(ConfigError, match=r"bad\.toml:1: Invalid seeds"):
        load_experiment_file(bad)


def _tiny(tmp_path: Path, **kwargs) -> Experiment:
    settings = dict(out=tmp_path, tasks=["rosenbrock"], optimizers=["adamw", "adaburst"], trials=3, seeds=2, epochs=2)
    settings.update(kwargs)
    return Experiment(**settings)


def test_compare_spends_the_same_budget_on_every_optimizer(tmp_path):
    experiment = _tiny(tmp_path)
    compare(experiment)
    pairs = load_results(experiment.storage_url, experiment.name).pairs
    assert set(pairs) == {("rosenbrock", "adamw"), ("rosenbrock", "adaburst")}
    for pair in pairs.values():
        assert len(pair.tune) == 3
        assert sorted(t.seed for t in pair.final) == [1, 2]
        best = min((t for t in pair.tune if t.state == "complete"), key=lambda t: t.value)
        assert all(t.params["lr"] == best.params["lr"] for t in pair.final)
        assert pair.config.experiment["trials"] == 3 and "torch" in pair.config.versions
    # Running it again does nothing: every trial is already in the store.
    before = {k: [t.number for t in r.tune + r.final] for k, r in pairs.items()}
    compare(experiment)
    after = {
        k: [t.number for t in r.tune + r.final]
        for k, r in load_results(experiment.storage_url, "default").pairs.items()
    }
    assert after == before


def _study_states(url: str, name: str) -> list[tuple[int, str, float | None]]:
    study = optuna.load_study(study_name=name, storage=url)
    return [(t.number, t.state.name, t.value) for t in study.get_trials(deepcopy=False)]


def test_killed_compare_resumes_without_losing_or_repeating_a_trial(tmp_path):
    # The first run SIGKILLs itself in the middle of the third tuning trial (after its third epoch), so
    # the kill lands at the same place every time instead of racing a poller against short trials.
    experiment = (
        f"Experiment(out={str(tmp_path)!r}, tasks=['digits'], optimizers=['adamw', 'sgdm'],"
        " trials=4, seeds=2, epochs=12, subset=400, threads=1)"
    )
    killing = (
        "import os, signal\n"
        "from optarena.arena.spec.experiment import Experiment\n"
        "from optarena.arena.study import objectives, protocol\n"
        "real_train, calls = objectives.train, []\n"
        "def train(*args, on_epoch, **kwargs):\n"
        "    calls.append(1)\n"
        "    def report(epoch, row):\n"
        "        on_epoch(epoch, row)\n"
        "        if len(calls) == 3 and epoch == 3:\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real_train(*args, on_epoch=report, **kwargs)\n"
        "objectives.train = train\n"
        f"protocol.compare({experiment})\n"
    )
    resuming = (
        "from optarena.arena.spec.experiment import Experiment\n"
        f"from optarena.arena.study.protocol import compare\ncompare({experiment})\n"
    )
    url = default_storage_url(tmp_path)
    tune_name = store.study_name("default", "digits", "adamw", "tune")
    killed = subprocess.run([sys.executable, "-c", killing], cwd=REPO, timeout=600)
    assert killed.returncode == -signal.SIGKILL
    states = _study_states(url, tune_name)
    finished_before = [s for s in states if s[1] in ("COMPLETE", "PRUNED")]
    assert [s[0] for s in finished_before] == [0, 1]
    assert [(s[0], s[1]) for s in states if s[0] == 2] == [(2, "RUNNING")]  # what the kill left behind

    result = subprocess.run([sys.executable, "-c", resuming], cwd=REPO, timeout=600)
    assert result.returncode == 0
    states = _study_states(url, tune_name)
    done = [s for s in states if s[1] in ("COMPLETE", "PRUNED")]
    assert len(done) == 4  # the budget, exactly
    assert [s for s in done if s[0] < 2] == finished_before  # nothing lost or redone
    assert [s[1] for s in states if s[0] == 2] == ["FAIL"]  # the killed trial, closed and replaced
    for pair in load_results(url, "default").pairs.values():
        assert len(pair.tune) == 4
        assert sorted(t.seed for t in pair.final) == [1, 2]


def test_cli_list_and_run(tmp_path):
    listing = subprocess.run([sys.executable, "-m", "optarena", "list"], capture_output=True, text=True, cwd=REPO)
    assert listing.returncode == 0
    assert "adaburst" in listing.stdout and "rosenbrock" in listing.stdout
    out = tmp_path / "single"
    run = subprocess.run(
        [sys.executable, "-m", "optarena", "run", "--task", "saddle", "--optimizer", "adaburst", "--lr", "0.01",
         "--set", "burst_patience=1", "--epochs", "2", "--out", str(out)],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    data = json.loads((out / "saddle-adaburst-seed0.json").read_text())
    assert data["hyperparameters"] == {"lr": 0.01, "burst_patience": 1}
    assert len(data["records"]) == 3
    assert (out / "saddle-adaburst-seed0.png").stat().st_size > 0


@pytest.mark.parametrize(
    "argv,message",
    [
        (["run", "--task", "nope", "--optimizer", "adamw"], "Unknown task 'nope'"),
        (["run", "--task", "digits", "--optimizer", "nope"], "Unknown optimizer 'nope'"),
        (["run", "--task", "digits", "--optimizer", "adamw", "--set", "lr"], "KEY=VALUE"),
        (["run", "--task", "digits", "--optimizer", "adamw", "--eval-every", "0"], "Invalid --eval-every: '0'"),
        (["run", "--task", "digits", "--optimizer", "adaburst", "--eval-every", "end"], "'end'; adaburst"),
        (["compare", "--trials", "0"], "Invalid trials"),
        (["compare", "--optimizers", "adamx"], "Unknown optimizer 'adamx'"),
    ],
)
def test_cli_bad_input_is_a_clear_error(argv, message, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "optarena", *argv, *(["--out", str(tmp_path)] if argv[0] == "compare" else [])],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 2
    assert message in result.stdout.replace("\n", " ")


def test_a_missing_dataset_is_a_clear_error_and_keeps_what_was_computed(tmp_path):
    """The data of every task are looked for before any trial: the error comes first, and the store is untouched."""
    empty = tmp_path / "no-data-here"
    empty.mkdir()
    (empty / "readme.txt").write_text("not a dataset")
    out = tmp_path / "out"

    def compare_cli(*tasks: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "optarena", "compare", "--task", *tasks, "--optimizers", "adamw",
             "--trials", "2", "--seeds", "1", "--epochs", "1", "--data-dir", str(empty), "--out", str(out)],
            capture_output=True, text=True, cwd=REPO,
        )  # fmt: skip

    def trials() -> dict[str, list[str]]:  # every trial of every study, failed ones included
        storage = optuna.storages.RDBStorage(default_storage_url(out))
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        return {n: [t.state.name for t in optuna.load_study(study_name=n, storage=storage).trials] for n in names}

    first = compare_cli("rosenbrock")
    assert first.returncode == 0
    # Not a terminal (a log file): a timestamped line for each run, since the progress bar cannot redraw there.
    runs = [line for line in first.stdout.splitlines() if re.fullmatch(r"\d\d:\d\d:\d\d \d/3 .*", line)]
    assert [line.split()[1] for line in runs] == ["1/3", "2/3", "3/3"], first.stdout
    before = trials()
    assert {n: states.count("COMPLETE") for n, states in before.items()} == {
        "default/rosenbrock/adamw/tune": 2,
        "default/rosenbrock/adamw/final": 1,
    }
    result = compare_cli("rosenbrock", "mnist_cnn")
    assert result.returncode == 2
    assert result.stdout.startswith("error: mnist needs the MNIST-format files"), result.stdout + result.stderr
    assert str(empty.name) in result.stdout and "Traceback" not in result.stdout + result.stderr
    assert trials() == before  # what was computed is kept, and no failed trial was added


def test_qmc_compare_is_reproducible_and_queues_nothing_twice(tmp_path):
    """sampler='qmc' queues every configuration up front: two stores get the same trials, slot by slot."""
    found = []
    for out in (tmp_path / "a", tmp_path / "b"):
        experiment = Experiment(
            out=out, tasks=["digits"], optimizers=["adamw"], trials=3, seeds=1, epochs=2, subset=200,
            sampler="qmc", prune=False,
        )  # fmt: skip
        compare(experiment)
        compare(experiment)  # everything is done: nothing is queued or run again
        pair = load_results(experiment.storage_url, "default").pairs[("digits", "adamw")]
        assert len(pair.tune) == 3 and len(pair.final) == 1
        found.append({t.slot: (t.params, t.value) for t in pair.tune})
    assert found[0] == found[1]
    assert len({params["lr"] for params, _ in found[0].values()}) == 3


@pytest.mark.parametrize("name", ["digits", "rosenbrock"])
def test_an_evaluation_without_the_test_split_scores_the_others(name):
    problem = get_task(name).build(TaskSettings(seed=0, epochs=1, subset=200))
    full, tuning = problem.evaluate(), problem.evaluate(test=False)
    assert "test_metric" in full and not any(key.startswith("test_") for key in tuning)
    assert {key: full[key] for key in tuning} == tuning
