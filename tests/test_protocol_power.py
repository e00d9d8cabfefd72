"""The powered protocol (issue 18): tuning seeds, range widening, weight-decay tuning, the preset, the budget."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import optuna
import pytest

from optarena.arena.run.runner import train
from optarena.arena.spec import search, variants
from optarena.arena.spec.config import ConfigError, experiment_from, load_experiment_file
from optarena.arena.spec.experiment import TUNE_SEED_OFFSET, Experiment, tune_seed_list
from optarena.arena.spec.search import WEIGHT_DECAY_RANGES, search_space, weight_decay_kind
from optarena.arena.spec.variants import OptimizerSpec, parse_variant
from optarena.arena.spec.widening import EDGE_FRACTION, edge_side, widenings_for
from optarena.arena.study import budget, objectives, records, store, widening, workers
from optarena.arena.study.protocol import compare, planned_budget
from optarena.arena.tasks import get_task
from optarena.optim import list_optimizers

REPO = Path(__file__).resolve().parents[1]


def _tune_study(experiment: Experiment, optimizer: str) -> optuna.Study:
    name = store.study_name(experiment.name, experiment.tasks[0], optimizer, "tune")
    return optuna.load_study(study_name=name, storage=experiment.storage_url)


# --- tuning seeds ---------------------------------------------------------------------------------------------


def test_tune_seeds_are_apart_from_the_rerun_seeds():
    assert tune_seed_list(1) == [0]
    assert tune_seed_list(3) == [0, TUNE_SEED_OFFSET + 1, TUNE_SEED_OFFSET + 2]
    with pytest.raises(ValueError, match=r"Invalid tune_seeds: 0; expected an integer in \[1, 100\]"):
        Experiment(tune_seeds=0)
    with pytest.raises(ValueError, match=r"Invalid seeds: 1000000; expected an integer in \[1, 999999\]"):
        Experiment(seeds=TUNE_SEED_OFFSET)


def test_a_tuning_trial_scores_the_mean_over_its_tuning_seeds(tmp_path):
    experiment = Experiment(
        out=tmp_path, tasks=["digits"], optimizers=["adamw"], trials=2, seeds=1, tune_seeds=2, epochs=2,
        subset=300, sampler="qmc", prune=False,
    )  # fmt: skip
    compare(experiment)
    task = get_task("digits")
    tuned = [t for t in _tune_study(experiment, "adamw").trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(tuned) == 2
    spread = []
    for trial in tuned:
        runs = records.tune_runs_of(trial)
        assert [r["seed"] for r in runs] == [0, TUNE_SEED_OFFSET + 1]
        assert trial.value == pytest.approx(sum(r["value"] for r in runs) / 2, rel=1e-12)
        # each seed's value is that seed's own run, trained again here independently
        for run in runs:
            again = train(
                task, "adamw", trial.params, seed=run["seed"], epochs=2, settings=experiment.settings("digits")
            )
            assert again.records[-1]["val_metric"] == pytest.approx(run["value"], abs=1e-9)
            assert run["step"] == again.records[-1]["step"]
        spread.append(runs[0]["value"] != runs[1]["value"])
    assert any(spread)  # the seeds differ, so the mean is not one seed's value


def test_a_diverged_tuning_seed_scores_the_worst_value(tmp_path, monkeypatch):
    real_train = objectives.train

    def second_seed_diverges(*args, seed, **kwargs):
        result = real_train(*args, seed=seed, **kwargs)
        if seed != 0:
            result.diverged = True
        return result

    monkeypatch.setattr(objectives, "train", second_seed_diverges)
    experiment = Experiment(
        out=tmp_path, tasks=["digits"], optimizers=["sgdm"], trials=1, seeds=1, tune_seeds=2, epochs=1, subset=200,
        prune=False,
    )  # fmt: skip
    compare(experiment)
    (trial,) = [t for t in _tune_study(experiment, "sgdm").trials if t.state == optuna.trial.TrialState.COMPLETE]
    first, second = records.tune_runs_of(trial)
    worst = get_task("digits").worst
    assert second["diverged"] and second["value"] == worst
    assert trial.value == pytest.approx((first["value"] + worst) / 2)


def test_other_tune_seeds_on_a_store_are_refused(tmp_path):
    base = dict(out=tmp_path, tasks=["rosenbrock"], optimizers=["adamw"], trials=1, seeds=1)
    workers.prepare(Experiment(**base))
    with pytest.raises(ValueError, match=r"tune_seeds 1 \(stored\) vs 2 \(asked\)"):
        workers.prepare(Experiment(**base, tune_seeds=2))
    with pytest.raises(ValueError, match=r"tune_weight_decay False \(stored\) vs True \(asked\)"):
        workers.prepare(Experiment(**base, tune_weight_decay=True))
    assert workers.prepare(Experiment(**{**base, "trials": 2})) == 1  # growing the budget is not refused


# --- widening ---------------------------------------------------------------------------------------------------


def _at(position: float, low: float = 1e-4, high: float = 1e-1) -> float:
    """The value at ``position`` of the log range [low, high]."""
    return math.exp(math.log(low) + position * (math.log(high) - math.log(low)))


@pytest.mark.parametrize(
    "position,side",
    [
        (0.0, "low"), (EDGE_FRACTION, "low"), (EDGE_FRACTION + 1e-6, None), (0.5, None),
        (1 - EDGE_FRACTION - 1e-6, None), (1 - EDGE_FRACTION, "high"), (1.0, "high"),
    ],
)  # fmt: skip
def test_edge_is_the_outer_eighth_of_the_log_range(position, side):
    assert edge_side(_at(position), 1e-4, 1e-1) == side


def test_widenings_move_only_the_edge_the_best_sits_on():
    space = {"lr": ("log", 1e-4, 1e-1), "burst_max": ("log", 0.1, 10.0), "lookahead_alpha": ("float", 0.3, 0.9)}
    best = {"lr": _at(0.95), "burst_max": 1.0, "lookahead_alpha": 0.89}  # only lr on an edge; alpha is linear
    (w,) = widenings_for(space, best, factor=10.0, optimizer="adaburst", round=1, best_trial=3, extra_trials=4)
    assert (w.knob, w.side, w.old, w.new) == ("lr", "high", (1e-4, 1e-1), (1e-4, 1.0))
    assert (w.round, w.best_trial, w.extra_trials) == (1, 3, 4)
    best = {"lr": 1e-3, "burst_max": _at(0.01, 0.1, 10.0), "lookahead_alpha": 0.5}
    (w,) = widenings_for(space, best, factor=10.0, optimizer="adaburst", round=2, best_trial=0, extra_trials=1)
    assert (w.knob, w.side, w.new) == ("burst_max", "low", (0.01, 10.0))
    assert widenings_for(space, {"lr": 3e-3, "burst_max": 1.0}, factor=10, optimizer="adaburst", round=1,
                         best_trial=0, extra_trials=1) == []  # fmt: skip


def _told(study: optuna.Study, space: dict, lrs: list[float], values: list[float], round: int = 0) -> None:
    """Finished trials at the given learning rates, as if they had run (slot i of ``round``)."""
    low, high = space["lr"][1:]
    for slot, (lr, value) in enumerate(zip(lrs, values)):
        attrs = {records.SLOT: slot, **({records.ROUND: round} if round else {})}
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": lr},
                distributions={"lr": optuna.distributions.FloatDistribution(low, high, log=True)},
                value=value,
                user_attrs=attrs,
            )
        )


def _widening_experiment(tmp_path: Path, **extra) -> Experiment:
    settings = dict(out=tmp_path, tasks=["rosenbrock"], optimizers=["adamw"], trials=4, seeds=1, max_widenings=2)
    return Experiment(**{**settings, **extra})


def _complete_queued(study: optuna.Study, experiment: Experiment, lr_value) -> None:
    """Run every waiting tuning trial with a made-up objective (no training): value = lr_value(lr)."""
    while study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
        trial = study.ask()
        space = widening.space_of(experiment, "adamw", widening.recorded(study), records.round_of(trial))
        params = search.suggest(trial, "adamw", space)
        study.tell(trial, lr_value(params["lr"]))


def test_widening_happens_exactly_when_the_best_is_on_an_edge(tmp_path):
    experiment = _widening_experiment(tmp_path, sampler="qmc")
    workers.prepare(experiment)
    study = _tune_study(experiment, "adamw")
    _replace_waiting(study)  # the queued trials give way to finished ones whose values we choose
    space = widening.space_of(experiment, "adamw", [], 0)
    inside = 1 - EDGE_FRACTION - 0.01
    _told(study, space, [_at(0.2), _at(0.5), _at(inside), _at(0.3)], [3.0, 2.0, 1.0, 4.0])  # best inside: none
    assert widening.extend(experiment, "adamw", study) == 0
    assert records.widenings_of(study) == []

    experiment2 = _widening_experiment(tmp_path / "b", sampler="qmc")
    workers.prepare(experiment2)
    study = _tune_study(experiment2, "adamw")
    _replace_waiting(study)
    _told(study, space, [_at(0.2), _at(0.5), _at(1 - EDGE_FRACTION), _at(0.3)], [3.0, 2.0, 1.0, 4.0])
    assert widening.extend(experiment2, "adamw", study) == 2  # trials // 2 more, in the widened range
    (entry,) = records.widenings_of(study)
    assert (entry["knob"], entry["side"], entry["round"]) == ("lr", "high", 1)
    assert entry["old"] == [1e-4, 1e-1] and entry["new"] == pytest.approx([1e-4, 1.0])
    assert entry["best_trial"] == study.best_trial.number and entry["trials"] == [8, 9]
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    assert [(records.round_of(t), records.slot_of(t)) for t in waiting] == [(1, 0), (1, 1)]
    assert widening.extend(experiment2, "adamw", study) == 0  # idempotent while its trials wait
    sobol = [t.system_attrs["fixed_params"]["lr"] for t in waiting]  # QMC: the sequence continued, widened
    assert all(1e-4 <= lr <= 1.0 for lr in sobol)
    assert not set(sobol) & {t.system_attrs.get("fixed_params", {}).get("lr") for t in study.trials[:4]}
    # The widened round finds its best near the new top: a second round, then no more (max_widenings = 2).
    _replace_waiting(study)
    wide = widening.space_of(experiment2, "adamw", widening.recorded(study), 1)
    assert wide["lr"] == ("log", 1e-4, pytest.approx(1.0))
    _told(study, wide, [_at(0.5, 1e-4, 1.0), _at(0.95, 1e-4, 1.0)], [0.5, 0.1], round=1)
    assert widening.extend(experiment2, "adamw", study) == 2
    assert [w["round"] for w in records.widenings_of(study)] == [1, 2]
    assert records.widenings_of(study)[1]["new"] == pytest.approx([1e-4, 10.0])
    _replace_waiting(study)
    wide = widening.space_of(experiment2, "adamw", widening.recorded(study), 2)
    _told(study, wide, [_at(0.99, 1e-4, 10.0), _at(0.2, 1e-4, 10.0)], [0.01, 0.7], round=2)
    assert widening.extend(experiment2, "adamw", study) == 0  # still on an edge, but max_widenings = 2 reached
    assert len(records.widenings_of(study)) == 2


def _replace_waiting(study: optuna.Study) -> None:
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
        study._storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL)


def test_a_widening_recorded_but_not_queued_is_queued_on_resume(tmp_path):
    experiment = _widening_experiment(tmp_path)
    workers.prepare(experiment)
    study = _tune_study(experiment, "adamw")
    _complete_queued(study, experiment, lambda lr: -lr)  # every base trial done
    record = {
        "round": 1, "knob": "lr", "side": "high", "old": [1e-4, 0.1], "new": [1e-4, 1.0], "best_value": 0.09,
        "best_trial": 0, "extra_trials": 2,
    }  # fmt: skip
    records.write_widenings(study, [record])  # a process killed right after recording the widening
    assert workers.prepare(experiment) == 2  # the next compare (or --prepare, or a worker) queues its trials
    assert workers.prepare(experiment) == 0
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    assert sorted((records.round_of(t), records.slot_of(t)) for t in waiting) == [(1, 0), (1, 1)]


def test_compare_killed_inside_a_widened_trial_resumes_it(tmp_path):
    # sgdm on rosenbrock in 3 epochs: only its lowest Sobol lr (1.4e-3 in [1e-3, 1]) does not diverge, so its range
    # is widened downwards; the first run SIGKILLs itself inside the first widened trial (the 5th training run, at
    # its first evaluation).
    experiment = (
        f"Experiment(out={str(tmp_path)!r}, tasks=['rosenbrock'], optimizers=['sgdm'], trials=4, seeds=2, "
        "epochs=3, sampler='qmc', prune=False, max_widenings=1)"
    )
    killing = (
        "import os, signal\n"
        "from optarena.arena.spec.experiment import Experiment\n"
        "from optarena.arena.study import objectives, protocol\n"
        "real_train, calls = objectives.train, []\n"
        "def train(*args, on_epoch=None, **kwargs):\n"
        "    calls.append(1)\n"
        "    def report(epoch, row):\n"
        "        if on_epoch is not None:\n"
        "            on_epoch(epoch, row)\n"
        "        if len(calls) == 5 and epoch == 0:\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real_train(*args, on_epoch=report, **kwargs)\n"
        "objectives.train = train\n"
        f"protocol.compare({experiment})\n"
    )
    resuming = f"from optarena.arena.spec.experiment import Experiment\nfrom optarena.arena.study.protocol import compare\ncompare({experiment})\n"  # noqa: E501
    killed = subprocess.run([sys.executable, "-c", killing], cwd=REPO, timeout=600)
    assert killed.returncode == -signal.SIGKILL
    url = f"sqlite:///{tmp_path / 'optarena.db'}"
    name = store.study_name("default", "rosenbrock", "sgdm", "tune")
    study = optuna.load_study(study_name=name, storage=url)
    (entry,) = records.widenings_of(study)
    assert (entry["round"], entry["knob"], entry["side"]) == (1, "lr", "low")
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    assert [records.round_of(t) for t in running] == [1]  # killed inside the widened round
    before = {t.number: t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}

    assert subprocess.run([sys.executable, "-c", resuming], cwd=REPO, timeout=600).returncode == 0
    study = optuna.load_study(study_name=name, storage=url)
    assert len(records.widenings_of(study)) == 1  # recorded once
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted((records.round_of(t), records.slot_of(t)) for t in done) == [
        (0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1),
    ]  # fmt: skip
    assert {n: v for n, v in ((t.number, t.value) for t in done) if n in before} == before  # nothing redone
    assert [t.state.name for t in study.trials if t.number == running[0].number] == ["FAIL"]
    pair = records.load_results(url, "default").pairs["rosenbrock", "sgdm"]
    assert sorted(t.seed for t in pair.final) == [1, 2]
    assert pair.config.budget["widenings"] == 1 and pair.config.budget["trials"] == 6


# --- weight decay -------------------------------------------------------------------------------------------------


def test_weight_decay_is_tuned_for_every_optimizer_that_has_it():
    for name in list_optimizers():
        space = search_space(name, tune_weight_decay=True)
        kind = weight_decay_kind(name)
        assert kind in WEIGHT_DECAY_RANGES, name  # every registered optimizer's decay is classified
        assert space["weight_decay"] == ("log", *WEIGHT_DECAY_RANGES[kind]), name
        assert "weight_decay" not in search_space(name), name  # only when asked
    assert weight_decay_kind("adamw") == weight_decay_kind("lion") == "decoupled"
    assert weight_decay_kind("sgdm") == weight_decay_kind("adam") == weight_decay_kind("adax") == "coupled"
    assert (
        weight_decay_kind(parse_variant("adamw_l2", {"optimizer": "adam", "options": {"decoupled_weight_decay": True}}))
        == "decoupled"
    )
    coupled = parse_variant("belief_l2", {"optimizer": "adabelief", "options": {"weight_decouple": False}})
    assert weight_decay_kind(coupled) == "coupled"
    fixed = parse_variant("adamw_wd0", {"optimizer": "adamw", "options": {"weight_decay": 0.0}})
    assert "weight_decay" not in search_space(fixed, tune_weight_decay=True)  # a variant that fixes it
    # what a report states from a stored configuration
    assert search.describe_search_space("sgdm", {}, True).knobs == {"weight_decay": ("log", 1e-6, 1e-2)}
    assert search.describe_search_space("sgdm", {}).knobs == {}


def test_weight_decay_is_not_added_to_an_optimizer_without_it(monkeypatch):
    class NoDecay:
        lr_range = (1e-3, 1e-1)
        search_space: ClassVar[dict] = {}

        @staticmethod
        def hyperparameter_defaults() -> dict:
            return {"lr": 1e-2, "momentum": 0.9}

    monkeypatch.setattr(search, "get_optimizer_info", lambda name: NoDecay)
    monkeypatch.setattr(variants, "get_optimizer_info", lambda name: NoDecay)
    spec = OptimizerSpec("plain", "plain")
    assert weight_decay_kind(spec) is None
    assert search_space(spec, tune_weight_decay=True) == {"lr": ("log", 1e-3, 1e-1)}


def test_compare_tunes_weight_decay_in_its_range(tmp_path):
    experiment = Experiment(
        out=tmp_path, tasks=["rosenbrock"], optimizers=["adamw", "sgdm"], trials=3, seeds=1, epochs=1,
        tune_weight_decay=True, prune=False,
    )  # fmt: skip
    compare(experiment)
    for optimizer, kind in (("adamw", "decoupled"), ("sgdm", "coupled")):
        low, high = WEIGHT_DECAY_RANGES[kind]
        trials = _tune_study(experiment, optimizer).trials
        assert len(trials) == 3 and all(low <= t.params["weight_decay"] <= high for t in trials)


# --- the preset, the budget --------------------------------------------------------------------------------------


def test_the_powered_preset(tmp_path):
    powered = experiment_from(None, protocol="powered", tasks=["digits"])
    assert (powered.trials, powered.tune_seeds, powered.seeds, powered.max_widenings) == (16, 2, 10, 2)
    assert powered.eval_subset is None and powered.widen_factor == 10.0 and powered.widen_trials() == 8
    quick = experiment_from(None, tasks=["digits"])
    assert (quick.protocol, quick.trials, quick.tune_seeds, quick.seeds, quick.max_widenings) == ("quick", 8, 1, 3, 0)
    path = tmp_path / "study.toml"
    path.write_text('protocol = "powered"\ntasks = ["digits"]\ntrials = 20\neval_subset = 100\n')
    from_file = load_experiment_file(path)
    assert (from_file.trials, from_file.eval_subset, from_file.tune_seeds, from_file.seeds) == (20, 100, 2, 10)
    assert load_experiment_file(path, trials=2, seeds=2).trials == 2  # a CI-size check overrides sizes
    path.write_text('tasks = ["digits"]\nprotocol = "thorough"\n')
    with pytest.raises(
        ConfigError, match=r"study.toml:2: Invalid protocol: 'thorough'; expected one of 'quick', 'powered'"
    ):
        load_experiment_file(path)
    text = planned_budget(powered)
    assert "16 tuning trials + up to 2 widening(s) of 8 trial(s), each on 2 tuning seed(s), + 10 rerun seeds" in text
    assert "= 42-74 runs" in text and "scored on full splits" in text


def test_compare_prints_the_planned_budget(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "optarena", "compare", "--task", "rosenbrock", "--optimizers", "adamw", "--protocol",
         "powered", "--trials", "2", "--prepare", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    out = " ".join(run.stdout.split())
    assert "budget (powered protocol): per task and optimizer 2 tuning trials + up to 2 widening(s) of 1" in out
    assert "set apart from the powered preset: trials 2 (preset 16)" in out


def test_the_budget_is_stated_in_the_tuning_study(tmp_path):
    experiment = Experiment(
        out=tmp_path, tasks=["rosenbrock"], optimizers=["adamw"], trials=3, seeds=2, tune_seeds=2, epochs=2,
        prune=False, max_widenings=1, protocol="powered",
    )  # fmt: skip
    compare(experiment)
    study = _tune_study(experiment, "adamw")
    got = study.user_attrs["budget"]
    assert set(got) == set(budget.FIELDS)
    tuned = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    rounds = len({w["round"] for w in records.widenings_of(study)})
    assert got["trials"] == len(tuned) == 3 + rounds * 1 and got["trials_planned"] == got["trials"]
    assert (got["protocol"], got["tune_seeds"], got["seeds"], got["widenings"]) == ("powered", 2, 2, rounds)
    assert got["runs"] == 2 * got["trials"] + 2
    steps_per_run = get_task("rosenbrock").build(experiment.settings("rosenbrock")).steps_per_epoch * 2
    assert got["steps"] == steps_per_run * got["runs"] and got["epochs"] == 2 * got["runs"]
    final = optuna.load_study(study_name=study.study_name.replace("/tune", "/final"), storage=experiment.storage_url)
    seconds = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in [*tuned, *final.trials])
    assert got["seconds"] == pytest.approx(seconds, abs=0.01) and got["seconds"] > 0
    assert records.load_results(experiment.storage_url, "default").pairs["rosenbrock", "adamw"].config.budget == got


def test_report_of_a_store_without_a_budget(tmp_path):
    from optarena.arena.render.report import build_report

    experiment = Experiment(out=tmp_path, tasks=["rosenbrock"], optimizers=["adamw"], trials=1, seeds=1, epochs=1)
    compare(experiment)
    study = _tune_study(experiment, "adamw")
    study.set_user_attr("budget", None)  # as a store written before the budget existed reads
    assert records.load_results(experiment.storage_url, "default").pairs["rosenbrock", "adamw"].config.budget is None
    assert build_report(experiment.storage_url, "default", tmp_path / "report").is_file()


# --- the project's study files ------------------------------------------------------------------------------------

STUDIES = sorted(p for p in (REPO / "experiments" / "evidence").glob("*.toml") if p.name != "claims.toml")


def _judged_by_claims() -> set[str]:
    """The study files claims.toml points at: tests/test_evidence.py runs those at CI size (`evidence --smoke`)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    claims = tomllib.loads((REPO / "experiments" / "evidence" / "claims.toml").read_text(encoding="utf-8"))
    return {entry["experiment"] for entry in claims.get("claim", []) if "experiment" in entry}


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_every_study_file_states_its_scale_budget_and_time(path):
    experiment = load_experiment_file(path)
    header = path.read_text(encoding="utf-8").split("\nname = ")[0]
    for words in ("Claim scale", "Budget", "Estimated CPU time", "Run"):
        assert f"# {words}" in header, (path.name, words)
    assert f"optarena compare --config experiments/evidence/{path.name}" in header
    assert experiment.protocol == "powered"  # every evidence study runs the powered protocol
    assert experiment.trials >= 16 and experiment.tune_seeds >= 2 and experiment.seeds >= 10
    assert experiment.max_widenings >= 1


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_every_study_runs_at_ci_size(path, tmp_path):
    """The CI-size version of each study that no claim judges yet (tests/test_evidence.py runs the others):
    the sizes of `optarena evidence --smoke`, the file's protocol otherwise (2 tuning seeds, widening on)."""
    from optarena.arena.evidence.command import SMOKE
    from optarena.arena.spec.experiment import default_storage_url

    if path.name in _judged_by_claims():
        pytest.skip(f"{path.name} is run at CI size by tests/test_evidence.py (claims.toml judges it)")
    experiment = load_experiment_file(path, **SMOKE, out=tmp_path, storage=default_storage_url(tmp_path))
    compare(experiment)
    results = records.load_results(experiment.storage_url, experiment.name)
    assert set(results.pairs) == {(t, o) for t in experiment.tasks for o in experiment.optimizers}
    for pair in results.pairs.values():
        got = pair.config.budget
        assert got["trials"] == got["trials_planned"] >= 2 and got["seeds"] == 2 and got["tune_seeds"] == 2
        assert sorted(t.seed for t in pair.final) == [1, 2]


@pytest.mark.parametrize(
    "option,value,message",
    [
        ("--tune-seeds", "0", "Invalid tune_seeds: 0; expected an integer in [1, 100]"),
        ("--max-widenings", "11", "Invalid max_widenings: 11; expected an integer in [0, 10]"),
        ("--widen-factor", "1", "Invalid widen_factor: 1.0; expected a number in (1, 1e6]"),
    ],
)
def test_bad_protocol_options_are_one_line(tmp_path, option, value, message):
    run = subprocess.run(
        [sys.executable, "-m", "optarena", "compare", "--task", "rosenbrock", "--optimizers", "adamw", option, value,
         "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert run.returncode == 2 and run.stdout.strip() == f"error: {message}", run.stdout + run.stderr
    assert not (tmp_path / "optarena.db").exists()  # refused before anything is written
