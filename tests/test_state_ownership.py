"""A state_dict knows whose it is: another optimizer's state is refused at load time, or converted on request."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from optarena.optim import AdamW, create_optimizer, list_optimizers
from tests.helpers import build

NAMES = list_optimizers()


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()


def _train(model: torch.nn.Module, optimizer, steps: int = 3, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 3, generator=generator, dtype=torch.float64)
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()


def _saved(name: str) -> dict:
    model = _model()
    optimizer = build(model.parameters(), name)
    _train(model, optimizer)
    return optimizer.state_dict()


SAVED = {}


def saved(name: str) -> dict:
    """``name``'s state after 3 steps (a copy: torch's load_state_dict may alias the tensors it is given)."""
    if name not in SAVED:
        SAVED[name] = _saved(name)
    return copy.deepcopy(SAVED[name])


@pytest.mark.parametrize("source,target", list(itertools.permutations(NAMES, 2)))
def test_another_optimizers_state_is_refused_at_load_time(source, target):
    model = _model()
    optimizer = build(model.parameters(), target)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"Invalid state_dict for .*(saved by|wrapper)"):
        optimizer.load_state_dict(saved(source))
    _train(model, optimizer, steps=1)  # nothing half-loaded: it still steps as a fresh optimizer
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("name", NAMES)
def test_own_state_round_trips(name):
    model = _model()
    optimizer = build(model.parameters(), name)
    optimizer.load_state_dict(saved(name))
    _train(model, optimizer, steps=1)


def test_the_message_names_both_optimizers():
    optimizer = create_optimizer(_model().parameters(), "amsbound")
    with pytest.raises(ValueError, match=r"saved by optarena\.AdaBound, this group is optarena\.AdaBound\+amsbound"):
        optimizer.load_state_dict(saved("adabound"))
    optimizer = create_optimizer(_model().parameters(), "adamw")
    with pytest.raises(ValueError, match=r"saved by optarena\.Adaburst, this group is torch\.optim\.AdamW"):
        optimizer.load_state_dict(saved("adaburst"))


def _continue(name: str, state: dict, convert: bool, **kwargs) -> list[torch.Tensor]:
    """Train 3 steps, load ``state`` (as saved after them), train 3 more; the final parameters."""
    model = _model()
    optimizer = build(model.parameters(), name, **kwargs)
    _train(model, optimizer)  # same 3 steps as the saver: the parameters match the state
    optimizer.load_state_dict(state, convert=convert)
    _train(model, optimizer, seed=2)
    return [p.detach().clone() for p in model.parameters()]


def test_convert_torch_adamw_into_the_engines_adamw_continues_identically():
    reference = _continue("adamw", saved("adamw"), convert=False)
    state = saved("adamw")
    model = _model()
    engine = AdamW(model.parameters())  # the same defaults as torch's: the same first 3 steps
    _train(model, engine)
    with pytest.raises(ValueError, match=r"saved by torch\.optim\.AdamW"):
        engine.load_state_dict(state)
    engine.load_state_dict(state, convert=True)
    assert engine.param_groups[0]["agr"] is None and "decoupled_weight_decay" not in engine.param_groups[0]
    _train(model, engine, seed=2)
    for a, b in zip(reference, model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_convert_keeps_the_targets_identity_and_layout():
    # AdaBound -> AMSBound: the running maximum starts at v; the group stays AMSBound.
    model = _model()
    optimizer = create_optimizer(model.parameters(), "amsbound")
    optimizer.load_state_dict(saved("adabound"), convert=True)
    assert optimizer.param_groups[0]["amsbound"] is True
    for p in model.parameters():
        state = optimizer.state[p]
        assert torch.equal(state["max_exp_avg_sq"], state["exp_avg_sq"])
    _train(model, optimizer, steps=1)
    # AMSGrad -> Adam drops the buffer; adan -> adan_agr keeps AGR on.
    optimizer = create_optimizer(_model().parameters(), "adam")
    optimizer.load_state_dict(saved("amsgrad"), convert=True)
    assert all("max_exp_avg_sq" not in s for s in optimizer.state.values())
    optimizer = create_optimizer(_model().parameters(), "adan_agr")
    optimizer.load_state_dict(saved("adan"), convert=True)
    assert optimizer.param_groups[0]["agr"] == "code"


def test_convert_refuses_states_that_mean_different_things():
    optimizer = create_optimizer(_model().parameters(), "adamw")
    with pytest.raises(ValueError, match=r"Cannot convert a state_dict of optarena\.Adaburst into torch\.optim\.AdamW"):
        optimizer.load_state_dict(saved("adaburst"), convert=True)
    optimizer = create_optimizer(_model().parameters(), "adabelief")
    with pytest.raises(ValueError, match="Cannot convert"):
        optimizer.load_state_dict(saved("adamw"), convert=True)


def test_lookahead_and_its_bare_optimizer_convert_both_ways():
    # Bare AdamW -> Lookahead: refused, or loaded with the slow weights started at the current parameters.
    model = _model()
    lookahead = create_optimizer(model.parameters(), "lookahead_adamw")
    with pytest.raises(ValueError, match=r"holds no lookahead state .* convert=True"):
        lookahead.load_state_dict(saved("adamw"))
    _train(model, lookahead)
    lookahead.load_state_dict(saved("adamw"), convert=True)
    assert lookahead.steps_taken == 0
    assert all(torch.equal(lookahead.slow[p], p) for p in model.parameters())
    # Lookahead -> bare AdamW: refused, or the fast optimizer's state loaded and the slow weights dropped.
    model = _model()
    bare = create_optimizer(model.parameters(), "adamw")
    with pytest.raises(ValueError, match="lookahead wrapper"):
        bare.load_state_dict(saved("lookahead_adamw"))
    source = saved("lookahead_adamw")
    bare.load_state_dict(source, convert=True)
    for index, p in enumerate(model.parameters()):
        assert set(bare.state[p]) == {"step", "exp_avg", "exp_avg_sq"}
        for key, value in bare.state[p].items():
            assert torch.equal(value, source["state"][index][key])
    assert "lookahead" not in bare.param_groups[0]
    _train(model, bare, steps=1)


def test_a_state_from_torch_itself_loads_into_the_baseline():
    model = _model()
    plain = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _train(model, plain)
    ours = create_optimizer(_model().parameters(), "adamw")
    ours.load_state_dict(plain.state_dict())
    assert ours.param_groups[0]["lr"] == 1e-2
    engine = create_optimizer(_model().parameters(), "adamw_agr")  # lacks the engine's keys: refused
    with pytest.raises(ValueError, match=r"lacks keys this optimizer needs \(agr, agr_official_edge_cases"):
        engine.load_state_dict(plain.state_dict())


def test_a_malformed_state_dict_is_a_clear_error():
    optimizer = build(_model().parameters(), "adaburst")
    for bad in (None, {}, {"state": {}}, {"state": {}, "param_groups": "x"}):
        with pytest.raises(ValueError, match="Invalid state_dict: expected a dict with 'state' and 'param_groups'"):
            optimizer.load_state_dict(bad)
    state = saved("adaburst")
    with pytest.raises(ValueError, match=r"it has 1 param group\(s\), Adaburst has 2"):
        two = build(
            [{"params": list(_model().parameters())[:2]}, {"params": list(_model().parameters())[2:]}], "adaburst"
        )
        two.load_state_dict(state)
