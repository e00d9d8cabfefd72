"""A claim's verdict, and what else the evidence page reports from the stores: sensitivity and budget.

:func:`judge` reads the experiment's store and compares the method's seeds with the baseline's. Both
sides rerun the same seeds (seed s fixes the initial weights and the batch order on both), so the
difference is estimated **paired by seed** (Welch's unpaired statistics where the seeds do not match),
oriented so that positive favours the method. Each claim is two one-sided t tests at α = 0.025 each
(the 95% two-sided interval read on one side), against the claim's pre-registered bounds
(:attr:`Claim.confirm_bound`, :attr:`Claim.refute_bound`):

* *confirmed*: the difference lies above the confirm bound (0, the margin or −margin by the claim's rule) and,
  for a superiority claim, the 95% interval reaches the margin (an effect wholly below the margin is not
  practically relevant, however sure its sign);
* *refuted*: otherwise, where it lies below the paper's effect (or the margin where the paper gives no number;
  −margin for a non-inferiority claim) — a TOST-style reading: the interval excludes the effect the paper claims;
* *underpowered*: neither; the page prints the minimum detectable effect at this number of seeds.

:func:`correct` applies Holm's step-down correction across every claim of the page, separately to the
confirming and the refuting tests, and gives the final verdicts. A seed that diverged has no value: if
only one side diverged, that side lost (decided without a test); if both did, nothing is decided.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from optarena.arena.analysis import stats
from optarena.arena.analysis.views import seed_of
from optarena.arena.evidence.claims import Claim
from optarena.arena.spec.config import load_experiment_file
from optarena.arena.spec.experiment import Experiment
from optarena.arena.study import records
from optarena.arena.tasks import Task, get_task

VERDICTS = ("confirmed", "refuted", "underpowered")
ALPHA = 0.025  # per one-sided test: the 95% two-sided interval lies wholly beyond the bound
POWER = 0.8  # for the minimum detectable effect
NAN3 = (math.nan, math.nan, math.nan)


@dataclass(frozen=True)
class Comparison:
    method: tuple[float, float, float]  # mean and 95% interval (finite seeds)
    baseline: tuple[float, float, float]
    difference: tuple[float, float, float]  # method − baseline, oriented so that positive is better
    n_method: int
    n_baseline: int
    verdict: str  # before the page's multiplicity correction
    diverged_method: int = 0
    diverged_baseline: int = 0
    paired: bool = False
    welch: tuple[float, float, float] = NAN3  # the unpaired interval, for reference
    p_confirm: float = 1.0  # one-sided: H0 difference <= confirm bound
    p_refute: float = 1.0  # one-sided: H0 difference >= refute bound
    mde: float = math.inf  # minimum detectable effect (two-sided 5%, power 0.8) at this n and spread
    sd: float = math.nan  # of the per-seed differences (paired) or the pooled standard error × √n


def _welch_p(diff: float, se: float, df: float, bound: float, greater: bool) -> float:
    if se == 0:
        shift = diff - bound if greater else bound - diff
        return 0.0 if shift > 0 else 1.0 if shift < 0 else 0.5
    t = (diff - bound) / se if greater else (bound - diff) / se
    return float(scipy_stats.t.sf(t, df))


def compare_seeds(
    method: Sequence[float],
    baseline: Sequence[float],
    mode: str,
    confidence: float = 0.95,
    paired: bool = False,
    confirm_bound: float = 0.0,
    refute_bound: float | None = None,
    relevant: float | None = None,
) -> Comparison:
    """Compare per-seed metrics (``nan`` = a diverged seed); ``mode`` 'max' or 'min' says which side is better.

    ``paired``: ``method[i]`` and ``baseline[i]`` ran the same seed; the tests are then the one-sample t tests
    of the per-seed differences, else Welch's. ``refute_bound`` defaults to ``confirm_bound``. ``relevant``: a
    confirmed difference's interval must reach it (the margin of a superiority claim; None: no such condition).
    """
    refute_bound = confirm_bound if refute_bound is None else refute_bound
    if refute_bound < confirm_bound:
        raise ValueError(f"Invalid bounds: refute_bound {refute_bound!r} below confirm_bound {confirm_bound!r}")
    a_all, b_all = np.asarray(method, dtype=float), np.asarray(baseline, dtype=float)
    if paired and len(a_all) != len(b_all):
        raise ValueError(f"Invalid paired comparison: {len(a_all)} method seeds against {len(b_all)} baseline seeds")
    a, b = a_all[np.isfinite(a_all)], b_all[np.isfinite(b_all)]
    lost_a, lost_b = len(a_all) - len(a), len(b_all) - len(b)
    summary = (stats.mean_ci(a) if len(a) else NAN3, stats.mean_ci(b) if len(b) else NAN3)
    if lost_a or lost_b:
        # decided without a test: p = 0 for the side's verdict, 1 for the other (both lost: nothing decided)
        verdict, p_confirm, p_refute = (
            ("underpowered", 1.0, 1.0) if lost_a and lost_b else ("refuted", 1.0, 0.0) if lost_a
            else ("confirmed", 0.0, 1.0)
        )  # fmt: skip
        return Comparison(*summary, NAN3, len(a_all), len(b_all), verdict, lost_a, lost_b, paired,
                          p_confirm=p_confirm, p_refute=p_refute)  # fmt: skip
    sign = 1.0 if mode == "max" else -1.0
    diff = sign * (a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return Comparison(*summary, (diff, -math.inf, math.inf), len(a), len(b), "underpowered", paired=paired)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if se > 0 else 1.0  # Welch–Satterthwaite
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, df)) * se
    welch = (diff, diff - half, diff + half)
    if paired:
        d = sign * (a - b)
        difference = stats.mean_ci(d, confidence)
        p_confirm = stats.one_sided_p(d, confirm_bound, "greater")
        p_refute = stats.one_sided_p(d, refute_bound, "less")
        sd = float(d.std(ddof=1))
        mde = stats.minimum_detectable_effect(sd, len(d), 2 * ALPHA, POWER)
    else:
        difference = welch
        p_confirm = _welch_p(diff, se, df, confirm_bound, greater=True)
        p_refute = _welch_p(diff, se, df, refute_bound, greater=False)
        n = min(len(a), len(b))
        sd = se * math.sqrt(n)
        mde = stats.minimum_detectable_effect(sd, n, 2 * ALPHA, POWER)
    verdict = decide(p_confirm, p_refute, difference[2], relevant)
    return Comparison(*summary, difference, len(a), len(b), verdict, paired=paired, welch=welch,
                      p_confirm=p_confirm, p_refute=p_refute, mde=mde, sd=sd)  # fmt: skip


@dataclass(frozen=True)
class Judgement:
    claim: Claim
    experiment: Experiment
    comparison: Comparison
    method_seeds: dict[int, float]  # seed -> the claim's metric (nan: diverged)
    baseline_seeds: dict[int, float]
    p_confirm_holm: float = math.nan  # Holm-adjusted across the page (nan: not yet corrected)
    p_refute_holm: float = math.nan
    verdict: str = ""  # after the correction; "" until :func:`correct`


def decide(p_confirm: float, p_refute: float, high: float, relevant: float | None, alpha: float = ALPHA) -> str:
    """The verdict from the (adjusted) one-sided p-values and the interval's upper end (see the module's rule)."""
    if p_confirm < alpha and (relevant is None or not high < relevant):
        return "confirmed"
    return "refuted" if p_refute < alpha else "underpowered"


def relevant_bound(claim: Claim) -> float | None:
    """What a confirmed difference's interval must reach: the margin for a superiority claim, else nothing."""
    return claim.margin if claim.rule == "superiority" else None


