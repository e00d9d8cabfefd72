"""A claim's verdict, and what else the evidence page reports from the stores: sensitivity and budget.

:func:`judge` reads the experiment's store and compares the method's seeds with the baseline's. Both
sides rerun the same seeds (seed s fixes the initial weights and the batch order on both), so the
difference is estimated **paired by seed**: the 95% Student-t interval of the per-seed differences
(scipy's ``ttest_rel``); where the seeds do not match, the 95% Welch interval. The interval decides —
wholly on the better side: *confirmed*; wholly on the worse side: *not confirmed*; straddling zero, or
fewer than two seeds: *inconclusive*. A seed that diverged has no value: if only one side diverged,
that side lost; if both did, the claim is inconclusive.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from optarena.arena.analysis.stats import mean_ci
from optarena.arena.analysis.views import seed_of
from optarena.arena.evidence.claims import Claim
from optarena.arena.spec.config import load_experiment_file
from optarena.arena.spec.experiment import Experiment
from optarena.arena.study import records
from optarena.arena.tasks import get_task

VERDICTS = ("confirmed", "not confirmed", "inconclusive")


@dataclass(frozen=True)
class Comparison:
    method: tuple[float, float, float]  # mean and 95% interval (finite seeds)
    baseline: tuple[float, float, float]
    difference: tuple[float, float, float]  # method − baseline, oriented so that positive is better
    n_method: int
    n_baseline: int
    verdict: str
    diverged_method: int = 0
    diverged_baseline: int = 0
    paired: bool = False
    welch: tuple[float, float, float] = (math.nan, math.nan, math.nan)  # the unpaired interval, for reference


def compare_seeds(
    method: Sequence[float],
    baseline: Sequence[float],
    mode: str,
    confidence: float = 0.95,
    paired: bool = False,
) -> Comparison:
    """Compare per-seed metrics (``nan`` = a diverged seed); ``mode`` 'max' or 'min' says which side is better.

    ``paired``: ``method[i]`` and ``baseline[i]`` ran the same seed; the interval is then the t interval of
    the per-seed differences, else Welch's.
    """
    a_all, b_all = np.asarray(method, dtype=float), np.asarray(baseline, dtype=float)
    if paired and len(a_all) != len(b_all):
        raise ValueError(f"Invalid paired comparison: {len(a_all)} method seeds against {len(b_all)} baseline seeds")
    a, b = a_all[np.isfinite(a_all)], b_all[np.isfinite(b_all)]
    lost_a, lost_b = len(a_all) - len(a), len(b_all) - len(b)
    nan3 = (math.nan, math.nan, math.nan)
    summary = (mean_ci(a) if len(a) else nan3, mean_ci(b) if len(b) else nan3)
    if lost_a or lost_b:
        verdict = "inconclusive" if lost_a and lost_b else "not confirmed" if lost_a else "confirmed"
        return Comparison(*summary, nan3, len(a_all), len(b_all), verdict, lost_a, lost_b, paired)
    sign = 1.0 if mode == "max" else -1.0
    diff = sign * (a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return Comparison(*summary, (diff, -math.inf, math.inf), len(a), len(b), "inconclusive", paired=paired)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    welch = (diff, diff, diff)
    if se > 0:
        df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch–Satterthwaite
        half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
        welch = (diff, diff - half, diff + half)
    _, low, high = mean_ci(sign * (a - b), confidence) if paired else welch
    verdict = "confirmed" if low > 0 else "not confirmed" if high < 0 else "inconclusive"
    return Comparison(*summary, (diff, low, high), len(a), len(b), verdict, paired=paired, welch=welch)


@dataclass(frozen=True)
class Judgement:
    claim: Claim
    experiment: Experiment
    comparison: Comparison


class MissingRuns(RuntimeError):
    """The store has no reruns (or no tuning trials) of an optimizer a claim needs."""


def _record(experiment: Experiment, task: str, optimizer: str, phase: str = "final") -> records.PairResults:
    record = records.load_results(experiment.storage_url, experiment.name).pairs.get((task, optimizer))
    if record is None or not getattr(record, phase):
        raise MissingRuns(
            f"No reruns of {optimizer} on {task} in {experiment.storage_url} (experiment {experiment.name!r}); "
            "run it first (optarena evidence --run)"
        )
    return record


def seed_metrics(
    experiment: Experiment, task: str, optimizer: str, split: str = "test", at_epoch: int | None = None
) -> dict[int, float]:
    """Seed -> the ``split`` metric after ``at_epoch`` (None: the last epoch); ``nan`` for a diverged seed."""
    values = {}
    for trial in _record(experiment, task, optimizer).final:
        seed = seed_of(trial)
        rows = trial.run.rows if trial.run is not None else []
        if (trial.run is not None and trial.run.diverged) or not rows:
            values[seed] = math.nan
            continue
        if at_epoch is None:
            row = rows[-1]
        else:
            row = next((r for r in rows if int(r["epoch"]) == at_epoch), None)
            if row is None:
                raise RuntimeError(f"{optimizer} on {task}: the reruns end at epoch {int(rows[-1]['epoch'])}, "
                                   f"before at_epoch = {at_epoch}")  # fmt: skip
        value = float(row[f"{split}_metric"])
        values[seed] = value if math.isfinite(value) else math.nan
    return dict(sorted(values.items()))


def judge(claim: Claim, overrides: dict | None = None) -> Judgement:
    experiment = load_experiment_file(claim.experiment, **(overrides or {}))
    mode = get_task(claim.task).mode

    def metrics(name: str) -> dict[int, float]:
        return seed_metrics(experiment, claim.task, name, claim.split, claim.at_epoch)

    method, baseline = metrics(claim.method), metrics(claim.baseline)
    paired = list(method) == list(baseline)
    comparison = compare_seeds(list(method.values()), list(baseline.values()), mode, paired=paired)
    return Judgement(claim, experiment, comparison)


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


def sensitivity(experiment: Experiment, task: str, optimizer: str) -> Sensitivity:
    record = _record(experiment, task, optimizer, phase="tune")
    scored = [t for t in record.tune if t.value is not None and math.isfinite(t.value)]
    mode = get_task(task).mode
    values = [float(t.value) for t in scored]  # type: ignore[arg-type]
    if not scored:
        return Sensitivity(optimizer, len(record.tune), math.nan, math.nan, math.nan, len(record.tune), math.nan)
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


def budget(experiment: Experiment) -> Budget:
    results = records.load_results(experiment.storage_url, experiment.name)
    trials = [t for r in results.pairs.values() for t in (*r.tune, *r.final)]
    devices = tuple(
        sorted({str(t.run.device if t.run is not None and t.run.device is not None else "?") for t in trials})
    )
    threads = tuple(
        sorted({str(t.run.threads if t.run is not None and t.run.threads is not None else "?") for t in trials})
    )
    return Budget(experiment, len(trials), _seconds(trials), devices, threads)
