"""Views of an experiment's results: per task, per optimizer, and the numbers the report states.

:func:`collect` arranges :class:`~optarena.arena.study.records.ExperimentResults` into one
:class:`TaskView` per task (in the experiment's order), each with one :class:`OptimizerRuns` per
optimizer: its tuning trials and its reruns sorted by seed. The functions below compute from these
views what the report and the evidence page show — the winner rule, each optimizer's summary, the
machine the runs used — as numbers; wording them is the render layer's job.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from optarena.arena.analysis import stats
from optarena.arena.study.records import ExperimentResults, PairResults, TaskInfo, TrialRecord

CONFIDENCE = 0.95


def median(values: Sequence[float]) -> float:
    return float(np.median(values)) if len(values) else math.nan


def seed_of(trial: TrialRecord) -> int:
    """The seed a rerun ran on (its trial number where the store does not say)."""
    return trial.seed if trial.seed is not None else trial.number


def trial_score(trial: TrialRecord) -> float | None:
    """A tuning trial's validation value; a pruned one keeps its last reported value."""
    if trial.value is not None:
        return float(trial.value)
    if trial.intermediate_values:
        return float(trial.intermediate_values[max(trial.intermediate_values)])
    return None


@dataclass
class OptimizerRuns:
    """One optimizer on one task: its tuning trials and its seeded reruns (sorted by seed)."""

    name: str
    tune: list[TrialRecord]
    finals: list[TrialRecord]
    mode: str

    @property
    def worst(self) -> float:
        return -math.inf if self.mode == "max" else math.inf

    def diverged(self, trial: TrialRecord) -> bool:
        value = trial.value
        return (trial.run is not None and trial.run.diverged) or value is None or not math.isfinite(value)

    @property
    def values(self) -> list[float]:
        """Final test metric per seed; a diverged run scores the worst value, as it does in tuning."""
        return [self.worst if self.diverged(t) else float(t.value) for t in self.finals]  # type: ignore[arg-type]

    @property
    def finite_values(self) -> list[float]:
        return [float(t.value) for t in self.finals if not self.diverged(t)]  # type: ignore[arg-type]

    @property
    def n_diverged(self) -> int:
        return sum(self.diverged(t) for t in self.finals)

    def curves(self, include_diverged: bool = False) -> list[list[dict[str, float]]]:
        """Each rerun's per-epoch rows (those of diverged reruns only if asked)."""
        return [
            list(t.run.rows)
            for t in self.finals
            if t.run is not None and t.run.rows and (include_diverged or not self.diverged(t))
        ]

    def configuration(self) -> dict[str, Any]:
        """The configuration that was rerun (from the reruns; the best tuning trial if none ran yet)."""
        if self.finals:
            config = dict(self.finals[0].params)
            if config:
                return config
        scored = [t for t in self.tune if t.state == "complete" and t.value is not None and math.isfinite(t.value)]
        if not scored:
            return {}
        best = max(scored, key=lambda t: t.value) if self.mode == "max" else min(scored, key=lambda t: t.value)
        return dict(best.params)


@dataclass
class TaskView:
    name: str
    metric: str
    mode: str
    target: float | None  # what steps- and time-to-target use (see reporting_target)
    kind: str
    runs: list[OptimizerRuns] = field(default_factory=list)
    stored_target: float | None = None  # the experiment's or the task's target, as the store recorded it
    target_derived: bool = False  # target is the reachable target derived from the reruns, not the stored one


def reporting_target(view: TaskView) -> tuple[float | None, bool]:
    """The target steps- and time-to-target are read at, and whether it was derived.

    The stored target when the median rerun of at least half the optimizers reaches it; otherwise (a target nobody
    reaches leaves those columns and the performance profile empty) the reachable target of the reruns
    (:func:`optarena.arena.analysis.stats.reachable_target`: the median over optimizers of each one's median best
    test metric, the rule the evidence page uses), so that they compare the optimizers.
    """
    with_curves = [runs.curves(include_diverged=True) for runs in view.runs]
    with_curves = [curves for curves in with_curves if curves]
    if not with_curves:
        return view.stored_target, False
    if view.stored_target is not None:
        reaching = [
            math.isfinite(median([stats.steps_to_target(c, view.stored_target, view.mode) for c in curves]))
            for curves in with_curves
        ]
        if 2 * sum(reaching) >= len(reaching):
            return view.stored_target, False
    bests = [[stats.best_value(c, view.mode) for c in runs.curves()] for runs in view.runs]
    medians = [median(b) for b in bests if b]
    if not any(math.isfinite(m) for m in medians):
        return view.stored_target, False
    return stats.reachable_target(medians, view.mode), True


