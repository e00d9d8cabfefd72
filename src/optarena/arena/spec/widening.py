"""Ranges widened when the best value sits on an edge: the rule, the same for every optimizer.

After a tuning budget, every log-scale knob of the search space (``lr``, ``weight_decay`` when tuned, and the
registry's log knobs: Adaburst's ``burst_max``, SophiaG's ``rho``, ...) whose best value lies in the outer
:data:`EDGE_FRACTION` of its range, measured on the log scale, is on an edge: its range is widened on that side
by the experiment's ``widen_factor`` (the bound divided or multiplied by it), and more trials search the widened
space. A bound the optimizer would refuse (a ``ValueError`` of its declared constraint) is not crossed: that side
stays. Linear, integer and categorical knobs are never widened.

An eighth of the log range is the rule rather than "the best is the extreme value sampled": with 16 trials
the extreme value is often deep inside the range, and widening a range whose interior is not yet explored buys
nothing; within an eighth of the edge, the optimum may lie beyond it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from optarena.optim.registry import declared_hyperparameters

EDGE_FRACTION = 1 / 8
Space = dict[str, tuple[Any, ...]]


@dataclass(frozen=True)
class Widening:
    """One knob's range widened on one side, in widening ``round`` (1, 2, ...)."""

    round: int
    knob: str
    side: str  # 'low' or 'high'
    old: tuple[float, float]
    new: tuple[float, float]
    best_value: float  # the knob's best value, that sat on the edge
    best_trial: int  # the trial it came from
    extra_trials: int  # tuning trials the round added (shared by every knob widened in the round)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["old"], out["new"] = list(self.old), list(self.new)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Widening:
        keys = cls.__dataclass_fields__
        values = {k: data[k] for k in keys}
        values["old"], values["new"] = tuple(values["old"]), tuple(values["new"])
        return cls(**values)


def edge_side(value: float, low: float, high: float) -> str | None:
    """``'low'`` or ``'high'`` when ``value`` lies within :data:`EDGE_FRACTION` of that end of the log range
    ``[low, high]`` (the boundary included), else None."""
    if not 0 < low < high:
        raise ValueError(f"Invalid range: [{low!r}, {high!r}]; expected 0 < low < high")
    position = (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    if position <= EDGE_FRACTION:
        return "low"
    if position >= 1 - EDGE_FRACTION:
        return "high"
    return None


def _allowed(optimizer: str, knob: str, value: float) -> bool:
    """Whether ``optimizer`` accepts ``value`` for ``knob`` (its declared constraint; True if none is declared)."""
    constraint = declared_hyperparameters(optimizer).get(knob)
    if constraint is None:
        return math.isfinite(value) and value > 0
    try:
        constraint.check(knob, value)
    except (ValueError, TypeError):
        return False
    return True


def widenings_for(
    space: Mapping[str, tuple[Any, ...]],
    best: Mapping[str, Any],
    *,
    factor: float,
    optimizer: str,
    round: int,
    best_trial: int,
    extra_trials: int,
) -> list[Widening]:
    """The widenings the rule asks for, given the ``space`` searched and the ``best`` configuration found."""
    out = []
    for knob, spec in space.items():
        if spec[0] != "log" or knob not in best:
            continue
        low, high = float(spec[1]), float(spec[2])
        value = float(best[knob])
        side = edge_side(value, low, high)
        if side is None:
            continue
        new = (low / factor, high) if side == "low" else (low, high * factor)
        if not _allowed(optimizer, knob, new[0] if side == "low" else new[1]):
            continue  # the optimizer's own limit: nothing beyond it to search
        out.append(Widening(round, knob, side, (low, high), new, value, best_trial, extra_trials))
    return out


def widened_space(space: Mapping[str, tuple[Any, ...]], widenings: list[Widening], round: int) -> Space:
    """``space`` as searched in widening ``round`` (0: the original): every widening up to that round applied."""
    out = dict(space)
    for widening in sorted(widenings, key=lambda w: w.round):
        if widening.round <= round and widening.knob in out:
            out[widening.knob] = ("log", *widening.new)
    return out
