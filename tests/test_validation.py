"""Bad hyperparameters are refused, for every registry entry's declared keywords (property-based).

Each entry declares its keywords' constraints (``optarena.optim.registry.declared_hyperparameters``).
Hypothesis draws values that break a constraint — non-finite numbers, values outside the range, wrong
types, unknown choices, tuples of the wrong length — and checks that the constructor refuses each with a
``ValueError`` naming the keyword, and that ``add_param_group`` refuses it for a group's keywords, leaving
the optimizer as it was.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optarena.optim import create_optimizer, list_optimizers
from optarena.optim.registry import declared_hyperparameters, get_optimizer_info
from optarena.schedules import SGDR, AdamNXLR, LRBurst
from optarena.validation import Constraint, Flag, Integer, Items, OneOf, Real
from tests.helpers import build

NAMES = list_optimizers()
NOT_A_NUMBER = st.one_of(st.text(max_size=3), st.just([1.0]), st.just({}), st.booleans())


def bad_values(constraint: Constraint) -> st.SearchStrategy[Any]:
    """Values that ``constraint`` must refuse."""
    options: list[st.SearchStrategy[Any]] = [] if constraint.optional else [st.none()]
    if isinstance(constraint, Real):
        options += [st.sampled_from([math.nan, math.inf, -math.inf]), NOT_A_NUMBER]
        if math.isfinite(constraint.low):
            below = st.floats(max_value=constraint.low, exclude_max=not constraint.low_open, allow_nan=False)
            options.append(below.filter(math.isfinite))
        if math.isfinite(constraint.high):
            above = st.floats(min_value=constraint.high, exclude_min=not constraint.high_open, allow_nan=False)
            options.append(above.filter(math.isfinite))
    elif isinstance(constraint, Integer):
        options += [st.integers(max_value=constraint.low - 1), st.floats(allow_nan=True), NOT_A_NUMBER]
        if constraint.high is not None:
            options.append(st.integers(min_value=constraint.high + 1))
    elif isinstance(constraint, Flag):
        options += [st.integers(), st.text(max_size=3), st.floats()]
    elif isinstance(constraint, OneOf):
        options += [st.text(max_size=8).filter(lambda v: v not in constraint.options), st.integers(), st.booleans()]
    elif isinstance(constraint, Items):
        n = len(constraint.items)
        good = st.just(0.5)
        options.append(st.lists(good, max_size=n + 2).filter(lambda v: len(v) != n).map(tuple))
        options.append(NOT_A_NUMBER.filter(lambda v: not isinstance(v, list)))
        goods = [_good(item) for item in constraint.items]
        for i, item in enumerate(constraint.items):
            options.append(bad_values(item).map(lambda v, i=i: tuple(v if j == i else goods[j] for j in range(n))))
    else:  # pragma: no cover - a new kind of constraint needs its bad values here
        raise AssertionError(f"no bad values for {constraint!r}")
    return st.one_of(options)


def _good(constraint: Constraint) -> Any:
    assert isinstance(constraint, Real)
    return constraint.low if math.isfinite(constraint.low) and not constraint.low_open else 0.5


def _params() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.ones(2, 3)), torch.nn.Parameter(torch.ones(3))]


@pytest.mark.parametrize("name", NAMES)
def test_every_entry_declares_what_it_accepts(name):
    declared = declared_hyperparameters(name)
    defaults = get_optimizer_info(name).hyperparameter_defaults()
    assert "lr" in declared and "nonfinite" in declared
    for key, constraint in declared.items():  # every default satisfies its own constraint
        if key in defaults:
            constraint.check(key, defaults[key])


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_constructor_refuses_bad_values_naming_the_keyword(name, data):
    declared = declared_hyperparameters(name)
    key = data.draw(st.sampled_from(sorted(declared)), label="keyword")
    value = data.draw(bad_values(declared[key]), label="value")
    with pytest.raises(ValueError, match=rf"Invalid {key}\b"):
        build(_params(), name, **{key: value})


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_add_param_group_refuses_bad_values_and_keeps_the_groups(name, data):
    optimizer = build(_params()[:1], name)
    declared = get_optimizer_info(name).cls.declared_hyperparameters()
    key = data.draw(st.sampled_from(sorted(k for k in declared if k in optimizer.param_groups[0])), label="keyword")
    value = data.draw(bad_values(declared[key]), label="value")
    with pytest.raises(ValueError, match=rf"Invalid {key}\b"):
        optimizer.add_param_group({"params": [torch.nn.Parameter(torch.ones(4))], key: value})
    assert len(optimizer.param_groups) == 1


@pytest.mark.parametrize("name", ["adamw", "sgdm", "rmsprop", "adafactor", "adaburst", "lion"])
def test_a_loaded_state_dict_with_bad_values_is_refused(name):
    optimizer = build(_params(), name)
    state = optimizer.state_dict()
    state["param_groups"][0]["lr"] = math.nan
    with pytest.raises(ValueError, match=r"param group 0: Invalid lr: nan"):
        optimizer.load_state_dict(state)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(value=bad_values(Real(0.0, low_open=True)))
def test_schedules_refuse_non_finite_and_out_of_range_values(value):
    optimizer = create_optimizer(_params(), "sgdm", lr=0.1)
    with pytest.raises(ValueError, match=r"Invalid T_0\b"):
        SGDR(optimizer, T_0=value)
    with pytest.raises(ValueError, match=r"Invalid decay_fraction\b"):
        AdamNXLR(optimizer, total_steps=100, decay_fraction=value)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"T_max": 0}, "Invalid T_max: 0"),
        ({"T_max": 10, "patience": -1}, "Invalid patience: -1"),
        ({"T_max": 10, "threshold": math.inf}, "Invalid threshold: inf"),
        ({"T_max": 10, "threshold": math.nan}, "Invalid threshold: nan"),
        ({"T_max": 10, "mode": "up"}, "Invalid mode: 'up'"),
    ],
)
def test_lr_burst_refuses_bad_values(kwargs, message):
    optimizer = create_optimizer(_params(), "sgdm", lr=0.1)
    with pytest.raises(ValueError, match=message):
        LRBurst(optimizer, **kwargs)


def test_constraint_messages_state_the_allowed_range():
    with pytest.raises(ValueError, match=r"^Invalid lr: inf; expected a finite value in \[0, inf\)$"):
        Real(0.0).check("lr", math.inf)
    with pytest.raises(ValueError, match=r"^Invalid base_lr: -1; expected None or a finite value in \[0, inf\)$"):
        Real(0.0, optional=True).check("base_lr", -1)
    with pytest.raises(ValueError, match=r"^Invalid k: 0; expected an integer >= 1$"):
        Integer(1).check("k", 0)
    with pytest.raises(ValueError, match=r"^Invalid amsgrad: 1; expected True or False$"):
        Flag().check("amsgrad", 1)
    with pytest.raises(ValueError, match=r"^Invalid betas\[1\]: 1\.0; expected a finite value in \[0, 1\)$"):
        Items((Real(0.0, 1.0, high_open=True),) * 2).check("betas", (0.9, 1.0))
    Real(0.0, 1.0).check("x", torch.tensor(0.5))  # a one-element tensor is a number
    with pytest.raises(ValueError, match=r"Invalid x"):
        Real(0.0, 1.0).check("x", torch.tensor([0.5, 0.5]))