@dataclass
class ExperimentView:
    """An experiment's results arranged for reading."""

    name: str
    config: dict[str, Any]  # the experiment's settings as its first described study recorded them
    tasks: list[TaskView]
    optimizers: list[str]  # in the experiment's order, then any others found in the store
    pairs: list[PairResults]  # every (task, optimizer) pair, sorted


def _ordered(preferred: Iterable[str], present: Iterable[str]) -> list[str]:
    """``present`` in the experiment's configured order, anything else after it, sorted."""
    present = set(present)
    out = [p for p in dict.fromkeys(preferred) if p in present]
    return out + sorted(present - set(out))


def collect(results: ExperimentResults) -> ExperimentView:
    pairs = results.pairs
    keys = sorted(pairs)
    configs = [pairs[k].config.experiment for k in keys if pairs[k].config and pairs[k].config.experiment]
    config: dict[str, Any] = dict(configs[0]) if configs else {}
    optimizers = _ordered(config.get("optimizers", []), (o for _, o in pairs))
    tasks = []
    for task_name in _ordered(config.get("tasks", []), (t for t, _ in pairs)):
        described = next((pairs[k].config for k in keys if k[0] == task_name and pairs[k].config), None)
        info = described.task if described is not None else TaskInfo()
        view = TaskView(task_name, info.metric, info.mode, info.target, info.kind, stored_target=info.target)
        for optimizer in optimizers:
            pair = pairs.get((task_name, optimizer))
            if pair is not None:
                finals = sorted(pair.final, key=seed_of)
                tune = sorted(pair.tune, key=lambda t: t.number)
                view.runs.append(OptimizerRuns(optimizer, tune, finals, info.mode))
        view.target, view.target_derived = reporting_target(view)
        tasks.append(view)
    return ExperimentView(results.name, config, tasks, optimizers, [pairs[k] for k in keys])


# --- the numbers the report states ------------------------------------------------------------------------


@dataclass(frozen=True)
class Ranking:
    """Whether one optimizer's final-metric interval lies beyond every other's, and why (not)."""

    winner: str | None
    reason: Literal["too few optimizers", "single seed", "overlap", "separated"]


def rank(task: TaskView) -> Ranking:
    """The separated winner, or None: fewer than two optimizers reran, some reran on one seed, or the
    95% intervals of the final test metric overlap."""
    ran = [r for r in task.runs if r.finals]
    if len(ran) < 2:
        return Ranking(None, "too few optimizers")
    if any(len(r.finals) < 2 for r in ran):
        return Ranking(None, "single seed")
    intervals = {}
    for runs in ran:
        # A diverged rerun scores the worst value, so its optimizer's interval is the worst point.
        intervals[runs.name] = (
            (runs.worst,) * 3 if runs.n_diverged else stats.mean_ci(runs.values, CONFIDENCE)  # type: ignore[assignment]
        )
    winner = stats.separated_winner(intervals, task.mode)
    return Ranking(winner, "overlap" if winner is None else "separated")


@dataclass(frozen=True)
class Summary:
    """One optimizer's reruns on one task, as the summary table reports them."""

    final: tuple[float, float, float]  # mean and 95% interval over the seeds that did not diverge (nan if none)
    finite: int  # seeds that did not diverge
    seeds: int  # reruns
    median_final: float  # over every seed, a diverged one at the worst value
    median_best: float | None  # median over the non-diverged seeds of each one's best evaluation
    steps_to_target: float | None  # median over every seed (inf: not reached); None: no target or no rerun
    seconds_to_target: float | None
    reached: int  # seeds that reached the target
    curves: int  # seeds with curves (diverged ones included)
    curve_area: float | None  # median train-loss area over the non-diverged seeds
    diverged: int


def summarize(task: TaskView, runs: OptimizerRuns) -> Summary:
    finite = runs.finite_values
    final = stats.mean_ci(finite, CONFIDENCE) if finite else (math.nan,) * 3
    curves = runs.curves(include_diverged=True)
    best = [stats.best_value(c, task.mode) for c in runs.curves()]
    steps = seconds = None
    reached = 0
    if task.target is not None and curves:
        steps = median([stats.steps_to_target(c, task.target, task.mode) for c in curves])
        seconds = median([stats.time_to_target(c, task.target, task.mode) for c in curves])
        reached = sum(stats.first_reaching(c, task.target, task.mode) is not None for c in curves)
    areas = [stats.curve_area(c) for c in runs.curves()]
    return Summary(
        final=final,  # type: ignore[arg-type]
        finite=len(finite),
        seeds=len(runs.finals),
        median_final=median(runs.values),
        median_best=median(best) if best else None,
        steps_to_target=steps,
        seconds_to_target=seconds,
        reached=reached,
        curves=len(curves),
        curve_area=median(areas) if areas else None,
        diverged=runs.n_diverged,
    )