def correct(judgements: Sequence[Judgement], alpha: float = ALPHA) -> list[Judgement]:
    """The final verdicts: Holm's correction over every claim, for the confirming and the refuting tests."""
    confirm = stats.holm([j.comparison.p_confirm for j in judgements])
    refute = stats.holm([j.comparison.p_refute for j in judgements])
    out = []
    for j, pc, pr in zip(judgements, confirm, refute):
        decided = j.comparison.diverged_method or j.comparison.diverged_baseline
        high = j.comparison.difference[2] if not decided else math.inf  # a divergence decides without an interval
        verdict = decide(pc, pr, high, relevant_bound(j.claim), alpha)
        out.append(replace(j, p_confirm_holm=pc, p_refute_holm=pr, verdict=verdict))
    return out


class MissingRuns(RuntimeError):
    """The store has no reruns (or no tuning trials) of an optimizer a claim needs, or fewer reruns than its study
    planned (a study still running): a verdict is drawn at the pre-registered number of seeds or not at all."""


def _record(experiment: Experiment, task: str, optimizer: str, phase: str = "final") -> records.PairResults:
    record = records.load_results(experiment.storage_url, experiment.name).pairs.get((task, optimizer))
    if record is None or not getattr(record, phase):
        raise MissingRuns(
            f"No reruns of {optimizer} on {task} in {experiment.storage_url} (experiment {experiment.name!r}); "
            "run it first (optarena evidence --run)"
        )
    planned = record.config.experiment.get("seeds") if record.config is not None else None
    if phase == "final" and isinstance(planned, int) and len(record.final) < planned:
        raise MissingRuns(
            f"{len(record.final)} of the {planned} reruns of {optimizer} on {task} in {experiment.storage_url} "
            f"(experiment {experiment.name!r}); finish them first (optarena evidence --run)"
        )
    return record


