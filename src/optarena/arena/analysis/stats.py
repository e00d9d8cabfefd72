"""Summary statistics of runs: confidence intervals, steps- and time-to-target, curve area, profiles."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and the two ends of its Student-t confidence interval (the interval is the mean when n = 1)."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def curve_ci(curves: Sequence[Sequence[float]], confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise mean and t-interval of equally long curves (one per seed)."""
    y = np.asarray(curves, dtype=float)
    mean = y.mean(axis=0)
    if len(y) < 2:
        return mean, mean, mean
    half = stats.t.ppf(0.5 + confidence / 2, len(y) - 1) * y.std(axis=0, ddof=1) / math.sqrt(len(y))
    return mean, mean - half, mean + half


def reached(value: float, target: float, mode: str) -> bool:
    return value >= target if mode == "max" else value <= target


def first_reaching(
    records: Sequence[dict[str, float]], target: float, mode: str, key: str = "test_metric"
) -> dict[str, float] | None:
    """The first evaluation whose ``key`` reaches ``target`` (None if none does)."""
    for row in records:
        if reached(row[key], target, mode):
            return row
    return None


def steps_to_target(records: Sequence[dict[str, float]], target: float, mode: str, key: str = "test_metric") -> float:
    row = first_reaching(records, target, mode, key)
    return math.inf if row is None else row["step"]


def time_to_target(records: Sequence[dict[str, float]], target: float, mode: str, key: str = "test_metric") -> float:
    row = first_reaching(records, target, mode, key)
    return math.inf if row is None else row["wall_time"]


def curve_area(records: Sequence[dict[str, float]], key: str = "train_loss") -> float:
    """Area under ``key`` against the fraction of training done (trapezoid rule): lower is faster for a loss."""
    steps = np.asarray([r["step"] for r in records], dtype=float)
    values = np.asarray([r[key] for r in records], dtype=float)
    if len(steps) < 2 or steps[-1] == 0:
        return float(values[0]) if len(values) else math.nan
    return float(np.trapezoid(values, steps / steps[-1]))


def best_value(records: Sequence[dict[str, float]], mode: str, key: str = "test_metric") -> float:
    values = [r[key] for r in records]
    return max(values) if mode == "max" else min(values)


def separated_winner(intervals: dict[str, tuple[float, float, float]], mode: str) -> str | None:
    """The optimizer whose interval lies entirely beyond every other's, or None when the intervals overlap."""
    if len(intervals) < 2:
        return None
    ranked = sorted(intervals, key=lambda k: intervals[k][0], reverse=(mode == "max"))
    best, rest = ranked[0], ranked[1:]
    _, low, high = intervals[best]
    if mode == "max":
        return best if all(low > intervals[o][2] for o in rest) else None
    return best if all(high < intervals[o][1] for o in rest) else None


def performance_profile(costs: dict[str, dict[str, float]], taus: Sequence[float]) -> dict[str, list[float]]:
    """Dolan–Moré profiles: for each optimizer, the fraction of tasks it solves within τ × the best cost.

    ``costs[task][optimizer]`` is a cost such as steps-to-target (``inf`` when never reached).
    """
    optimizers = sorted({o for row in costs.values() for o in row})
    profile = {o: [] for o in optimizers}
    for tau in taus:
        for o in optimizers:
            solved = 0
            for row in costs.values():
                best = min(row.values())
                cost = row.get(o, math.inf)
                if math.isfinite(best) and math.isfinite(cost) and cost <= tau * best:
                    solved += 1
            profile[o].append(solved / max(1, len(costs)))
    return profile
