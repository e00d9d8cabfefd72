"""Hyperparameter checks, written once for every optimizer and schedule.

A value is checked against a *constraint* — :class:`Real`, :class:`Integer`, :class:`Flag`,
:class:`OneOf` or :class:`Items` — which raises ``ValueError`` naming the parameter, the value and
the allowed range::

    Invalid lr: inf; expected a finite number >= 0

Numbers must be finite: no optimizer or schedule here has a use for ``inf`` or ``nan``, and both
silently turn parameters non-finite. Optimizers declare their constraints (``hyperparameters``,
a dict from keyword to constraint) so that one function checks them all and the tests can draw bad
values for every declared keyword; the ``check_*`` functions are the same checks for one value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch


class Constraint(Protocol):
    """What a declared hyperparameter must satisfy."""

    optional: bool

    def check(self, name: str, value: Any) -> None:
        """Raise ``ValueError`` naming ``name`` unless ``value`` satisfies the constraint."""

    def describe(self) -> str:
        """The allowed values, as the error message states them."""


def _reject(name: str, value: Any, constraint: Constraint) -> None:
    none = "None or " if constraint.optional and value is not None else ""
    raise ValueError(f"Invalid {name}: {value!r}; expected {none}{constraint.describe()}")


def real_number(name: str, value: Any) -> float:
    """``value`` as a Python float: a real number or a one-element tensor, never a bool or nan/inf."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex():
            raise ValueError(f"Invalid {name}: a tensor {name} must hold exactly one real number")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"Invalid {name}: {value!r}; expected a real number")
    if not math.isfinite(value):
        raise ValueError(f"Invalid {name}: {value!r}; expected a finite number")
    return float(value)


@dataclass(frozen=True)
class Real:
    """A finite real number in ``[low, high]`` (each end open if asked)."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    optional: bool = False

    def describe(self) -> str:
        if math.isinf(self.low) and math.isinf(self.high):
            return "a finite number"
        left = "(" if self.low_open or math.isinf(self.low) else "["
        right = ")" if self.high_open or math.isinf(self.high) else "]"
        return f"a finite value in {left}{self.low:g}, {self.high:g}{right}"

    def check(self, name: str, value: Any) -> None:
        if value is None and self.optional:
            return
        try:
            v = real_number(name, value)
        except ValueError:
            v = math.nan  # not a finite real number: rejected below, with the allowed range
        ok_low = v > self.low if self.low_open else v >= self.low
        ok_high = v < self.high if self.high_open else v <= self.high
        if not (ok_low and ok_high):
            _reject(name, value, self)


@dataclass(frozen=True)
class Integer:
    """A Python integer (not a bool) in ``[low, high]``."""

    low: int = 0
    high: int | None = None
    optional: bool = False

    def describe(self) -> str:
        if self.high is None:
            return f"an integer >= {self.low}"
        return f"an integer in [{self.low}, {self.high}]"

    def check(self, name: str, value: Any) -> None:
        if value is None and self.optional:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < self.low:
            _reject(name, value, self)
        if self.high is not None and value > self.high:
            _reject(name, value, self)


@dataclass(frozen=True)
class Flag:
    """``True`` or ``False`` (not 0/1, which usually mean a typo for another keyword)."""

    optional: bool = False

    def describe(self) -> str:
        return "True or False"

    def check(self, name: str, value: Any) -> None:
        if value is None and self.optional:
            return
        if not isinstance(value, bool):
            _reject(name, value, self)


@dataclass(frozen=True)
class OneOf:
    """One of a fixed set of values (strings, or None)."""

    options: tuple[Any, ...]
    optional: bool = False

    def describe(self) -> str:
        return f"one of {', '.join(map(repr, self.options))}"

    def check(self, name: str, value: Any) -> None:
        if value is None and self.optional:
            return
        if isinstance(value, bool) or not any(value == o and type(value) is type(o) for o in self.options):
            _reject(name, value, self)


@dataclass(frozen=True)
class Items:
    """A tuple or list of a fixed length, each element with its own constraint (``betas``, Adafactor's ``eps``)."""

    items: tuple[Constraint, ...]
    optional: bool = False

    def describe(self) -> str:
        return f"a tuple of {len(self.items)}: ({', '.join(c.describe() for c in self.items)})"

    def check(self, name: str, value: Any) -> None:
        if value is None and self.optional:
            return
        if not isinstance(value, (tuple, list)) or len(value) != len(self.items):
            _reject(name, value, self)
        for i, (item, constraint) in enumerate(zip(value, self.items)):
            constraint.check(f"{name}[{i}]", item)


def betas(count: int = 2) -> Items:
    """``count`` numbers in [0, 1): the moments' decay rates."""
    return Items(tuple(Real(0.0, 1.0, high_open=True) for _ in range(count)))


NON_NEGATIVE = Real(0.0)
POSITIVE = Real(0.0, low_open=True)
UNIT_INTERVAL = Real(0.0, 1.0)


def check_declared(values: Mapping[str, Any], declared: Mapping[str, Constraint]) -> None:
    """Check every key of ``values`` that ``declared`` constrains."""
    for name, constraint in declared.items():
        if name in values:
            constraint.check(name, values[name])


# --- one value at a time --------------------------------------------------------------------


def check_range(
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a float if it is finite and in the range; ``ValueError`` naming ``name`` otherwise."""
    Real(low, high, low_open, high_open).check(name, value)
    return real_number(name, value)


def check_int(name: str, value: Any, low: int = 0, *, allow_none: bool = False) -> None:
    Integer(low, optional=allow_none).check(name, value)


def check_bool(name: str, value: Any) -> None:
    Flag().check(name, value)


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    OneOf(tuple(choices)).check(name, value)


def check_betas(value: Any, count: int = 2, name: str = "betas") -> None:
    betas(count).check(name, value)
