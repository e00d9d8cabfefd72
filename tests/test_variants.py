"""Named optimizer variants in experiments: fixed options, schedules, AGR stop epoch, validation, end to end."""

from __future__ import annotations

import math

import optuna
import pytest
import torch

from optarena.arena.render.report import build_report
from optarena.arena.run import runner
from optarena.arena.spec.config import ConfigError, load_experiment_file
from optarena.arena.spec.experiment import Experiment
from optarena.arena.spec.search import suggest
from optarena.arena.spec.variants import OptimizerSpec, parse_variant, resolve
from optarena.arena.study.protocol import compare
from optarena.arena.study.records import load_results
from optarena.arena.tasks import TaskSettings, get_task
from optarena.schedules import SGDR, adamnx_lr_ratio


def _capture_optimizer(monkeypatch: pytest.MonkeyPatch) -> dict:
    seen: dict = {}
    create = runner.create_optimizer

    def spy(model, name, **kwargs):
        seen["name"], seen["kwargs"] = name, kwargs
        seen["optimizer"] = create(model, name, **kwargs)
        return seen["optimizer"]

    monkeypatch.setattr(runner, "create_optimizer", spy)
    return seen


def test_fixed_options_and_agr_stop_epoch_reach_the_optimizer(monkeypatch):
    seen = _capture_optimizer(monkeypatch)
    spec = parse_variant("paper_until_2", {"optimizer": "adamw_agr", "options": {"agr": "paper"}, "agr_stop_epoch": 2})
    task = get_task("digits")
    result = runner.train(task, spec, {"lr": 1e-3}, seed=1, epochs=1, settings=TaskSettings(subset=256))
    steps_per_epoch = 256 // 64
    assert seen["name"] == "adamw_agr"
    assert seen["kwargs"]["agr"] == "paper" and seen["kwargs"]["agr_stop_step"] == 2 * steps_per_epoch
    assert seen["optimizer"].param_groups[0]["agr"] == "paper"
    assert result.optimizer == "paper_until_2"


@pytest.mark.parametrize(
    "schedule,options,expected",
    [
        ("step", {"milestones": [0.5], "gamma": 0.1}, lambda lr, t, n, spe: lr * (0.1 if t >= round(0.5 * n) else 1)),
        ("cosine", {}, lambda lr, t, n, spe: 0.5 * lr * (1 + math.cos(math.pi * t / n))),
        ("adamnx", {}, lambda lr, t, n, spe: lr * adamnx_lr_ratio(t, total_steps=n)),
        (
            "sgdr",
            {"T_0": 1.0, "T_mult": 1.0},
            lambda lr, t, n, spe: 0.5 * lr * (1 + math.cos(math.pi * (t % spe) / spe)),
        ),
    ],
)
def test_schedule_is_stepped_once_per_batch(monkeypatch, schedule, options, expected):
    """The lr the optimizer holds after each batch is the schedule's value at that step."""
    seen = _capture_optimizer(monkeypatch)
    lrs: list[float] = []
    spec = parse_variant("v", {"optimizer": "sgdm", "schedule": schedule, "schedule_options": options})
    task = get_task("digits")
    settings = TaskSettings(subset=320)  # 5 steps of 64 per epoch

    def record_lr(epoch, row):
        lrs.append(seen["optimizer"].param_groups[0]["lr"])

    runner.train(task, spec, {"lr": 0.1}, seed=1, epochs=3, settings=settings, on_epoch=record_lr)
    n, spe = 15, 5
    # epoch e's record is taken after e*spe optimizer steps and as many schedule steps
    for epoch, lr in enumerate(lrs):
        assert lr == pytest.approx(expected(0.1, epoch * spe, n, spe), rel=1e-12, abs=1e-15)


