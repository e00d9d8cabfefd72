"""Claims, verdicts, and the evidence command end to end on a minutes-long experiment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from scipy import stats

from optarena.arena.evidence.claims import load_claims
from optarena.arena.evidence.judgement import VERDICTS, compare_seeds
from optarena.arena.spec.config import ConfigError, load_experiment_file
from optarena.arena.study import records

REPO = Path(__file__).resolve().parents[1]
CLAIM_KEYS = 'metric = "test accuracy"\ndirection = "higher"\nmargin = 0.01\npaper_effect_source = "none given"\n'


def run_evidence(cwd: Path, *args: str, timeout: int = 600, env: dict | None = None) -> None:
    """`optarena evidence ARGS` in ``cwd`` as a user runs it; fails with the command's output."""
    run = subprocess.run(
        [sys.executable, "-m", "optarena", "evidence", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


def write_adamw_vs_sgdm_claim(folder: Path, name: str, file: str) -> Path:
    """A claims file in ``folder`` with claim ``x``: AdamW beats SGD-momentum on digits, in experiment ``file``."""
    experiment = f'name = "{name}"\ntasks = ["digits"]\noptimizers = ["adamw", "sgdm"]\nout = "{folder}"\n'
    (folder / file).write_text(experiment)
    claims = folder / "claims.toml"
    claims.write_text(
        f'[[claim]]\nid = "x"\npaper = "P"\nclaim = "c"\npaper_result = "r"\nexperiment = "{file}"\n'
        'task = "digits"\nmethod = "adamw"\nbaseline = "sgdm"\n' + CLAIM_KEYS
    )
    return claims


def trial_owners(db: Path) -> set[int]:
    """The processes (pids) that ran the finished trials of the SQLite store ``db``."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    owners = set()
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            owner = records.owner_of(trial)
            owners.add(owner["pid"] if isinstance(owner, dict) else None)
    return owners


def test_difference_interval_is_welchs():
    a, b = [0.91, 0.93, 0.92, 0.95], [0.88, 0.90, 0.86]
    got = compare_seeds(a, b, "max")
    # scipy's own Welch test, an independent statement of the same interval
    want = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert got.difference[1] == pytest.approx(want.low, rel=1e-12)
    assert got.difference[2] == pytest.approx(want.high, rel=1e-12)
    assert got.difference[0] == pytest.approx(np.mean(a) - np.mean(b), rel=1e-12)
    assert got.verdict == "confirmed"


def test_paired_interval_is_the_t_interval_of_per_seed_differences():
    a, b = [0.91, 0.93, 0.92, 0.95], [0.90, 0.915, 0.91, 0.94]
    got = compare_seeds(a, b, "max", paired=True)
    want = stats.ttest_rel(a, b).confidence_interval(0.95)  # scipy's paired test, independently
    assert got.difference[1] == pytest.approx(want.low, rel=1e-12)
    assert got.difference[2] == pytest.approx(want.high, rel=1e-12)
    assert got.verdict == "confirmed" and got.paired
    welch = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert got.welch[1:] == pytest.approx((welch.low, welch.high), rel=1e-12)  # shown beside it for reference
    # the same numbers unpaired: the shared seed effect is not removed, and nothing is decided
    assert compare_seeds(a, b, "max").verdict == "underpowered"
    with pytest.raises(ValueError, match="paired comparison: 4 method seeds against 3"):
        compare_seeds(a, b[:3], "max", paired=True)


@pytest.mark.parametrize(
    "method,baseline,mode,verdict",
    [
        ([0.80, 0.81, 0.79], [0.90, 0.91, 0.89], "max", "refuted"),
        ([0.85, 0.95, 0.75], [0.86, 0.80, 0.92], "max", "underpowered"),
        ([0.30, 0.31, 0.29], [0.50, 0.52, 0.49], "min", "confirmed"),  # a lower loss is better
        ([0.9], [0.8, 0.81], "max", "underpowered"),  # one seed: no interval
    ],
)
def test_verdicts(method, baseline, mode, verdict):
    assert compare_seeds(method, baseline, mode).verdict == verdict


def test_claims_file_errors_name_the_claim_and_the_key(tmp_path):
    path = tmp_path / "claims.toml"
    path.write_text('[[claim]]\nid = "x"\nclaim = "better"\n')
    with pytest.raises(ConfigError, match=r"claim 'x': missing key 'paper'"):
        load_claims(path)
    path.write_text('[[claim]]\nid = "x"\nwhatever = 1\n')
    with pytest.raises(ConfigError, match=r"claim 'x': unknown key 'whatever'"):
        load_claims(path)


def test_evidence_command_runs_the_experiment_and_writes_verdicts(tmp_path):
    experiment = tmp_path / "agr_digits.toml"
    experiment.write_text(
        f'name = "agr"\ntasks = ["digits"]\noptimizers = ["adamw", "adamw_agr"]\nout = "{tmp_path}"\n'
    )
    claims = tmp_path / "claims.toml"
    claims.write_text(
        "[[claim]]\n"
        'id = "agr-adamw"\npaper = "AGR (seed 003)"\nclaim = "AdamW+AGR beats AdamW"\n'
        'paper_result = "higher Top-1 on Tiny-ImageNet"\nexperiment = "agr_digits.toml"\n'
        'task = "digits"\nmethod = "adamw_agr"\nbaseline = "adamw"\n' + CLAIM_KEYS
    )
    out = tmp_path / "results.md"
    run_evidence(tmp_path, "--claims", str(claims), "--run", "--smoke", "--out", str(out))
    text = out.read_text()
    assert "smoke scale: not evidence" in text
    row = next(line for line in text.splitlines() if line.startswith("| agr-adamw: "))
    assert "adamw_agr" in row
    summary = next(line for line in text.splitlines() if line.startswith("| agr-adamw |"))
    assert " 2/2 paired " in summary  # two seeds each at smoke scale
    assert any(f"**{v}**" in summary for v in VERDICTS)
    per_seed = (tmp_path / "results" / "claims-per-seed.csv").read_text().splitlines()
    assert per_seed[0].startswith("claim,experiment,task,metric,method,baseline,seed,")
    assert len(per_seed) == 1 + 2 and all(line.startswith("agr-adamw,") for line in per_seed[1:])
    assert (tmp_path / "results" / "figures" / "forest.png").is_file()
    assert (tmp_path / "runs" / "evidence-smoke" / "agr_digits" / "optarena.db").is_file()
    # AGR's relative change as the reruns recorded it over training, beside the measurement at initialization
    assert "| optimizer | task | layer type | reruns | after epoch 1 | after the last epoch | largest |" in text
    recorded = next(line for line in text.splitlines() if line.startswith("| adamw_agr | digits | Linear.weight | 2 |"))
    assert all(0 < float(cell) < 1 for cell in recorded.strip("|").split("|")[4:7])


def test_a_failing_worker_is_reported_after_this_process_ran_its_share(tmp_path, monkeypatch):
    from optarena.arena.evidence import command

    monkeypatch.chdir(tmp_path)  # the smoke stores go to runs/evidence-smoke/ here
    claims = write_adamw_vs_sgdm_claim(tmp_path, "w", "digits.toml")
    fail = [sys.executable, "-c", "import sys; sys.exit(3)"]
    monkeypatch.setattr(command, "worker_command", lambda experiment: fail)
    failed = r"1 of the 1 'optarena worker' processes on experiment 'w' exited with code 3"
    with pytest.raises(RuntimeError, match=failed):
        command.evidence(claims, tmp_path / "r.md", run=True, smoke=True, workers=2)
    with pytest.raises(ValueError, match=r"Invalid workers: 0; expected an integer >= 1"):
        command.evidence(claims, tmp_path / "r.md", workers=0)
    outcome = command.evidence(claims, tmp_path / "r.md", smoke=True)  # this process ran the whole budget
    assert not outcome.missing and [j.claim.id for j in outcome.judgements] == ["x"]
    assert trial_owners(tmp_path / "runs" / "evidence-smoke" / "digits" / "optarena.db") == {os.getpid()}


def test_the_projects_claims_file_is_valid():
    """experiments/evidence/claims.toml parses, and every claim's experiment, task and optimizers exist."""
    claims = load_claims(REPO / "experiments" / "evidence" / "claims.toml")
    assert len({c.id for c in claims}) == len(claims)
    for claim in claims:
        experiment = load_experiment_file(claim.experiment)
        assert claim.task in experiment.tasks
        assert {claim.method, claim.baseline} <= set(experiment.optimizers), claim.id


def test_every_study_of_the_project_runs_at_ci_size(tmp_path):
    """The CI-size version of experiments/evidence: every study, claim, figure and report, end to end."""
    from optarena.arena.tasks.idx import shared_data_dir

    out = tmp_path / "results.md"
    env = {**os.environ, "OPTARENA_SHARED_DATA": str(shared_data_dir().resolve())}
    claims_path = REPO / "experiments" / "evidence" / "claims.toml"
    # two processes share each study's trials (one core each on CI's two-core machine)
    args = ("--claims", str(claims_path), "--run", "--smoke", "--workers", "2", "--out", str(out))
    run_evidence(tmp_path, *args, timeout=3600, env=env)
    stores = sorted((tmp_path / "runs" / "evidence-smoke").glob("*/optarena.db"))
    shared = [path.parent.name for path in stores if len(trial_owners(path)) == 2]
    assert len(stores) == len({c.experiment for c in load_claims(claims_path)}) and shared, stores
    text = out.read_text()
    claims = load_claims(claims_path)
    for claim in claims:
        row = next(line for line in text.splitlines() if line.startswith(f"| {claim.id}: "))
        assert any(f"**{v}**" in row for v in VERDICTS), row
    for section in (
        "## All claims",
        "### Learning-rate sensitivity",
        "### Time to target",
        "## Not re-tested",
        "## Budget",
        "## Commentary (hand-written, not generated from the stores)",
        "## Setups",
        "## Full reports",
    ):
        assert section in text
    assert "not recorded (store predates the budget record)" not in text  # the powered protocol records it
    assert "The protocol's budget is recorded by " in text
    per_seed = (tmp_path / "results" / "claims-per-seed.csv").read_text().splitlines()[1:]
    assert {line.split(",")[0] for line in per_seed} == {c.id for c in claims}  # every claim's seeds, 2 each
    assert len(per_seed) == 2 * len(claims)
    for name in ("forest.png", *(f"curves-{p}.png" for p in ("adaburst--seed-000", "agr--seed-003"))):
        assert f"results/figures/{name}" in text and (tmp_path / "results" / "figures" / name).is_file()
    figures = sorted((tmp_path / "results" / "figures").glob("sensitivity-*.png"))
    assert figures and all(f"results/figures/{f.name}" in text for f in figures)
    for experiment in {c.experiment for c in claims}:
        name = load_experiment_file(experiment).name
        assert (tmp_path / "results" / name / "report.md").is_file()


@pytest.mark.parametrize(
    "method,baseline,verdict",
    [
        ([0.9, float("nan"), 0.91], [0.5, 0.6, 0.55], "refuted"),  # a diverged seed loses
        ([0.5, 0.6, 0.55], [0.9, 0.91, float("nan")], "confirmed"),
        ([float("nan"), 0.9], [0.9, float("nan")], "underpowered"),
    ],
)
def test_diverged_seeds_decide_against_their_side(method, baseline, verdict):
    result = compare_seeds(method, baseline, "max")
    assert result.verdict == verdict
    assert (result.diverged_method, result.diverged_baseline) == (
        sum(v != v for v in method),
        sum(v != v for v in baseline),
    )


@pytest.mark.parametrize(
    "extra,message",
    [
        ('split = "val"', r"claim 'x': split 'val'; expected one of test, train"),
        ("at_epoch = 0", r"claim 'x': at_epoch 0; expected an integer >= 1"),
    ],
)
def test_claim_measure_keys_are_validated(tmp_path, extra, message):
    path = tmp_path / "claims.toml"
    path.write_text(
        '[[claim]]\nid = "x"\npaper = "p"\nclaim = "c"\npaper_result = "r"\nexperiment = "e.toml"\n'
        f'task = "digits"\nmethod = "adamw"\nbaseline = "sgdm"\n{extra}\n' + CLAIM_KEYS
    )
    with pytest.raises(ConfigError, match=message):
        load_claims(path)


def test_claims_whose_runs_are_missing_are_listed_not_judged(tmp_path):
    claims = write_adamw_vs_sgdm_claim(tmp_path, "never", "never.toml")
    out = tmp_path / "results.md"
    run_evidence(tmp_path, "--claims", str(claims), "--out", str(out))
    text = out.read_text()
    assert "## Not run yet" in text and "- x (P): adamw vs sgdm in `never.toml`" in text
    assert "| x: " not in text  # no verdict row without data
    assert not (tmp_path / "optarena.db").exists()  # reading the claims created no empty store


def test_a_claim_is_not_judged_before_its_studies_have_every_planned_rerun(monkeypatch):
    """A study still running (2 of its 3 planned reruns stored) gives no verdict: seeds are pre-registered."""
    from types import SimpleNamespace

    from optarena.arena.evidence import judgement
    from optarena.arena.study import records

    def stored(done: int, planned: int | None):
        config = SimpleNamespace(experiment={} if planned is None else {"seeds": planned})
        pair = records.PairResults("digits", "adamw", final=[object()] * done, config=config)  # type: ignore[arg-type]
        return SimpleNamespace(pairs={("digits", "adamw"): pair})

    experiment = SimpleNamespace(storage_url="sqlite:///x.db", name="e")
    monkeypatch.setattr(records, "load_results", lambda url, name: stored(2, 3))
    with pytest.raises(judgement.MissingRuns, match="2 of the 3 reruns of adamw on digits"):
        judgement._record(experiment, "digits", "adamw")
    for done, planned in ((3, 3), (2, None)):  # all planned; or a store that recorded no plan
        monkeypatch.setattr(records, "load_results", lambda url, name, d=done, p=planned: stored(d, p))
        assert len(judgement._record(experiment, "digits", "adamw").final) == done


# --- the pre-registered verdict rule -------------------------------------------------------------------------


def test_one_sided_p_values_are_scipys_paired_tests():
    a, b = [0.91, 0.93, 0.92, 0.95], [0.90, 0.915, 0.91, 0.94]
    got = compare_seeds(a, b, "max", paired=True, confirm_bound=0.002, refute_bound=0.03)
    d = np.subtract(a, b)
    assert got.p_confirm == pytest.approx(stats.ttest_1samp(d, 0.002, alternative="greater").pvalue, rel=1e-12)
    assert got.p_refute == pytest.approx(stats.ttest_1samp(d, 0.03, alternative="less").pvalue, rel=1e-12)
    mde = (stats.t.ppf(0.975, 3) + stats.t.ppf(0.8, 3)) * d.std(ddof=1) / 2
    assert got.mde == pytest.approx(mde, rel=1e-12)


def test_refuted_when_the_interval_excludes_the_papers_effect():
    # a precise null: the paper's +5 points lie far above the interval, and so does the margin
    method, baseline = [0.861, 0.862, 0.860, 0.863], [0.860, 0.863, 0.861, 0.862]
    assert compare_seeds(method, baseline, "max", paired=True, refute_bound=0.05).verdict == "refuted"
    # the same spread cannot exclude an effect inside its interval
    assert compare_seeds(method, baseline, "max", paired=True, refute_bound=0.0015).verdict == "underpowered"


def test_a_sure_but_negligible_difference_is_not_confirmed():
    method, baseline = [2.50002, 2.48002, 2.51002], [2.5, 2.48, 2.51]  # +2e-5 nats, a loss: lower is better
    plain = compare_seeds(baseline, method, "min", paired=True, refute_bound=0.01)
    assert plain.verdict == "confirmed"  # the sign is sure...
    judged = compare_seeds(baseline, method, "min", paired=True, refute_bound=0.01, relevant=0.01)
    assert judged.verdict == "refuted"  # ...but the interval lies wholly below the margin


def _claim(tmp_path, cid: str, **extra):
    from optarena.arena.evidence.claims import Claim

    return Claim(id=cid, paper="P", claim="c", paper_result="r", experiment=tmp_path / "e.toml", task="digits",
                 method="m", baseline="b", margin=0.01, **extra)  # fmt: skip


def test_holm_correction_across_the_page(tmp_path):
    from optarena.arena.evidence.judgement import Judgement, correct
    from optarena.arena.spec.experiment import Experiment

    experiment = Experiment(name="e", tasks=["digits"], optimizers=["adamw", "sgdm"], out=tmp_path)
    rng = np.random.default_rng(0)
    base = rng.normal(0.8, 0.01, size=5)
    shifts = [0.05, 0.012, 0.011, 0.0]  # one clear effect, two borderline, one null
    judgements = []
    for i, shift in enumerate(shifts):
        method = base + shift + rng.normal(0, 0.004, size=5)
        cmp = compare_seeds(list(method), list(base), "max", paired=True, relevant=0.01, refute_bound=0.01)
        judgements.append(Judgement(_claim(tmp_path, f"c{i}"), experiment, cmp, {}, {}))
    corrected = correct(judgements)
    raw = [j.comparison.p_confirm for j in judgements]
    from optarena.arena.analysis.stats import holm

    assert [j.p_confirm_holm for j in corrected] == pytest.approx(holm(raw), rel=1e-12)
    assert [j.p_refute_holm for j in corrected] == pytest.approx(holm([j.comparison.p_refute for j in judgements]))
    for j in corrected:
        assert (j.verdict == "confirmed") == (j.p_confirm_holm < 0.025 and j.comparison.difference[2] >= 0.01)
    assert corrected[0].verdict == "confirmed"
    # a single claim keeps its raw p-value: the correction is over the page's claims
    assert correct(judgements[:1])[0].p_confirm_holm == pytest.approx(raw[0], rel=1e-12)


def test_claim_bounds_follow_the_rule(tmp_path):
    superiority = _claim(tmp_path, "s", paper_effect=0.05)
    assert (superiority.confirm_bound, superiority.refute_bound) == (0.0, 0.05)
    assert _claim(tmp_path, "n").refute_bound == 0.01  # no number from the paper: the margin
    relevance = _claim(tmp_path, "r", rule="relevance", paper_effect=0.004)
    assert (relevance.confirm_bound, relevance.refute_bound) == (0.01, 0.01)  # never below the confirm bound
    non_inferiority = _claim(tmp_path, "ni", rule="non-inferiority")
    assert (non_inferiority.confirm_bound, non_inferiority.refute_bound) == (-0.01, -0.01)


@pytest.mark.parametrize(
    "change,message",
    [
        (('direction = "higher"', 'direction = "up"'), r"claim 'x': direction 'up'; expected one of higher, lower"),
        (("margin = 0.01", "margin = 0"), r"claim 'x': margin 0.0; expected a number > 0"),
        (("margin = 0.01", 'margin = "1"'), r"claim 'x': key 'margin' must be a finite number"),
        (('metric = "test accuracy"', 'metric = "train accuracy"'), r"metric 'train accuracy' must start with"),
        (("margin = 0.01", 'margin = 0.01\nrule = "maybe"'), r"rule 'maybe'; expected one of superiority"),
        (("margin = 0.01", "margin = 0.01\npaper_effect = true"), r"key 'paper_effect' must be a finite number"),
        (('paper_effect_source = "none given"\n', ""), r"claim 'x': missing key 'paper_effect_source'"),
    ],
)
def test_pre_registration_keys_are_validated(tmp_path, change, message):
    path = tmp_path / "claims.toml"
    text = (
        '[[claim]]\nid = "x"\npaper = "p"\nclaim = "c"\npaper_result = "r"\nexperiment = "e.toml"\n'
        'task = "digits"\nmethod = "adamw"\nbaseline = "sgdm"\n' + CLAIM_KEYS
    )
    path.write_text(text.replace(*change))
    with pytest.raises(ConfigError, match=message):
        load_claims(path)


def test_untested_entries_and_their_studies(tmp_path):
    from optarena.arena.evidence.claims import load_claims_file

    path = tmp_path / "claims.toml"
    claim = (
        '[[claim]]\nid = "x"\npaper = "p"\nclaim = "c"\npaper_result = "r"\nexperiment = "e.toml"\n'
        'task = "digits"\nmethod = "adamw"\nbaseline = "sgdm"\n' + CLAIM_KEYS
    )
    path.write_text(claim + '[[untested]]\nid = "u"\npaper = "p"\nclaim = "GANs"\nreason = "no GAN task"\n'
                    'experiment = "later.toml"\n')  # fmt: skip
    untested = load_claims_file(path).untested
    assert [(u.id, u.reason, u.experiment) for u in untested] == [("u", "no GAN task", tmp_path / "later.toml")]
    path.write_text(claim + '[[untested]]\nid = "u"\npaper = "p"\nclaim = "GANs"\n')
    with pytest.raises(ConfigError, match=r"untested 'u': missing key 'reason'"):
        load_claims_file(path)
    path.write_text(claim + '[[untested]]\nid = "x"\npaper = "p"\nclaim = "c"\nreason = "r"\n')
    with pytest.raises(ConfigError, match=r"claim ids repeat: \['x'\]"):
        load_claims_file(path)


def test_the_projects_claims_carry_the_seeds_numbers():
    """The effects read from the seeds (not 'values lost'): AdamNX Table 11, AGR Tables 1-2, 5 and 7."""
    from optarena.arena.evidence.claims import load_claims_file

    claims_file = load_claims_file(REPO / "experiments" / "evidence" / "claims.toml")
    claims = {c.id: c for c in claims_file.claims}
    assert claims["adamnx-sgdm"].paper_effect == pytest.approx(0.3903 - 0.3566)  # Table 11, top-1 error
    assert claims["adamnx-radam"].paper_effect == pytest.approx(0.3612 - 0.3566)
    assert claims["agr-adamw"].paper_effect == pytest.approx(0.6850 - 0.6764)  # Table 5
    assert "9.34" in claims["agr-adan"].paper_result and "7.44" in claims["agr-adan"].paper_result  # Tables 1-2
    assert not any("values lost" in c.paper_result for c in claims_file.claims)
    # the CIFAR-10 training-accuracy number is compared on training accuracy
    train = claims["adaburst-sgdm-cifar10-train"]
    assert (train.split, train.metric, train.paper_effect) == ("train", "train accuracy", 0.0041)
    assert (
        "training" not in claims["adaburst-sgdm-cifar10"].paper_result
        or claims["adaburst-sgdm-cifar10"].split == "train"
    )
    untested = {"adamnx-tables-8-10", "adax-alone", "lookahead-larger-lr", "adabelief-gan"}
    assert {u.id for u in claims_file.untested} >= untested
    # registered before their studies ran: AGR against its comparators, the burst trigger, AdaBelief's defaults,
    # the generation (FID) claims
    studies = {c.experiment.name for c in claims_file.claims}
    assert {"agr_comparators.toml", "burst_trigger.toml", "adabelief_defaults.toml", "mnist1d.toml"} <= studies
    fid = claims["agr-adan-ddpm-fid"]
    assert (fid.experiment.name, fid.metric, fid.direction) == ("generation.toml", "test fid", "lower")
    assert "7.98" in fid.paper_result and "7.44" in fid.paper_result  # Table 2
    assert fid.paper_effect == pytest.approx(0.068 * 7.32, abs=0.01)  # its 6.8 % carried to the CPU store's FID
    assert claims["adaburst-adamw-ddpm-fid"].paper_effect is None  # 4.62 Inception points: no relative size


def test_budget_lines_print_the_recorded_budget_or_say_it_is_missing(tmp_path, monkeypatch):
    from optarena.arena.evidence import sections
    from optarena.arena.evidence.judgement import Budget
    from optarena.arena.spec.experiment import Experiment

    experiment = Experiment(name="new", tasks=["digits"], optimizers=["adamw", "sgdm"], out=tmp_path)
    recorded = {("digits", "adamw"): {"trials": 16, "tune_seeds": 2, "widened": ["lr"], "seconds": 12.3456},
                ("digits", "sgdm"): None}  # fmt: skip
    budgets = {
        "new": Budget(experiment, 40, 3600.0, ("cpu",), ("1",), recorded, {"trials": 16, "seeds": 10}),
        "old": Budget(experiment, 24, 7200.0, ("cpu",), ("1",), {("digits", "adamw"): None}, {"trials": 5, "seeds": 3}),
    }
    monkeypatch.setattr(sections, "budget", lambda e: budgets[e.name])
    lines = sections.budget_lines({tmp_path / "new.toml": experiment})
    text = "\n".join(lines)
    assert "| new.toml | 40 | 1.00 h | cpu | 1 | 16 × 10 |" in text
    assert "| new.toml | digits | adamw | trials 16; tune_seeds 2; widened lr; seconds 12.35 |" in text
    assert "| new.toml | digits | sgdm | not recorded (store predates the budget record) |" in text
    old = Experiment(name="old", tasks=["digits"], optimizers=["adamw", "sgdm"], out=tmp_path)
    text = "\n".join(sections.budget_lines({tmp_path / "old.toml": old}))
    assert "| old.toml | every task | all 1 studies | not recorded (store predates the budget record) |" in text


def test_agr_relative_change_is_the_closed_form_and_small_on_large_tensors(tmp_path):
    import torch

    from optarena.arena.evidence.agr_change import measure
    from optarena.arena.spec.experiment import Experiment
    from optarena.optim.agr import relative_change

    g = torch.randn(50, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    a = np.abs(g.numpy())
    want = np.linalg.norm(a / a.sum() * g.numpy()) / np.linalg.norm(g.numpy())  # ‖(|g|/Σ|g|) ⊙ g‖ / ‖g‖
    assert relative_change(g) == pytest.approx(want, rel=1e-12)
    assert relative_change(torch.zeros(3, 3)) == 0.0
    experiment = Experiment(name="e", tasks=["digits"], optimizers=["adamw", "adamw_agr"], out=tmp_path)
    changes = {c.kind: c for c in measure(experiment, "digits")}
    assert changes and all(0 < c.median <= c.maximum < 1 for c in changes.values())
    weights = [c for c in changes.values() if c.paper_scope]
    biases = [c for c in changes.values() if not c.paper_scope]
    assert weights and biases
    # the coefficients sum to 1 over a tensor: the bigger the tensor, the smaller the change
    assert max(c.median for c in weights) < min(c.median for c in biases)


def _fid_claim(**changes):
    from optarena.arena.evidence.claims import Claim

    fields = dict(
        id="agr-ddpm-fid", paper="AGR", claim="AGR improves Adan's FID", paper_result="FID 7.44 vs 7.98",
        experiment=REPO / "experiments/diffusion/fashion_ddpm.toml", task="fashion_mnist_ddpm", method="adan_agr",
        baseline="adan", metric="test fid", direction="lower", margin=0.5, paper_effect=0.54,
    )  # fmt: skip
    return Claim(**{**fields, **changes})


def test_a_claim_compares_a_generative_tasks_fid_read_from_the_stored_rows():
    """A claim may compare a measurement the task records besides its metric (the DDPM's FID, lower is better), at
    the last epoch that recorded it or at ``at_epoch``; the committed CPU diffusion store is the data."""
    from optarena.arena.evidence.judgement import judge
    from optarena.arena.study import records

    experiment = load_experiment_file(REPO / "experiments/diffusion/fashion_ddpm.toml")
    pairs = records.load_results(experiment.storage_url, experiment.name).pairs

    def fids(optimizer: str, epoch: int | None) -> list[float]:
        runs = [t.run.rows for t in pairs[("fashion_mnist_ddpm", optimizer)].final]
        rows = [[r for r in rows if "fid" in r and (epoch is None or int(r["epoch"]) == epoch)][-1] for rows in runs]
        return sorted(float(r["fid"]) for r in rows)

    for epoch in (None, 2):
        judgement = judge(_fid_claim(at_epoch=epoch))
        assert sorted(judgement.method_seeds.values()) == fids("adan_agr", epoch)
        assert sorted(judgement.baseline_seeds.values()) == fids("adan", epoch)
        assert fids("adan", epoch) != fids("adan", 4 if epoch == 2 else 2)  # the epochs differ: the test can tell
    mean = np.mean(list(judgement.baseline_seeds.values())) - np.mean(list(judgement.method_seeds.values()))
    assert judgement.comparison.difference[0] == pytest.approx(mean)  # positive favours the method: lower FID


def test_a_claims_metric_and_direction_must_be_what_the_task_records():
    from optarena.arena.evidence.judgement import judge

    with pytest.raises(ValueError, match="direction 'higher', but a lower test fid is better on fashion_mnist_ddpm"):
        judge(_fid_claim(direction="higher"))
    with pytest.raises(ValueError, match="measures 'test denoising_loss' or 'test fid' or 'test precision'"):
        judge(_fid_claim(metric="test inception_score"))
    with pytest.raises(RuntimeError, match="record fid at epochs 2, 4, not at at_epoch = 3"):
        judge(_fid_claim(at_epoch=3))


def test_a_measurement_claims_curve_is_drawn_at_the_epochs_that_recorded_it():
    """The claim's panel plots what the claim compares: FID where the reruns measured it (epochs 2 and 4 of the
    committed CPU diffusion store), not the denoising loss of every epoch."""
    from optarena.arena.evidence.figures import _series
    from optarena.arena.study import records

    experiment = load_experiment_file(REPO / "experiments/diffusion/fashion_ddpm.toml")
    pair = records.load_results(experiment.storage_url, experiment.name).pairs[("fashion_mnist_ddpm", "adan")]
    steps, mean, low, high = _series(pair, "fid")
    runs = [[r for r in t.run.rows if "fid" in r] for t in pair.final]
    assert [int(r["epoch"]) for r in runs[0]] == [2, 4] and len(steps) == 2
    assert list(steps) == [r["step"] for r in runs[0]]
    assert mean == pytest.approx(np.mean([[r["fid"] for r in rows] for rows in runs], axis=0))
    assert all(low < mean) and all(mean < high)
    loss_steps, *_ = _series(pair, "test_metric")
    assert len(loss_steps) > len(steps)  # every epoch (and the start) records the loss
