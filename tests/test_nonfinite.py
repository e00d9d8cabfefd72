"""The non-finite gradient policy (``nonfinite='propagate' | 'skip' | 'raise'``), for every registry entry."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

import optarena
from optarena.optim import NonFiniteGradientError, create_optimizer, list_optimizers
from tests.helpers import build
from tests.nonfinite_effects import markdown_table

NAMES = list_optimizers()
BAD_VALUES = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _problem(name: str, nonfinite: str, **overrides):
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
    b = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    optimizer = build([a, b], name, nonfinite=nonfinite, **overrides)
    return (a, b), optimizer


def _backward(params, bad: float | None = None) -> None:
    a, b = params
    for p in params:
        p.grad = None
    ((a**2).sum() + (b**3).sum()).backward()
    if bad is not None:
        a.grad[1, 2] = bad


def _snapshot(params, optimizer):
    """Parameters, the full state_dict (tensors copied) and any clock a wrapper or Adaburst keeps."""
    state = copy.deepcopy(optimizer.state_dict())
    state["param_groups"] = [{k: v for k, v in g.items() if k != "skipped_steps"} for g in state["param_groups"]]
    return [p.detach().clone() for p in params], state


def _assert_same(before, after) -> None:
    (params_a, state_a), (params_b, state_b) = before, after
    for x, y in zip(params_a, params_b):
        assert torch.equal(x, y)
    assert state_a["param_groups"] == state_b["param_groups"]
    assert state_a["state"].keys() == state_b["state"].keys()
    for key, entry in state_a["state"].items():
        other = state_b["state"][key]
        assert entry.keys() == other.keys()
        for k, v in entry.items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, other[k]), (key, k)
            else:
                assert v == other[k], (key, k)


@pytest.mark.parametrize("bad", BAD_VALUES, ids=list(BAD_VALUES))
@pytest.mark.parametrize("name", NAMES)
def test_skip_leaves_parameters_state_and_clocks_untouched_and_counts(name, bad):
    params, optimizer = _problem(name, "skip")
    for _ in range(2):
        _backward(params)
        optimizer.step()
    before = _snapshot(params, optimizer)
    _backward(params, BAD_VALUES[bad])
    optimizer.step()
    _assert_same(before, _snapshot(params, optimizer))
    assert optimizer.skipped_steps == 1
    # The count travels with the checkpoint, and a finite step afterwards moves the parameters.
    saved = optimizer.state_dict()
    _, fresh = _problem(name, "skip")
    fresh.load_state_dict(saved)
    assert fresh.skipped_steps == 1
    _backward(params)
    optimizer.step()
    assert not torch.equal(params[0], before[0][0])
    assert optimizer.skipped_steps == 1


@pytest.mark.parametrize("name", NAMES)
def test_raise_names_the_tensor_and_changes_nothing(name):
    params, optimizer = _problem(name, "raise")
    _backward(params)
    optimizer.step()
    before = _snapshot(params, optimizer)
    _backward(params, math.nan)
    with pytest.raises(NonFiniteGradientError, match=r"1 NaN/inf value\(s\) in 1 of 2 gradient\(s\).*shape \(3, 4\)"):
        optimizer.step()
    _assert_same(before, _snapshot(params, optimizer))


@pytest.mark.parametrize("name", NAMES)
def test_propagate_is_the_default_and_takes_the_step(name):
    params, optimizer = _problem(name, "propagate")
    assert build([torch.nn.Parameter(torch.ones(2))], name).nonfinite == "propagate"
    _backward(params, math.inf)
    before = params[1].detach().clone()
    optimizer.step()  # no check, no host read: the step runs on what the gradients hold
    assert not torch.equal(before, params[1])
    assert optimizer.skipped_steps == 0


def test_skip_with_a_closure_evaluates_it_once_and_returns_its_loss():
    params, optimizer = _problem("adaburst", "skip")
    calls = []

    def closure():
        calls.append(1)
        _backward(params, math.nan)
        return torch.tensor(3.0)

    assert optimizer.step(closure).item() == 3.0
    assert calls == [1] and optimizer.skipped_steps == 1


def test_adaburst_burst_clock_and_lookahead_counter_stay_put_on_a_skipped_step():
    params, optimizer = _problem("lookahead_adaburst", "skip", lookahead_k=2)
    _backward(params)
    optimizer.step()
    clock, count = optimizer.optimizer.burst.T_cur, optimizer.steps_taken
    _backward(params, math.nan)
    optimizer.step()
    assert (optimizer.optimizer.burst.T_cur, optimizer.steps_taken) == (clock, count)


def test_agr_wrapper_does_not_count_a_skipped_step():
    params, optimizer = _problem("sgdm", "skip", agr="code", agr_stop_step=3)
    assert type(optimizer).__name__ == "AGR"
    _backward(params)
    optimizer.step()
    _backward(params, math.inf)
    optimizer.step()
    assert optimizer.steps_taken == 1 and optimizer.skipped_steps == 1


def test_sophiag_hessian_refresh_follows_the_policy():
    params, optimizer = _problem("sophiag", "skip")
    _backward(params)
    optimizer.step()
    _backward(params)
    optimizer.update_hessian()
    hessian = optimizer.state[params[0]]["hessian"].clone()
    _backward(params, math.nan)
    optimizer.update_hessian()
    assert torch.equal(hessian, optimizer.state[params[0]]["hessian"]) and optimizer.skipped_steps == 1
    params, optimizer = _problem("sophiag", "raise")
    _backward(params, math.nan)
    with pytest.raises(NonFiniteGradientError):
        optimizer.update_hessian()


def test_sparse_and_complex_gradients_are_checked():
    embedding = torch.nn.Embedding(5, 3, sparse=True)
    optimizer = create_optimizer(embedding.parameters(), "sgdm", lr=0.1, nonfinite="skip")
    embedding(torch.tensor([1, 2])).sum().backward()
    embedding.weight.grad = torch.sparse_coo_tensor([[1]], [[math.nan, 0.0, 0.0]], (5, 3), check_invariants=True)
    before = embedding.weight.detach().clone()
    optimizer.step()
    assert torch.equal(before, embedding.weight) and optimizer.skipped_steps == 1
    z = torch.nn.Parameter(torch.ones(3, dtype=torch.complex128))
    optimizer = create_optimizer([z], "adamw_agr", nonfinite="raise")
    z.grad = torch.tensor([1 + 1j, complex(1, math.nan), 0j], dtype=torch.complex128)
    with pytest.raises(NonFiniteGradientError):
        optimizer.step()


def test_compiled_step_skips_before_the_graph_runs():
    params, optimizer = _problem("adamw_agr", "skip", compile=True)
    _backward(params)
    optimizer.step()
    before = _snapshot(params, optimizer)
    _backward(params, math.nan)
    optimizer.step()
    _assert_same(before, _snapshot(params, optimizer))


def test_a_bad_policy_is_a_clear_error():
    for name in ("adamw", "adaburst", "lookahead_sgdm"):
        with pytest.raises(ValueError, match=r"Invalid nonfinite: 'ignore'; expected one of 'propagate', 'skip'"):
            build([torch.nn.Parameter(torch.ones(2))], name, nonfinite="ignore")


def test_arena_runs_stop_on_a_non_finite_gradient_and_say_why():
    """The arena trains with nonfinite='raise': a NaN gradient ends the run as diverged, with the reason."""
    import dataclasses

    from optarena.arena.run.runner import train
    from optarena.arena.tasks import TaskSettings, get_task

    task = get_task("digits")
    calls = []

    def poison(grad: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 3:  # the third step's gradient holds a NaN; the loss stays finite
            grad = grad.clone()
            grad.view(-1)[0] = math.nan
        return grad

    def build(settings):
        problem = task.build(settings)
        next(problem.model.parameters()).register_hook(poison)
        return problem

    poisoned = dataclasses.replace(task, build=build)
    result = train(poisoned, "lion", {"lr": 1e-3}, seed=0, epochs=1, settings=TaskSettings(subset=256))
    assert result.diverged
    assert result.diverged_reason.startswith("step 3: Lion: non-finite gradient")
    assert len(result.records) == 1  # only the evaluation before training: the run stopped at step 3


def test_docs_table_is_the_measured_behaviour():
    page = (Path(__file__).parents[1] / "docs" / "reliability.md").read_text(encoding="utf-8")
    assert markdown_table() in page, "regenerate with: python tests/nonfinite_effects.py"


def test_policy_is_exported():
    assert optarena.optim.NONFINITE_POLICIES == ("propagate", "skip", "raise")


@pytest.mark.parametrize("name", NAMES)
def test_a_copy_keeps_the_policy_and_the_count(name):
    """torch's ``__getstate__`` keeps only defaults, state and groups: deepcopy and pickle must not reset the policy."""
    import pickle

    params, optimizer = _problem(name, "skip")
    _backward(params, bad=math.nan)
    optimizer.step()
    assert optimizer.skipped_steps == 1
    for clone in (copy.deepcopy(optimizer), pickle.loads(pickle.dumps(optimizer))):
        assert clone.nonfinite == "skip" and clone.skipped_steps == 1