def test_sgdr_variant_of_the_evidence_ends_its_second_cycle_with_the_run():
    """T_0 = 4/3 epochs with T_mult = 2 fits two whole cycles in 4 epochs: the lr restarts exactly at the end."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    spec = parse_variant(
        "sgdr", {"optimizer": "sgdm", "schedule": "sgdr", "schedule_options": {"T_0": 4 / 3, "T_mult": 2.0}}
    )
    schedule = spec.build_schedule(opt, total_steps=4 * 63, steps_per_epoch=63)
    assert isinstance(schedule, SGDR)
    lrs = []
    for _ in range(4 * 63):
        opt.step()
        schedule.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert min(lrs[: 4 * 63 - 1]) < 1e-3 and lrs[83] == pytest.approx(1.0)  # restart after 4/3 epochs (84 steps)
    assert lrs[-2] < 1e-3 and lrs[-1] == pytest.approx(1.0)  # the last step ran at the cycle's floor


def test_fixed_options_leave_the_search_space():
    assert set(resolve("lookahead_adaburst").search_space()) == {"lookahead_alpha", "burst_max"}
    spec = parse_variant("la_fixed", {"optimizer": "lookahead_adaburst", "options": {"burst_max": 1.0}})
    assert set(spec.search_space()) == {"lookahead_alpha"}
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    params = suggest(trial, spec)
    assert set(params) == {"lr", "lookahead_alpha"}


def test_a_variant_is_tuned_over_its_own_lr_range():
    # Adaburst's SGD-momentum ablation applies an SGD update: it is tuned over an SGD range, not AdamW's.
    entry = {"optimizer": "adaburst", "options": {"variant": "sgdm_burst"}, "lr_range": [1e-3, 1.0]}
    spec = parse_variant("sgdm_burst", entry)
    assert spec.tuned_lr_range() == (1e-3, 1.0) and resolve("adaburst").tuned_lr_range() == (1e-4, 1e-1)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    lrs = [suggest(study.ask(), spec)["lr"] for _ in range(50)]
    assert all(1e-3 <= lr <= 1.0 for lr in lrs) and max(lrs) > 1e-1


@pytest.mark.parametrize(
    "entry,message",
    [
        ({"optimizer": "nope"}, r"variant 'v'.*optimizer 'nope' is not registered"),
        ({"optimizer": "adamw", "colour": 1}, r"variant 'v'.*unknown key 'colour'"),
        ({"optimizer": "adamw", "options": {"lr": 0.1}}, r"variant 'v'.*may not fix lr"),
        ({"optimizer": "adamw", "options": {"momentum": 0.9}}, r"variant 'v'.*adamw has no option 'momentum'"),
        ({"optimizer": "adamw", "schedule": "linear"}, r"variant 'v'.*schedule 'linear'; valid schedules: step"),
        ({"optimizer": "adamw", "schedule": "step", "schedule_options": {"T_0": 1}}, r"'step' has no option 'T_0'"),
        ({"optimizer": "adamw", "schedule": "step", "schedule_options": {"gamma": 2.0}}, r"Invalid gamma: 2.0"),
        ({"optimizer": "adamw", "schedule": "sgdr", "schedule_options": {"T_mult": 0.5}}, r"variant 'v'.*T_mult"),
        ({"optimizer": "adamw", "schedule_options": {"gamma": 0.5}}, r"schedule_options without a schedule"),
        ({"optimizer": "adamw", "agr_stop_epoch": 2}, r"agr_stop_epoch needs AGR on"),
        ({"optimizer": "adamw_agr", "agr_stop_epoch": 0}, r"agr_stop_epoch 0; expected an integer >= 1"),
        ({"optimizer": "adamnx", "options": {"beta2_decay": "x"}}, r"variant 'v'.*beta2_decay"),
        (
            {"optimizer": "adamw", "lr_range": [1e-2, 1e-3]},
            r"variant 'v': lr_range \[0\.01, 0\.001\]; expected 0 < low",
        ),
        ({"optimizer": "adamw", "lr_range": [0.0, 1.0]}, r"lr_range \[0\.0, 1\.0\]; expected 0 < low"),
        ({"optimizer": "adamw", "lr_range": 0.1}, r"lr_range 0\.1; expected \[low, high\]"),
    ],
)
def test_bad_variants_are_named(entry, message):
    with pytest.raises(ValueError, match=message):
        parse_variant("v", entry)


def test_a_variant_may_not_take_a_registered_name():
    with pytest.raises(ValueError, match="registered optimizer's"):
        parse_variant("adamw", {"optimizer": "sgdm"})


def test_registered_names_resolve_to_themselves():
    assert resolve("adamw") == OptimizerSpec("adamw", "adamw")
    assert resolve("adamw").describe() == "—"
    with pytest.raises(ValueError, match="Unknown optimizer 'nope'"):
        resolve("nope")


def test_experiment_file_with_variants(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text(
        'name = "v"\ntasks = ["digits"]\noptimizers = ["adamw", "adamw_cos"]\n'
        '[variants.adamw_cos]\noptimizer = "adamw"\nschedule = "cosine"\n'
    )
    experiment = load_experiment_file(path)
    assert experiment.spec("adamw_cos").schedule == "cosine"
    assert experiment.to_dict()["variants"] == {"adamw_cos": {"optimizer": "adamw", "schedule": "cosine"}}
    path.write_text('name = "v"\ntasks = ["digits"]\noptimizers = ["adamw_cos"]\n')
    with pytest.raises(ConfigError, match="Unknown optimizer 'adamw_cos'"):
        load_experiment_file(path)
    path.write_text('name = "v"\noptimizers = ["x"]\n[variants.x]\noptimizer = "adamw"\nschedule = "linear"\n')
    with pytest.raises(ConfigError, match=r"variant 'x'.*schedule 'linear'"):
        load_experiment_file(path)


def test_compare_stores_and_reports_a_variant(tmp_path):
    experiment = Experiment(
        name="variants",
        tasks=["digits"],
        optimizers=["sgdm", "sgdm_step"],
        variants={"sgdm_step": {"optimizer": "sgdm", "schedule": "step"}},
        trials=2,
        seeds=2,
        epochs=2,
        subset=256,
        out=tmp_path,
        sampler="qmc",
        prune=False,
    )
    compare(experiment)
    pairs = load_results(experiment.storage_url, "variants").pairs
    assert len(pairs[("digits", "sgdm_step")].final) == 2
    finals = {name: [t.value for t in pairs[("digits", name)].final] for name in ("sgdm", "sgdm_step")}
    assert finals["sgdm"] != finals["sgdm_step"]
    report = build_report(experiment.storage_url, "variants", tmp_path / "report")
    text = report.with_suffix(".md").read_text() if report.suffix != ".md" else report.read_text()
    assert "sgdm; schedule step" in text


def test_a_grown_experiment_gives_workers_its_newest_configuration(tmp_path):
    """Variants added to an experiment later are queued, and `optarena worker` runs them too."""
    from optarena.arena.study import workers

    settings = dict(name="grown", tasks=["digits"], trials=1, seeds=1, epochs=1, subset=128, out=tmp_path)
    compare(Experiment(optimizers=["sgdm"], **settings), prepare_only=True)
    grown = Experiment(
        optimizers=["sgdm", "sgdm_cos"], variants={"sgdm_cos": {"optimizer": "sgdm", "schedule": "cosine"}}, **settings
    )
    compare(grown, prepare_only=True)
    loaded = workers.load_experiment_config(grown.storage_url, "grown")
    assert loaded.optimizers == ["sgdm", "sgdm_cos"] and loaded.spec("sgdm_cos").schedule == "cosine"
    assert workers.work(loaded) == 4  # both optimizers' tuning trial and rerun
