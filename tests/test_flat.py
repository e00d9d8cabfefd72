"""The flat-buffer eager step (optarena.optim.flat): equal to the reference and to the plain foreach step for every
registered optimizer whose kernel is elementwise, taken where it should be, and safe when the state is replaced."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import Tensor

from optarena.optim import flat
from optarena.optim.base import OptarenaOptimizer

from .helpers import build, max_diff, registry_configs


def engine_of(opt) -> OptarenaOptimizer | None:
    """The engine optimizer inside ``opt`` (itself, or the one a wrapper drives)."""
    while not isinstance(opt, OptarenaOptimizer):
        opt = getattr(opt, "optimizer", None)
        if opt is None:
            return None
    return opt


def elementwise_configs() -> list[tuple[str, str, dict]]:
    out = []
    for cid, name, kwargs in registry_configs():
        engine = engine_of(build([torch.zeros(2, requires_grad=True)], name, **kwargs))
        if engine is not None and engine.elementwise_kernel:
            out.append((cid, name, kwargs))
    return out


CONFIGS = elementwise_configs()


def params_of(shapes=((5, 3), (5,), (2, 5), (1,), (0,)), dtype=torch.float64) -> list[Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(*s, generator=g, dtype=dtype).requires_grad_() for s in shapes]


def set_grads(params: list[Tensor], step: int) -> None:
    g = torch.Generator().manual_seed(100 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)


def run(name: str, kwargs: dict, *, foreach: bool, steps: int = 6, params=None):
    params = params_of() if params is None else params
    opt = build(params, name, lr=1e-2, foreach=foreach, **kwargs)
    for k in range(steps):
        set_grads(params, k)
        opt.step()
    return opt, params


def states(opt, params) -> list[Tensor]:
    return [v for p in params for v in opt.state[p].values() if isinstance(v, Tensor)]


def flat_groups(opt) -> dict:
    return getattr(engine_of(opt), "_flat_groups", {})


def test_every_elementwise_kernel_is_covered():
    names = {name for _, name, _ in CONFIGS}
    assert {"adaburst", "adamw_agr", "adamnx", "adax", "adabelief", "lion", "adan"} <= names


@pytest.mark.parametrize("cid,name,kwargs", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_flat_step_equals_reference_and_foreach(cid, name, kwargs):
    reference, p_ref = run(name, kwargs, foreach=False)
    fast, p_fast = run(name, kwargs, foreach=True)
    assert flat_groups(fast), "the group qualifies (CPU, small, every parameter with a gradient): flat path expected"
    plain, p_plain = run(name, {**kwargs, "flat": False}, foreach=True)
    assert not flat_groups(plain)
    for other_params, other in ((p_fast, fast), (p_plain, plain)):
        assert max_diff([p.detach() for p in p_ref], [p.detach() for p in other_params]) <= 1e-12
        a, b = states(reference, p_ref), states(other, other_params)
        assert len(a) == len(b)
        assert max_diff([t.double() for t in a], [t.double() for t in b]) <= 1e-12


@pytest.mark.parametrize("name,kwargs", [("adaburst", {}), ("adamw_agr", {"agr": "paper"}),
                                         ("adabelief", {"amsgrad": True})])  # fmt: skip
def test_state_lives_in_one_buffer_and_survives_a_round_trip(name, kwargs):
    opt, params = run(name, kwargs, foreach=True, steps=3)
    (group,) = flat_groups(opt).values()
    # Every per-parameter state tensor is a view into one of the group's buffers.
    storages = {buf.untyped_storage().data_ptr() for buf in group.state_flat if buf is not None}
    assert {t.untyped_storage().data_ptr() for t in states(opt, params) if t.dim() > 0 or t.numel() > 1} <= storages

    # Saved and loaded through bytes into a fresh optimizer: the same trajectory, in buffers of its own.
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    twin_params = [p.detach().clone().requires_grad_() for p in params]
    twin = build(twin_params, name, lr=1e-2, foreach=True, **kwargs)
    buffer.seek(0)
    twin.load_state_dict(torch.load(buffer))
    for k in range(3, 6):
        for ps in (params, twin_params):
            set_grads(ps, k)
        opt.step()
        twin.step()
    assert max_diff([p.detach() for p in params], [p.detach() for p in twin_params]) == 0
    mine = {t.untyped_storage().data_ptr() for t in states(opt, params)}
    assert not mine & {t.untyped_storage().data_ptr() for t in states(twin, twin_params)}


def test_a_replaced_state_tensor_is_used_and_taken_into_a_new_buffer():
    results = []
    for foreach in (False, True):
        opt, params = run("adaburst", {}, foreach=foreach, steps=2)
        opt.state[params[0]]["exp_avg"] = torch.full_like(params[0], 0.5)  # a user's (or a loader's) new tensor
        for k in range(2, 4):
            set_grads(params, k)
            opt.step()
        results.append((opt, params))
    (_, p_ref), (fast, p_fast) = results
    assert max_diff([p.detach() for p in p_ref], [p.detach() for p in p_fast]) <= 1e-12
    (group,) = flat_groups(fast).values()
    replaced = fast.state[p_fast[0]]["exp_avg"]
    assert replaced.untyped_storage().data_ptr() == group.state_flat[0].untyped_storage().data_ptr()


def test_step_counters_live_in_one_buffer_and_a_replaced_or_changed_one_is_honoured():
    results = []
    for foreach in (False, True):
        opt, params = run("adaburst", {}, foreach=foreach, steps=2)
        if foreach:
            assert flat_groups(opt)
        # one add_ advances them all (optarena.optim.step_counters), on every path
        (counters,) = engine_of(opt)._counters.values()
        storages = {opt.state[p]["step"].untyped_storage().data_ptr() for p in params}
        assert storages == {counters.buffer.untyped_storage().data_ptr()}
        for p in params:
            opt.state[p]["step"] = torch.tensor(10.0)  # a user's (or a loader's) new counters: bias corrections follow
        set_grads(params, 2)
        opt.step()
        for p in params:
            opt.state[p]["step"].fill_(20.0)  # changed in place
        for k in (3, 4):
            set_grads(params, k)
            opt.step()
        results.append((opt, params))
    (ref, p_ref), (fast, p_fast) = results
    assert max_diff([p.detach() for p in p_ref], [p.detach() for p in p_fast]) <= 1e-12
    assert max_diff(states(ref, p_ref), states(fast, p_fast)) <= 1e-12
    assert [fast.state[p]["step"].item() for p in p_fast] == [22.0] * len(p_fast)


def test_deepcopy_continues_identically():
    opt, params = run("adamw_agr", {}, foreach=True, steps=3)
    twin = copy.deepcopy((opt, params))
    twin_opt, twin_params = twin
    for k in range(3, 6):
        for ps in (params, twin_params):
            set_grads(ps, k)
        opt.step()
        twin_opt.step()
    assert max_diff([p.detach() for p in params], [p.detach() for p in twin_params]) == 0
    assert flat_groups(twin_opt)


def with_complex() -> list[Tensor]:
    z = torch.randn(3, dtype=torch.complex128, generator=torch.Generator().manual_seed(1))
    return [*params_of(), z.requires_grad_()]


def non_contiguous() -> list[Tensor]:
    p = params_of()
    p[0] = p[0].detach().t().contiguous().t().requires_grad_()  # (5, 3) with transposed strides
    assert not p[0].is_contiguous()
    return p


@pytest.mark.parametrize(
    "why,make_params,limit",
    [
        ("non-contiguous", non_contiguous, None),
        ("too large", params_of, ("FLAT_MAX_NUMEL", 10)),
        ("tensors too large on average", params_of, ("FLAT_MAX_MEAN_NUMEL", 2)),
        ("complex", with_complex, None),
    ],
)
def test_groups_that_do_not_qualify_take_the_foreach_path(why, make_params, limit, monkeypatch):
    if limit is not None:
        monkeypatch.setattr(flat, *limit)
    _, p_ref = run("adaburst", {}, foreach=False, params=make_params())
    fast, p_fast = run("adaburst", {}, foreach=True, params=make_params())
    assert not flat_groups(fast), why
    real = [torch.view_as_real(p.detach()) if p.is_complex() else p.detach() for p in (*p_ref, *p_fast)]
    assert max_diff(real[: len(p_ref)], real[len(p_ref) :]) <= 1e-12


def test_a_missing_gradient_or_unequal_steps_fall_back(monkeypatch):
    flat_steps = []
    original = flat.FlatGroup.step
    monkeypatch.setattr(flat.FlatGroup, "step", lambda self, *a, **k: (flat_steps.append(1), original(self, *a, **k)))
    results = []
    for foreach in (False, True):
        params = params_of()
        opt = build(params, "adaburst", lr=1e-2, foreach=foreach)
        used = []
        for k in range(6):
            set_grads(params, k)
            if k == 2:
                params[1].grad = None  # a frozen layer: that step on the others only, and their step counts differ
            before = len(flat_steps)
            opt.step()
            used.append(len(flat_steps) > before)
        results.append((opt, params, used))
    (_, p_ref, _), (fast, p_fast, used) = results
    assert max_diff([p.detach() for p in p_ref], [p.detach() for p in p_fast]) <= 1e-12
    assert used == [True, True, False, False, False, False]  # unequal step counts from step 3 on
    assert fast.state[p_fast[0]]["step"].item() == 6 and fast.state[p_fast[1]]["step"].item() == 5


def test_flat_true_ignores_the_size_limits_and_false_or_a_bad_value_is_refused_by_name(monkeypatch):
    monkeypatch.setattr(flat, "FLAT_MAX_NUMEL", 10)
    _, p_ref = run("adaburst", {}, foreach=False)
    forced, p_forced = run("adaburst", {"flat": True}, foreach=True)
    assert flat_groups(forced)
    assert max_diff([p.detach() for p in p_ref], [p.detach() for p in p_forced]) <= 1e-12
    with pytest.raises(ValueError, match="Invalid flat"):
        build(params_of(), "adaburst", flat="yes")


def test_a_state_dict_saved_before_the_flat_option_loads():
    opt, params = run("adamw_agr", {}, foreach=True, steps=2)
    saved = opt.state_dict()
    for group in saved["param_groups"]:
        del group["flat"]
    twin = build([p.detach().clone().requires_grad_() for p in params], "adamw_agr", lr=1e-2)
    twin.load_state_dict(saved)
    assert twin.param_groups[0]["flat"] is None


@pytest.mark.parametrize("name,kwargs", [("adamw_agr", {}), ("adamw_agr", {"agr": "paper"}), ("adaburst", {})])
def test_the_compiled_step_of_a_small_group_runs_on_the_flat_buffers(name, kwargs):
    """One graph over the group's buffers (few graph inputs); AGR's per-tensor sums still see each tensor."""
    torch._dynamo.reset()
    _, p_ref = run(name, kwargs, foreach=True, steps=4)
    fast, p_fast = run(name, {**kwargs, "compile": True}, foreach=True, steps=4)
    assert flat_groups(fast)
    assert max_diff([p.detach() for p in p_ref], [p.detach() for p in p_fast]) <= 1e-12