def epochs_run(task: TaskView) -> int | None:
    """The most epochs a non-diverged rerun of ``task`` recorded; None if none did."""
    observed = [c[-1]["epoch"] for runs in task.runs for c in runs.curves()]
    return int(max(observed)) if observed else None


@dataclass(frozen=True)
class Environment:
    """Where the reruns ran: devices, torch threads, the load average, and the software versions."""

    devices: list[str]  # sorted; '?' where a run did not say
    threads: list[str]
    loads: list[float]  # each rerun's 1-minute load average when it started
    versions: dict[str, list[str]]  # package -> every version found, sorted


def environment(view: ExperimentView) -> Environment:
    finals = [t.run for pair in view.pairs for t in pair.final]
    versions: dict[str, set[str]] = {}
    for pair in view.pairs:
        for key, value in (pair.config.versions if pair.config is not None else {}).items():
            versions.setdefault(key, set()).add(str(value))
    return Environment(
        devices=sorted({str(run.device) if run is not None and run.device is not None else "?" for run in finals}),
        threads=sorted({str(run.threads) if run is not None and run.threads is not None else "?" for run in finals}),
        loads=[run.load_average[0] for run in finals if run is not None and run.load_average],
        versions={key: sorted(found) for key, found in sorted(versions.items())},
    )


def steps_to_target_costs(tasks: Sequence[TaskView]) -> dict[str, dict[str, float]]:
    """task -> optimizer -> median steps-to-target over its reruns (inf: not reached), for tasks with a target."""
    costs = {}
    for task in tasks:
        if task.target is None:
            continue
        row = {}
        for runs in task.runs:
            curves = runs.curves(include_diverged=True)
            if curves:
                row[runs.name] = median([stats.steps_to_target(c, task.target, task.mode) for c in curves])
        if row:
            costs[task.name] = row
    return costs


# --- generative tasks: FID and samples ---------------------------------------------------------------------


def generation_rows(curve: Sequence[dict[str, float]]) -> list[dict[str, float]]:
    """The evaluations of a run that measured its samples (FID, precision, recall): its FID epochs."""
    return [row for row in curve if "fid" in row]


@dataclass(frozen=True)
class GenerationSummary:
    """One optimizer's samples at the last FID epoch, over its non-diverged reruns."""

    fid: tuple[float, float, float]  # mean and 95% interval (clipped at 0)
    precision: float  # mean
    recall: float  # mean
    seeds: int
    epoch: int


def summarize_generation(runs: OptimizerRuns) -> GenerationSummary | None:
    """The last FID, precision and recall of each non-diverged rerun, over the seeds; None if none measured them."""
    last = [rows[-1] for rows in map(generation_rows, runs.curves()) if rows]
    if not last:
        return None
    mean, low, high = stats.mean_ci([row["fid"] for row in last], CONFIDENCE)
    return GenerationSummary(
        fid=(mean, max(low, 0.0), high),  # a t-interval over few seeds can pass below 0; a distance cannot
        precision=float(np.mean([row.get("precision", math.nan) for row in last])),
        recall=float(np.mean([row.get("recall", math.nan) for row in last])),
        seeds=len(last),
        epoch=int(min(row["epoch"] for row in last)),
    )


def generation_info(task: TaskView) -> dict[str, Any]:
    """How the task's samples were made and scored (FID features, their accuracy, sampler), as a rerun recorded it."""
    for runs in task.runs:
        for trial in runs.finals:
            if trial.run is not None and trial.run.generation:
                return dict(trial.run.generation)
    return {}


def shared_samples(task: TaskView) -> tuple[int | None, dict[str, dict[int, str]]]:
    """The lowest seed whose rerun kept samples for every optimizer that kept any, and those sample grids
    (optimizer -> epoch -> base64 PNG): the same seed, so the same initial noise, for every optimizer."""
    kept = {
        runs.name: {seed_of(t): t.run.samples for t in runs.finals if t.run is not None and t.run.samples}
        for runs in task.runs
    }
    kept = {name: by_seed for name, by_seed in kept.items() if by_seed}
    common = set.intersection(*(set(by_seed) for by_seed in kept.values())) if kept else set()
    if not common:
        return None, {}
    seed = min(common)
    return seed, {name: by_seed[seed] for name, by_seed in kept.items()}
