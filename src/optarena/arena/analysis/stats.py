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


# --- claims: paired tests, equivalence, multiplicity, power ---------------------------------------------------


def one_sided_p(differences: Sequence[float], bound: float, alternative: str) -> float:
    """One-sample t test of the mean of ``differences`` against ``bound``, one-sided.

    ``alternative='greater'``: H0 mean <= bound vs H1 mean > bound; ``'less'``: H0 mean >= bound vs H1 mean < bound.
    With paired per-seed differences this is the paired t test (scipy's ``ttest_rel`` on the two sides). A
    zero spread gives p = 0 or 1 by which side of ``bound`` the mean lies (0.5 when on it); fewer than two
    values give p = 1 (nothing can be rejected).
    """
    if alternative not in ("greater", "less"):
        raise ValueError(f"Invalid alternative: {alternative!r}; expected 'greater' or 'less'")
    d = np.asarray(differences, dtype=float)
    if len(d) < 2 or not np.isfinite(d).all():
        return 1.0
    sign = 1.0 if alternative == "greater" else -1.0
    shift = sign * (float(d.mean()) - bound)
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return 0.0 if shift > 0 else 1.0 if shift < 0 else 0.5
    t = shift / (sd / math.sqrt(len(d)))
    return float(stats.t.sf(t, len(d) - 1))


def tost(differences: Sequence[float], low: float, high: float) -> tuple[float, float, float]:
    """Two one-sided tests of equivalence: H0 mean <= low or mean >= high, against low < mean < high.

    Returns ``(p, p_low, p_high)``: ``p_low`` tests mean > low, ``p_high`` tests mean < high, and the TOST p
    is the larger of the two (equivalence is shown at level α when p < α, i.e. when the 1 − 2α interval lies
    inside (low, high)).
    """
    if not low < high:
        raise ValueError(f"Invalid equivalence bounds: low {low!r} must be below high {high!r}")
    p_low = one_sided_p(differences, low, "greater")
    p_high = one_sided_p(differences, high, "less")
    return max(p_low, p_high), p_low, p_high


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order (reject H_i at family level α when adj_i < α).

    Sorted ascending p_(1) <= ... <= p_(m): adj_(k) = max_{j <= k} min(1, (m − j + 1) · p_(j)).
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1 or ((p < 0) | (p > 1) | ~np.isfinite(p)).any():
        raise ValueError(f"Invalid p-values: {list(pvalues)!r}; expected numbers in [0, 1]")
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p[index])))
        adjusted[index] = running
    return [float(v) for v in adjusted]


def holm_alphas(pvalues: Sequence[float], alpha: float = 0.05) -> list[float]:
    """The level each hypothesis is tested at by Holm's procedure: α / (m − rank + 1) by its p-value's rank.

    Equivalent reading to :func:`holm` up to the step-down stop: H_(k) is rejected when p_(j) < α/(m − j + 1)
    for every j <= k.
    """
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    alphas = np.empty(m)
    for rank, index in enumerate(np.argsort(p, kind="stable")):
        alphas[index] = alpha / (m - rank)
    return [float(a) for a in alphas]


def minimum_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean difference a two-sided paired t test at ``alpha`` detects with ``power``.

    MDE = (t_{1−α/2, n−1} + t_{power, n−1}) · sd / √n (the usual normal-approximation formula with t
    quantiles for the n − 1 degrees of freedom of the per-seed differences). ``inf`` for fewer than 2 values.
    """
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"Invalid alpha {alpha!r} or power {power!r}; expected both in (0, 1)")
    if n < 2 or not math.isfinite(sd):
        return math.inf
    df = n - 1
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * sd / math.sqrt(n))


def reachable_target(best_values: Sequence[float], mode: str) -> float:
    """A target most optimizers can reach: the median over optimizers of each one's best value.

    ``best_values`` holds one number per optimizer (its median over seeds of the best evaluation); at least
    half the optimizers reach the median, so steps-to-target and performance profiles compare them.
    """
    values = [v for v in best_values if math.isfinite(v)]
    if not values:
        raise ValueError("Invalid best values: none is finite, no target can be derived")
    if mode not in ("max", "min"):
        raise ValueError(f"Invalid mode: {mode!r}; expected 'max' or 'min'")
    # The lower median for 'max' (and the upper for 'min') is a value some optimizer reached: never between two.
    ordered = sorted(values, reverse=(mode == "min"))
    return float(ordered[(len(ordered) - 1) // 2])
