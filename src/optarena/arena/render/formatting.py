"""How the report writes numbers: metrics (accuracy as a percentage), intervals, steps, seconds, settings."""

from __future__ import annotations

import math
from typing import Any


def fmt_metric(value: float, metric: str) -> str:
    """Accuracy as a percentage, anything else with 4 significant digits."""
    if not math.isfinite(value):
        return "diverged" if math.isinf(value) else "—"
    if metric == "accuracy":
        return f"{100 * value:.2f}%"
    return f"{value:.4g}"


def fmt_number(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "—"


def fmt_steps(value: float) -> str:
    return "not reached" if math.isinf(value) else f"{value:,.0f}"


def fmt_seconds(value: float) -> str:
    return "not reached" if math.isinf(value) else f"{value:.3g} s"


def fmt_param(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    return f"{value:.3g}"


def fmt_ci(mean: float, low: float, high: float, n: int, metric: str) -> str:
    if n == 0:
        return "—"
    if n == 1:
        return f"{fmt_metric(mean, metric)} (1 seed, no CI)"
    if metric == "accuracy":
        # A t-interval over few seeds can leave [0, 1]; clipping keeps exactly the same overlaps, since every
        # mean lies inside [0, 1].
        low, high = min(max(low, 0.0), 1.0), min(max(high, 0.0), 1.0)
    return f"{fmt_metric(mean, metric)} [{fmt_metric(low, metric)}, {fmt_metric(high, metric)}]"


def fmt_space(spec: tuple[Any, ...]) -> str:
    """A knob's search range as the registry declares it: ``(kind, low, high)`` or ``('choice', values)``."""
    kind = spec[0]
    if kind == "choice":
        return "{" + ", ".join(fmt_param(v) for v in spec[1]) + "}"
    low, high = fmt_param(spec[1]), fmt_param(spec[2])
    return f"{low}..{high} (int)" if kind == "int" else f"[{low}, {high}]" + (" log" if kind == "log" else "")
