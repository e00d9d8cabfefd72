"""The parts of the evidence page that read the stores beyond the verdicts: per-seed values, targets,
bursts, AGR's measured change, sensitivity and budgets. Each returns Markdown lines (or a data file)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from optarena.arena.analysis import stats
from optarena.arena.evidence.judgement import Judgement, MissingRuns, budget, sensitivity
from optarena.arena.render.markdown import code_span
from optarena.arena.render.markdown import text as md
from optarena.arena.study import records
from optarena.arena.tasks import get_task

TARGET_RULE = (
    "the target of each task is derived from the data: each optimizer in the store scores the median over its "
    "seeds of its best test-metric evaluation, and the target is the median of those scores over the optimizers "
    "(the lower median for a higher-is-better metric), so at least half of them reach it"
)


def row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(md(str(cell), in_table=True) for cell in cells) + " |"


def per_seed_csv(judgements: Sequence[Judgement], path: Path) -> None:
    """One row per claim and seed: both sides' values and the oriented difference (positive favours the method)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle, lineterminator="\n")
        out.writerow(["claim", "experiment", "task", "metric", "method", "baseline", "seed", "method_value",
                      "baseline_value", "difference"])  # fmt: skip
        for j in judgements:
            c, sign = j.claim, 1.0 if j.claim.direction == "higher" else -1.0
            for seed in sorted(set(j.method_seeds) | set(j.baseline_seeds)):
                a, b = j.method_seeds.get(seed, math.nan), j.baseline_seeds.get(seed, math.nan)
                out.writerow([c.id, c.experiment.name, c.task, c.metric, c.method, c.baseline, seed,
                              repr(a), repr(b), repr(sign * (a - b))])  # fmt: skip


def _best_values(pair: records.PairResults, mode: str) -> list[float]:
    curves = [t.run.rows for t in pair.final if t.run is not None and not t.run.diverged and t.run.rows]
    return [stats.best_value(c, mode) for c in curves]


def derived_target(results: records.ExperimentResults, task: str) -> float | None:
    """:data:`TARGET_RULE` over every optimizer of ``task`` in the store (None: no rerun)."""
    mode = get_task(task).mode
    medians = [float(np.median(v)) for (t, _), p in results.pairs.items() if t == task and (v := _best_values(p, mode))]
    return stats.reachable_target(medians, mode) if medians else None


def steps_to(pair: records.PairResults, target: float, mode: str) -> tuple[float, int, int]:
    """Median steps to ``target`` over every rerun (inf: not reached; a diverged rerun never reaches it),
    the reruns that reached it, and the reruns."""
    curves = [t.run.rows for t in pair.final if t.run is not None and t.run.rows]
    steps = [stats.steps_to_target(c, target, mode) for c in curves]
    return (float(np.median(steps)) if steps else math.inf), sum(math.isfinite(s) for s in steps), len(steps)


def target_lines(
    results: records.ExperimentResults, task: str, optimizers: Sequence[str]
) -> tuple[list[str], dict[str, float]]:
    """The time-to-target table of ``optimizers`` on ``task`` and their costs (for the profiles)."""
    target = derived_target(results, task)
    info = get_task(task)
    if target is None:
        return [], {}
    lines = [
        f"Steps to the derived target on {md(task)}: test {md(info.metric)} {'≥' if info.mode == 'max' else '≤'} "
        f"{target:.4g} (the task's fixed target is {info.target}).",
        "",
        "| optimizer | reruns reaching it | median steps to it |",
        "|---|---|---|",
    ]
    costs = {}
    for name in optimizers:
        pair = results.pairs.get((task, name))
        if pair is None or not pair.final:
            continue
        steps, reached, total = steps_to(pair, target, info.mode)
        costs[name] = steps
        lines.append(row([name, f"{reached}/{total}", "not reached" if math.isinf(steps) else f"{steps:,.0f}"]))
    return [*lines, ""], costs


def burst_lines(results: records.ExperimentResults, task: str, optimizers: Sequence[str]) -> list[str]:
    """How often each burst-capable optimizer's reruns restarted the burst (the store's ``burst`` events)."""
    lines = []
    for name in optimizers:
        pair = results.pairs.get((task, name))
        if pair is None or not pair.final or "adaburst" not in name:
            continue
        counts = [len(t.run.events.get("burst", [])) if t.run is not None else 0 for t in pair.final]
        steps = sorted({s for t in pair.final if t.run is not None for s in t.run.events.get("burst", [])})
        where = ", ".join(str(s) for s in steps[:12]) + (" …" if len(steps) > 12 else "") if steps else "—"
        lines.append(row([name, task, str(len(counts)), ", ".join(map(str, counts)), where]))
    if not lines:
        return []
    head = ["| optimizer | task | reruns | bursts per rerun | at steps |", "|---|---|---|---|---|"]
    return head + lines + [""]