def seed_metrics(
    experiment: Experiment,
    task: str,
    optimizer: str,
    split: str = "test",
    at_epoch: int | None = None,
    column: str | None = None,
) -> dict[int, float]:
    """Seed -> the ``split`` metric (or the recorded ``column``, e.g. ``fid``) after ``at_epoch`` (None: the last epoch
    that recorded it); ``nan`` for a diverged seed."""
    key = column or f"{split}_metric"
    values = {}
    for trial in _record(experiment, task, optimizer).final:
        seed = seed_of(trial)
        rows = [r for r in trial.run.rows if key in r] if trial.run is not None else []
        if (trial.run is not None and trial.run.diverged) or not rows:
            values[seed] = math.nan
            continue
        if at_epoch is None:
            row = rows[-1]
        else:
            row = next((r for r in rows if int(r["epoch"]) == at_epoch), None)
            if row is None:
                epochs = ", ".join(str(int(r["epoch"])) for r in rows)
                raise RuntimeError(f"{optimizer} on {task}: the reruns record {key} at epochs {epochs}, "
                                   f"not at at_epoch = {at_epoch}")  # fmt: skip
        value = float(row[key])
        values[seed] = value if math.isfinite(value) else math.nan
    return dict(sorted(values.items()))


def measured(claim: Claim, task: Task) -> tuple[str | None, str]:
    """The recorded column a claim compares (None: the split's ``*_metric``) and whether it is maximised; a
    ValueError if the task records no such metric or the claim's direction is not the metric's."""
    name = claim.metric.removeprefix(claim.split + " ")
    if name == task.metric:
        column, mode = None, task.mode
    elif claim.split == "test" and name in task.measurements:
        column, mode = name, task.measurements[name]
    else:
        valid = [f"{claim.split} {task.metric}", *(f"test {m}" for m in task.measurements if claim.split == "test")]
        measures = " or ".join(map(repr, valid))
        raise ValueError(f"claim {claim.id!r}: metric {claim.metric!r}; {claim.task} measures {measures}")
    if claim.direction != ("higher" if mode == "max" else "lower"):
        better = "higher" if mode == "max" else "lower"
        raise ValueError(f"claim {claim.id!r}: direction {claim.direction!r}, but a {better} {claim.metric} is better "
                         f"on {claim.task}")  # fmt: skip
    return column, mode


