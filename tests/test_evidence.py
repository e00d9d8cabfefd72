"""Claims, verdicts, and the evidence command end to end on a minutes-long experiment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from optarena.arena.evidence.claims import load_claims
from optarena.arena.evidence.judgement import compare_seeds
from optarena.arena.spec.config import ConfigError, load_experiment_file

REPO = Path(__file__).resolve().parents[1]


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
    assert compare_seeds(a, b, "max").verdict == "inconclusive"
    with pytest.raises(ValueError, match="paired comparison: 4 method seeds against 3"):
        compare_seeds(a, b[:3], "max", paired=True)


@pytest.mark.parametrize(
    "method,baseline,mode,verdict",
    [
        ([0.80, 0.81, 0.79], [0.90, 0.91, 0.89], "max", "not confirmed"),
        ([0.85, 0.95, 0.75], [0.86, 0.80, 0.92], "max", "inconclusive"),
        ([0.30, 0.31, 0.29], [0.50, 0.52, 0.49], "min", "confirmed"),  # a lower loss is better
        ([0.9], [0.8, 0.81], "max", "inconclusive"),  # one seed: no interval
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
        'task = "digits"\nmethod = "adamw_agr"\nbaseline = "adamw"\n'
    )
    out = tmp_path / "results.md"
    run_evidence(tmp_path, "--claims", str(claims), "--run", "--smoke", "--out", str(out))
    text = out.read_text()
    assert "smoke scale: not evidence" in text
    row = next(line for line in text.splitlines() if line.startswith("| agr-adamw"))
    assert "adamw_agr" in row and " 2/2 " in row  # two seeds each at smoke scale
    assert any(f"**{v}**" in row for v in ("confirmed", "not confirmed", "inconclusive"))
    assert (tmp_path / "runs" / "evidence-smoke" / "agr_digits" / "optarena.db").is_file()


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
    run_evidence(tmp_path, "--claims", str(claims_path), "--run", "--smoke", "--out", str(out), timeout=1800, env=env)
    text = out.read_text()
    claims = load_claims(claims_path)
    for claim in claims:
        row = next(line for line in text.splitlines() if line.startswith(f"| {claim.id}: "))
        assert any(f"**{v}**" in row for v in ("confirmed", "not confirmed", "inconclusive")), row
    for section in (
        "## What we learned",
        "### Learning-rate sensitivity",
        "### Budget",
        "## Setups",
        "## Full reports",
    ):
        assert section in text
    figures = sorted((tmp_path / "results" / "figures").glob("sensitivity-*.png"))
    assert figures and all(f"results/figures/{f.name}" in text for f in figures)
    for experiment in {c.experiment for c in claims}:
        name = load_experiment_file(experiment).name
        assert (tmp_path / "results" / name / "report.md").is_file()


@pytest.mark.parametrize(
    "method,baseline,verdict",
    [
        ([0.9, float("nan"), 0.91], [0.5, 0.6, 0.55], "not confirmed"),  # a diverged seed loses
        ([0.5, 0.6, 0.55], [0.9, 0.91, float("nan")], "confirmed"),
        ([float("nan"), 0.9], [0.9, float("nan")], "inconclusive"),
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
        f'task = "digits"\nmethod = "adamw"\nbaseline = "sgdm"\n{extra}\n'
    )
    with pytest.raises(ConfigError, match=message):
        load_claims(path)


def test_claims_whose_runs_are_missing_are_listed_not_judged(tmp_path):
    experiment = tmp_path / "never.toml"
    experiment.write_text(f'name = "never"\ntasks = ["digits"]\noptimizers = ["adamw", "sgdm"]\nout = "{tmp_path}"\n')
    claims = tmp_path / "claims.toml"
    claims.write_text(
        '[[claim]]\nid = "x"\npaper = "P"\nclaim = "c"\npaper_result = "r"\nexperiment = "never.toml"\n'
        'task = "digits"\nmethod = "adamw"\nbaseline = "sgdm"\n'
    )
    out = tmp_path / "results.md"
    run_evidence(tmp_path, "--claims", str(claims), "--out", str(out))
    text = out.read_text()
    assert "## Not run yet" in text and "- x (P): adamw vs sgdm in `never.toml`" in text
    assert "| x: " not in text  # no verdict row without data