def agr_lines(results: records.ExperimentResults, task: str, optimizers: Sequence[str]) -> list[str]:
    """AGR's relative change ‖AGR(g) − g‖/‖g‖ per layer type over training, where the reruns recorded it
    (``RunRecord.agr_change``: the median over a layer type's tensors, on each epoch's last gradient)."""
    found: list[str] = []
    for name in optimizers:
        pair = results.pairs.get((task, name))
        if pair is None or "agr" not in name:
            continue
        series: dict[str, list[list[float]]] = {}  # layer type -> one series per rerun
        for trial in pair.final:
            for layer, values in (trial.run.agr_change if trial.run is not None else {}).items():
                series.setdefault(layer, []).append([v for v in values if math.isfinite(v)])
        for layer, runs in sorted(series.items()):
            runs = [r for r in runs if r]
            if not runs:
                continue
            first = float(np.median([r[0] for r in runs]))
            last = float(np.median([r[-1] for r in runs]))
            largest = max(max(r) for r in runs)
            found.append(row([name, task, layer, len(runs), f"{first:.3g}", f"{last:.3g}", f"{largest:.3g}"]))
    if not found:
        return []
    return [
        "Recorded by the reruns at the end of every epoch, on that epoch's last gradient: the median over a layer "
        "type's tensors of ‖AGR(g) − g‖/‖g‖; the columns give its median over the reruns after the first and the "
        "last epoch, and the largest value any rerun recorded.",
        "",
        "| optimizer | task | layer type | reruns | after epoch 1 | after the last epoch | largest |",
        "|---|---|---|---|---|---|---|",
        *found,
        "",
    ]


def sensitivity_lines(judgements: Sequence[Judgement], task: str, optimizers: Sequence[str]) -> list[str]:
    experiment = judgements[0].experiment
    lines = [
        f"**{md(task)}** ({md(judgements[0].claim.experiment.name)}; validation {md(get_task(task).metric)} of the "
        "tuning trials, as stored)",
        "",
        "| optimizer | trials | distinct learning rates | best | median | worst | diverged | best lr |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in optimizers:
        try:
            s = sensitivity(experiment, task, name)
        except MissingRuns:
            continue
        lines.append(row([name, s.trials, s.lrs, f"{s.best:.4g}", f"{s.median:.4g}", f"{s.worst:.4g}", s.diverged,
                          f"{s.best_lr:.3g}"]))  # fmt: skip
    return [*lines, ""]


def _budget_text(value: dict[str, Any]) -> str:
    def shown(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, (list, tuple)):
            return ", ".join(map(str, v)) or "none"
        return str(v)

    return "; ".join(f"{k} {shown(v)}" for k, v in value.items())


def budget_lines(experiments: dict[Path, Any]) -> list[str]:
    """Compute per experiment, then the protocol's own budget record per study where the store has it."""
    lines = [
        "| experiment | runs (tuning + reruns) | compute (sum of run times) | device | threads per run "
        "| tuning trials × seeds per optimizer, as stored |",
        "|---|---|---|---|---|---|",
    ]
    recorded_lines: list[str] = []
    for path, experiment in experiments.items():
        b = budget(experiment)
        protocol = b.protocol
        shape = f"{protocol.get('trials', '?')} × {protocol.get('seeds', '?')}" if protocol else "not recorded"
        lines.append(row([path.name, b.runs, f"{b.seconds / 3600:.2f} h", ", ".join(b.devices), ", ".join(b.threads),
                          shape]))  # fmt: skip
        if not any(b.recorded.values()):
            recorded_lines.append(row([path.name, "every task", f"all {len(b.recorded)} studies",
                                       "not recorded (store predates the budget record)"]))  # fmt: skip
            continue
        for (task, optimizer), value in b.recorded.items():
            text = _budget_text(value) if value else "not recorded (store predates the budget record)"
            recorded_lines.append(row([path.name, task, optimizer, text]))
    lines += [
        "",
        "The protocol's budget record per study (trials, tuning seeds, seeds, range widenings, runs, steps or "
        "epochs, wall time):",
        "",
        "| experiment | task | optimizer | budget |",
        "|---|---|---|---|",
    ]
    return [*lines, *recorded_lines, ""]


def untested_lines(untested: Sequence[Any]) -> list[str]:
    from optarena.arena.spec.config import load_experiment_file
    from optarena.arena.study import store

    lines = ["| claim | paper | what it claims | why it is not re-tested | its study |", "|---|---|---|---|---|"]
    for u in untested:
        status = "—"
        if u.experiment is not None:
            status = f"{u.experiment.name}: no store yet"
            try:
                experiment = load_experiment_file(u.experiment)
                sqlite = store.sqlite_file(experiment.storage_url)
                if sqlite is None or sqlite.exists():  # never create an empty store by looking
                    names = store.list_experiments(experiment.storage_url)
                    if experiment.name in names:
                        status = f"{u.experiment.name}: its store has runs, not yet judged by a claim"
            except Exception as error:  # a study file that cannot be read is reported, not fatal to the page
                status = f"{u.experiment.name}: cannot be read ({error})"
        lines.append(row([u.id, u.paper, u.claim, u.reason, status]))
    return [*lines, ""]


__all__ = ["TARGET_RULE", "code_span"]