def judge(claim: Claim, overrides: dict | None = None) -> Judgement:
    """The claim's comparison before the page's correction (:func:`correct` gives the verdict)."""
    experiment = load_experiment_file(claim.experiment, **(overrides or {}))
    task = get_task(claim.task)
    column, mode = measured(claim, task)

    def metrics(name: str) -> dict[int, float]:
        return seed_metrics(experiment, claim.task, name, claim.split, claim.at_epoch, column)

    method, baseline = metrics(claim.method), metrics(claim.baseline)
    paired = list(method) == list(baseline)
    comparison = compare_seeds(
        list(method.values()), list(baseline.values()), mode, paired=paired,
        confirm_bound=claim.confirm_bound, refute_bound=claim.refute_bound, relevant=relevant_bound(claim),
    )  # fmt: skip
    return Judgement(claim, experiment, comparison, method, baseline, verdict=comparison.verdict)


# --- sensitivity and budget ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sensitivity:
    """How one optimizer's tuning trials (spread over its lr range by the sampler) scored on validation."""

    optimizer: str
    trials: int
    best: float
    median: float
    worst: float
    diverged: int
    best_lr: float
    lrs: int  # distinct learning rates tried


def sensitivity(experiment: Experiment, task: str, optimizer: str) -> Sensitivity:
    record = _record(experiment, task, optimizer, phase="tune")
    scored = [t for t in record.tune if t.value is not None and math.isfinite(t.value)]
    mode = get_task(task).mode
    values = [float(t.value) for t in scored]  # type: ignore[arg-type]
    lrs = len({t.params.get("lr") for t in record.tune if "lr" in t.params})
    if not scored:
        return Sensitivity(optimizer, len(record.tune), math.nan, math.nan, math.nan, len(record.tune), math.nan, lrs)
    best = (max if mode == "max" else min)(scored, key=lambda t: t.value)
    worst = min(values) if mode == "max" else max(values)
    return Sensitivity(
        optimizer,
        len(record.tune),
        float(best.value),  # type: ignore[arg-type]
        statistics.median(values),
        worst,
        len(record.tune) - len(scored),
        float(best.params.get("lr", math.nan)),
        lrs,
    )


def _seconds(trials: Sequence[records.TrialRecord]) -> float:
    return sum(t.seconds for t in trials if t.seconds is not None)


@dataclass(frozen=True)
class Budget:
    experiment: Experiment
    runs: int
    seconds: float
    devices: tuple[str, ...]
    threads: tuple[str, ...]
    recorded: dict[tuple[str, str], dict[str, Any] | None]  # (task, optimizer) -> the study's "budget" record
    protocol: dict[str, Any]  # the experiment's settings as its stores recorded them ({}: not recorded)


def _recorded_budgets(results: records.ExperimentResults) -> dict[tuple[str, str], dict[str, Any] | None]:
    """(task, optimizer) -> the tuning study's budget record (``StudyConfig.budget``), None where the store
    predates it."""
    found: dict[tuple[str, str], dict[str, Any] | None] = {}
    for key, pair in results.pairs.items():
        value = getattr(pair.config, "budget", None) if pair.config is not None else None
        found[key] = value if isinstance(value, dict) and value else None
    return found


def budget(experiment: Experiment) -> Budget:
    results = records.load_results(experiment.storage_url, experiment.name)
    trials = [t for r in results.pairs.values() for t in (*r.tune, *r.final)]
    devices = tuple(
        sorted({str(t.run.device if t.run is not None and t.run.device is not None else "?") for t in trials})
    )
    threads = tuple(
        sorted({str(t.run.threads if t.run is not None and t.run.threads is not None else "?") for t in trials})
    )
    configs = [p.config.experiment for p in results.pairs.values() if p.config is not None and p.config.experiment]
    protocol = dict(configs[0]) if configs else {}
    recorded = _recorded_budgets(results)
    return Budget(experiment, len(trials), _seconds(trials), devices, threads, recorded, protocol)
