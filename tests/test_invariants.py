"""The invariant suite: torch.optim's checklist, run over every registered optimizer.

A new optimizer is covered by registering it: ``CONFIGS`` is every registry entry's defaults plus
the constructor variants its entry declares (``OptimizerInfo.test_inputs``: Adaburst's ablations,
AGR's modes, AdaXW, AGR wrapped around a torch optimizer, ...).
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import Tensor

import optarena
from optarena.optim.registry import get_optimizer_info

from .helpers import backward, build, max_diff, registry_configs, seeded_mlp

CONFIGS = registry_configs()
IDS = [c[0] for c in CONFIGS]

# Optimizers that cannot take a 0-size parameter, with the reason (OptimizerInfo.no_empty_params).
NO_EMPTY_PARAMS: dict[str, str] = {
    name: get_optimizer_info(name).no_empty_params
    for name in optarena.list_optimizers()
    if get_optimizer_info(name).no_empty_params
}
# What stops a param group dead, where lr = 0 alone does not (OptimizerInput.still).
STILL_GROUP: dict[str, dict] = {
    f"{name}-{variant.label}": variant.still
    for name in optarena.list_optimizers()
    for variant in get_optimizer_info(name).test_inputs
    if variant.still is not None
}


def make(name: str, params, **kwargs):
    return build(params, name, **{"lr": 1e-2, **kwargs})


def toy_params(dtype: torch.dtype = torch.float64, *, empty: bool = True) -> list[Tensor]:
    """Weights of a tiny net plus the awkward cases: a 1-element and a 0-size parameter."""
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 3), (5,), (2, 5), (1,)] + ([(0,)] if empty else [])
    return [torch.randn(*s, generator=g, dtype=dtype).requires_grad_() for s in shapes]


def toy_loss(params: list[Tensor], step: int) -> Tensor:
    w, b, v, s = params[:4]
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(7, 3, generator=g, dtype=w.dtype)
    y = torch.randn(7, 2, generator=g, dtype=w.dtype)
    out = torch.tanh(x @ w.T + b) @ v.T
    loss = (out - y).pow(2).mean() + 0.1 * (s - 0.5).pow(2).sum()
    return loss + sum(p.sum() for p in params[4:])


def set_grads(params: list[Tensor], step: int, frozen: tuple[int, ...] = ()) -> None:
    for p in params:
        p.grad = None
    loss = toy_loss(params, step)
    live = [p for i, p in enumerate(params) if i not in frozen]
    for p, g in zip(live, torch.autograd.grad(loss, live)):
        p.grad = g


def states_of(opt, params: list[Tensor]) -> list[dict]:
    return [dict(opt.state[p]) for p in params if p in opt.state]


def run_schedule(opt, params: list[Tensor], steps: int = 8) -> None:
    """Steps with a step where every grad is None and a layer frozen then unfrozen."""
    for k in range(steps):
        if k == 2:
            for p in params:
                p.grad = None
        else:
            set_grads(params, k, frozen=(2,) if k in (3, 4) else ())
        opt.step()


@pytest.mark.parametrize("cid,name,kwargs", CONFIGS, ids=IDS)
def test_foreach_matches_for_loop(cid, name, kwargs):
    results = []
    for foreach in (False, True):
        params = toy_params(empty=name not in NO_EMPTY_PARAMS)
        opt = make(name, params, foreach=foreach, **kwargs)
        run_schedule(opt, params)
        results.append((params, states_of(opt, params)))
    (p_loop, s_loop), (p_fast, s_fast) = results
    assert max_diff([p.detach() for p in p_loop], [p.detach() for p in p_fast]) <= 1e-12
    assert len(s_loop) == len(s_fast) == len(p_loop)
    for a, b in zip(s_loop, s_fast):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], Tensor):
                assert a[key].dtype == b[key].dtype, key
                assert max_diff(a[key].double(), b[key].double()) <= 1e-12, key
            else:
                assert a[key] == b[key], key


@pytest.mark.parametrize("cid,name,kwargs", CONFIGS, ids=IDS)
def test_grad_never_modified(cid, name, kwargs):
    params = toy_params(empty=name not in NO_EMPTY_PARAMS)
    opt = make(name, params, **kwargs)
    for k in range(4):
        set_grads(params, k)
        grads = [p.grad for p in params]
        snapshot = [(g.clone(), g._version) for g in grads]
        opt.step()
        for p, g, (value, version) in zip(params, grads, snapshot):
            assert p.grad is g
            assert g._version == version
            assert torch.equal(g, value)


@pytest.mark.parametrize("cid,name,kwargs", CONFIGS, ids=IDS)
def test_zero_grad_without_decay_moves_nothing(cid, name, kwargs):
    # A by-design exception is named, with its reason, in the registry (OptimizerInfo.zero_grad_moves);
    # for those the test checks that the documented movement happens.
    moves = bool(get_optimizer_info(name).zero_grad_moves)
    params = toy_params(empty=name not in NO_EMPTY_PARAMS)
    before = [p.detach().clone() for p in params]
    opt = make(name, params, **{**kwargs, "weight_decay": 0.0})
    for _ in range(3):
        for p in params:
            p.grad = torch.zeros_like(p)
        opt.step()
    assert (max_diff([p.detach() for p in params], before) > 0.0) == moves


@pytest.mark.parametrize("cid,name,kwargs", CONFIGS, ids=IDS)
def test_state_dict_round_trip_is_lock_step(cid, name, kwargs):
    params = toy_params(empty=name not in NO_EMPTY_PARAMS)
    opt = make(name, params, **kwargs)
    for k in range(3):
        set_grads(params, k)
        opt.step()
    if hasattr(opt, "epoch_end"):
        opt.epoch_end(0.5)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)

    twin_params = [p.detach().clone().requires_grad_() for p in params]
    twin = make(name, twin_params, **kwargs)
    twin.load_state_dict(loaded)
    for a, b in zip(states_of(opt, params), states_of(twin, twin_params)):
        for key in a:
            if isinstance(a[key], Tensor):
                assert a[key].dtype == b[key].dtype, key
    for k in range(3, 7):
        set_grads(params, k)
        set_grads(twin_params, k)
        opt.step()
        twin.step()
        for p, q in zip(params, twin_params):
            assert torch.equal(p, q)


@pytest.mark.parametrize("cid,name,kwargs", CONFIGS, ids=IDS)
def test_complex_matches_view_as_real_or_refuses(cid, name, kwargs):
    g = torch.Generator().manual_seed(3)
    c = torch.randn(4, 3, generator=g, dtype=torch.complex128).requires_grad_()
    r = torch.view_as_real(c.detach()).clone().requires_grad_()
    opt_c = make(name, [c], **kwargs)
    opt_r = make(name, [r], **kwargs)
    info = get_optimizer_info(name)
    for k in range(5):
        gk = torch.Generator().manual_seed(50 + k)
        grad_r = torch.randn(4, 3, 2, generator=gk, dtype=torch.float64)
        c.grad = torch.view_as_complex(grad_r.clone())
        r.grad = grad_r.clone()
        if not info.supports_complex:
            with pytest.raises((RuntimeError, ValueError, TypeError), match=r"(?i)complex"):
                opt_c.step()
            return
        opt_c.step()
        opt_r.step()
        assert max_diff(torch.view_as_real(c.detach()), r.detach()) <= 1e-12


@pytest.mark.parametrize("cid,name,kwargs", CONFIGS, ids=IDS)
def test_tensor_lr_equals_float_lr(cid, name, kwargs):
    results = []
    for lr in (1e-2, torch.tensor(1e-2, dtype=torch.float64)):
        params = toy_params(empty=name not in NO_EMPTY_PARAMS)
        # torch's own foreach paths refuse a tensor lr without capturable; its for-loop takes one.
        extra = {} if get_optimizer_info(name).cls.__module__.startswith("optarena") else {"foreach": False}
        opt = make(name, params, **{**kwargs, **extra, "lr": lr})
        for k in range(4):
            set_grads(params, k)
            opt.step()
        results.append([p.detach() for p in params])
    assert max_diff(results[0], results[1]) == 0.0


@pytest.mark.parametrize("cid,name,kwargs", CONFIGS, ids=IDS)
def test_param_groups_have_isolated_lr(cid, name, kwargs):
    params = toy_params(empty=name not in NO_EMPTY_PARAMS)
    frozen_before = [p.detach().clone() for p in params[2:]]
    moving_before = [p.detach().clone() for p in params[:2]]
    still = STILL_GROUP.get(cid, {"lr": 0.0})
    opt = make(name, [{"params": params[:2]}, {"params": params[2:], **still}], **kwargs)
    # 7 steps: a rectified optimizer without its SGD fallback first moves at t = 6.
    for k in range(7):
        set_grads(params, k)
        opt.step()
    assert max_diff([p.detach() for p in params[2:]], frozen_before) == 0.0
    assert max_diff([p.detach() for p in params[:2]], moving_before) > 0.0


@pytest.mark.parametrize("cid,name,kwargs", CONFIGS, ids=IDS)
def test_closure_returns_loss(cid, name, kwargs):
    params = toy_params(empty=name not in NO_EMPTY_PARAMS)
    opt = make(name, params, **kwargs)

    def closure():
        for p in params:
            p.grad = None
        loss = toy_loss(params, 0)
        loss.backward()
        return loss

    expected = toy_loss([p.detach() for p in params], 0).item()
    loss = opt.step(closure)
    assert isinstance(loss, Tensor)
    assert loss.item() == expected


@pytest.mark.parametrize("cid,name,kwargs", CONFIGS, ids=IDS)
def test_deepcopy_and_repr(cid, name, kwargs):
    params = toy_params(empty=name not in NO_EMPTY_PARAMS)
    opt = make(name, params, **kwargs)
    set_grads(params, 0)
    opt.step()
    clone = copy.deepcopy(opt)
    assert type(clone) is type(opt)
    assert repr(clone) == repr(opt)
    assert get_optimizer_info(name).cls.__name__ in repr(opt)
    # The copy owns copies of the parameters and steps like the original (in the optimizer's order of the
    # parameters: Muon's groups split a list by shape).
    ordered = [p for g in opt.param_groups for p in g["params"]]
    clone_params = [p for g in clone.param_groups for p in g["params"]]
    assert all(a is not b for a, b in zip(ordered, clone_params))
    set_grads(params, 1)
    for p, q in zip(ordered, clone_params):
        q.grad = p.grad.clone()
    opt.step()
    clone.step()
    assert max_diff([p.detach() for p in ordered], [q.detach() for q in clone_params]) == 0.0


@pytest.mark.parametrize("cid,name,kwargs", CONFIGS, ids=IDS)
def test_loss_decreases_and_increases_with_maximize(cid, name, kwargs):
    info = get_optimizer_info(name)
    outcomes = []
    for maximize in (False, True) if info.supports_maximize else (False,):
        model = seeded_mlp(0)
        opt = make(name, model, maximize=maximize, **kwargs)
        first = backward(model, 0).item()
        for _ in range(30):
            backward(model, 0)
            opt.step()
        outcomes.append((first, backward(model, 0).item()))
    first, last = outcomes[0]
    assert last < first
    if len(outcomes) > 1:
        first, last = outcomes[1]
        assert last > first


@pytest.mark.parametrize("cid,name,kwargs", CONFIGS, ids=IDS)
def test_float32_and_float64_params_in_one_group(cid, name, kwargs):
    # foreach groups tensors by device and dtype; mixed dtypes must equal the for-loop.
    results = []
    for foreach in (False, True):
        params = toy_params(empty=name not in NO_EMPTY_PARAMS)
        params[0] = params[0].detach().float().requires_grad_()
        opt = make(name, params, foreach=foreach, **kwargs)
        for k in range(3):
            g = torch.Generator().manual_seed(k)
            for p in params:
                p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
            opt.step()
        results.append([p.detach() for p in params])
    for a, b in zip(*results):
        assert a.dtype == b.dtype
        # float64 as everywhere; float32 within a few ulp of values of order 1 (torch's Adafactor
        # foreach path rounds differently from its for-loop by 1 ulp).
        assert max_diff(a, b) <= (1e-12 if a.dtype == torch.float64 else 1e-6)
