"""The registry, create_optimizer, and clear errors on bad input."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

import optarena
from optarena.optim import AGR, Adaburst, AdamNX, AdamW, OptarenaOptimizer
from optarena.optim.registry import get_optimizer_info
from tests.helpers import build

REQUIRED_NAMES = {"adaburst", "adamnx", "adax", "adamw_agr", "adamw", "adam", "sgdm", "radam", "adafactor"}


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))


def test_registry_lists_the_required_optimizers_with_metadata():
    names = optarena.list_optimizers()
    assert set(names) >= REQUIRED_NAMES
    assert names == sorted(names)
    for name in names:
        info = get_optimizer_info(name)
        assert info.name == name == name.lower()
        assert issubclass(info.cls, torch.optim.Optimizer)
        assert info.description
        assert isinstance(info.hyperparameter_defaults(), dict)
        if issubclass(info.cls, OptarenaOptimizer):
            assert info.paper and info.code


def test_baselines_are_torch_classes_with_their_fast_paths():
    # torch's classes, with only the guard added: the step is torch's own, bit for bit.
    for name, torch_class in (("adamw", torch.optim.AdamW), ("adafactor", torch.optim.Adafactor)):
        cls = get_optimizer_info(name).cls
        assert issubclass(cls, torch_class) and cls.__name__ == torch_class.__name__
    torch.manual_seed(0)
    ours_model, torch_model = model(), model()
    torch_model.load_state_dict(ours_model.state_dict())
    ours = optarena.create_optimizer(ours_model.parameters(), "adamw", lr=1e-2)
    plain = torch.optim.AdamW(torch_model.parameters(), lr=1e-2)
    for _ in range(3):
        for m, opt in ((ours_model, ours), (torch_model, plain)):
            opt.zero_grad()
            m(torch.ones(2, 3)).pow(2).sum().backward()
            opt.step()
    for a, b in zip(ours_model.parameters(), torch_model.parameters()):
        assert torch.equal(a, b)
    sgdm = optarena.create_optimizer(model(), "sgdm", lr=0.1)
    assert isinstance(sgdm, torch.optim.SGD)
    assert sgdm.param_groups[0]["momentum"] == 0.9 and sgdm.param_groups[0]["dampening"] == 0
    fused = optarena.create_optimizer(model(), "adamw", fused=True)
    assert fused.param_groups[0]["fused"] is True
    foreach = optarena.create_optimizer(model(), "adamnx", foreach=False)
    assert all(g["foreach"] is False for g in foreach.param_groups)


def test_module_input_exempts_1d_params_from_weight_decay():
    m = model()
    opt = optarena.create_optimizer(m, "adamw", weight_decay=0.1)
    decayed, exempt = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.ndim > 1 for p in decayed["params"])
    assert exempt["weight_decay"] == 0.0 and all(p.ndim <= 1 for p in exempt["params"])
    assert len(decayed["params"]) + len(exempt["params"]) == len(list(m.parameters()))
    (single,) = optarena.create_optimizer(m, "adamw", weight_decay=0.1, decay_1d=True).param_groups
    assert single["weight_decay"] == 0.1
    # No decay at all: one group. Frozen parameters are left out.
    m[0].weight.requires_grad_(False)
    (group,) = optarena.create_optimizer(m, "sgdm").param_groups
    assert all(p.requires_grad for p in group["params"])
    # Plain parameter lists pass through untouched.
    params = list(model().parameters())
    (group,) = optarena.create_optimizer(params, "adaburst", total_steps=10).param_groups
    assert group["params"] == params


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown optimizer 'adamx'.*adaburst.*sgdm"):
        optarena.create_optimizer(model(), "adamx")


def test_agr_on_a_torch_baseline_wraps_it_and_refuses_the_paper_mode():
    opt = optarena.create_optimizer(model(), "radam", agr="code", agr_stop_step=5)
    assert isinstance(opt, AGR) and isinstance(opt.optimizer, torch.optim.RAdam) and opt.stop_step == 5
    # the wrapper is an Optimizer: schedulers drive its groups
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for p in model().parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    sched.step()
    assert opt.optimizer.param_groups[0]["lr"] == pytest.approx(0.0005)
    with pytest.raises(ValueError, match="agr='code'"):
        optarena.create_optimizer(model(), "adamw", agr="paper")


# --- bad input ------------------------------------------------------------------------------------

# Bad values of one keyword are drawn for every entry by tests/test_validation.py (from the declared
# constraints); the rules between keywords are each entry's declared error inputs.
ERROR_INPUTS = [
    (f"{name}-{i}", name, error)
    for name in optarena.list_optimizers()
    for i, error in enumerate(get_optimizer_info(name).error_inputs)
]


@pytest.mark.parametrize("cid,name,error", ERROR_INPUTS, ids=[c[0] for c in ERROR_INPUTS])
def test_declared_error_inputs_are_refused_by_the_constructor_and_add_param_group(cid, name, error):
    with pytest.raises(ValueError, match=error.match):
        build([torch.zeros(2, requires_grad=True)], name, **error.kwargs)
    optimizer = build([torch.zeros(2, requires_grad=True)], name)
    group_keys = {k: v for k, v in error.kwargs.items() if k in optimizer.param_groups[0]}
    if group_keys == error.kwargs:  # a rule between group keys holds for every group
        with pytest.raises(ValueError, match=error.match):
            optimizer.add_param_group({"params": [torch.zeros(3, requires_grad=True)], **error.kwargs})
        assert len(optimizer.param_groups) == 1


def test_every_optimizer_module_declares_its_rules_between_keywords():
    assert {name for _, name, _ in ERROR_INPUTS} >= {"adaburst", "adamnx"}


def test_error_message_states_the_allowed_range():
    with pytest.raises(ValueError, match=r"Invalid betas\[1\]: 1\.5; expected a finite value in \[0, 1\)"):
        AdamNX([torch.zeros(1, requires_grad=True)], betas=(0.9, 1.5))
    with pytest.raises(ValueError, match=r"Invalid lr: -0\.1; expected a finite value in \[0, inf\)"):
        Adaburst([torch.zeros(1, requires_grad=True)], lr=-0.1, total_steps=10)


def test_add_param_group_validates_and_keeps_existing_groups():
    opt = AdamW([torch.zeros(2, requires_grad=True)])
    with pytest.raises(ValueError, match="Invalid eps"):
        opt.add_param_group({"params": [torch.zeros(3, requires_grad=True)], "eps": -1.0})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": [torch.zeros(3, requires_grad=True)], "lr": 0.5})
    assert opt.param_groups[1]["lr"] == 0.5 and opt.param_groups[1]["betas"] == (0.9, 0.999)


NO_SPARSE = [name for name in optarena.list_optimizers() if not get_optimizer_info(name).supports_sparse]


@pytest.mark.parametrize("name", NO_SPARSE)
def test_sparse_gradients_get_a_clear_error(name):
    emb = nn.Embedding(10, 3, sparse=True)
    opt = build(list(emb.parameters()), name)
    emb(torch.tensor([1, 2])).sum().backward()
    before = emb.weight.detach().clone()
    with pytest.raises(RuntimeError, match=r"(?i)sparse"):
        opt.step()
    assert emb.weight.grad.is_sparse  # nothing was consumed or changed
    assert torch.equal(emb.weight.detach(), before)


def test_adaburst_epoch_end_rejects_nan_metric():
    opt = Adaburst([torch.zeros(1, requires_grad=True)], total_steps=10)
    with pytest.raises(ValueError, match="metric"):
        opt.epoch_end(float("nan"))


def test_hooks_of_an_optimizer_object_reach_through_wrappers():
    from optarena.optim.hooks import NO_HOOKS, hooks_of

    params = [torch.zeros(2, requires_grad=True)]
    wrapped = optarena.create_optimizer(params, "lookahead_adaburst", total_steps=10)
    assert hooks_of(wrapped) is get_optimizer_info("adaburst").hooks
    assert hooks_of(optarena.create_optimizer(params, "sgdm", agr="code")) is NO_HOOKS
    assert hooks_of(torch.optim.SGD(params, lr=0.1)) is NO_HOOKS


class _CountedRecordFunction(torch.autograd.profiler.record_function):
    entered: ClassVar[list[str]] = []

    def __enter__(self):
        self.entered.append(self.name)
        return super().__enter__()


@pytest.mark.parametrize("name", optarena.list_optimizers())
def test_step_hooks_run_once_and_the_profiler_label_costs_nothing_without_them(name, monkeypatch):
    """Every registered optimizer's ``step`` is wrapped once (torch's hooks run once a step, an own ``step`` such as
    Adaburst's included); torch's profiler label is entered only when something can see it."""
    monkeypatch.setattr(torch.autograd.profiler, "record_function", _CountedRecordFunction)
    monkeypatch.setattr(_CountedRecordFunction, "entered", [])
    net = model()
    optimizer = build(net.parameters(), name)

    def step() -> None:
        optimizer.zero_grad()
        net(torch.randn(5, 3)).square().sum().backward()
        optimizer.step()

    step()
    inner = getattr(optimizer, "optimizer", optimizer)  # a wrapper's step (Lookahead's) calls the inner one's
    label = f"Optimizer.step#{type(inner).__name__}.step"
    assert label not in _CountedRecordFunction.entered  # no hook, no profiler: torch's wrapper is not entered
    calls: list[str] = []
    handles = [
        optimizer.register_step_pre_hook(lambda *_: calls.append("pre")),
        optimizer.register_step_post_hook(lambda *_: calls.append("post")),
        register_optimizer_step_pre_hook(lambda *_: calls.append("global pre")),
    ]
    step()
    assert calls == ["global pre", "pre", "post"]
    assert _CountedRecordFunction.entered.count(label) == 1
    for handle in handles:
        handle.remove()
    step()
    assert calls == ["global pre", "pre", "post"] and _CountedRecordFunction.entered.count(label) == 1
    with torch.profiler.profile() as prof:
        step()
    assert label in {event.key for event in prof.key_averages()}
    # A pre-hook may replace the step's arguments: here it hands the step a closure, whose loss the step returns.
    handle = optimizer.register_step_pre_hook(lambda opt, args, kwargs: ((args[0], lambda: torch.tensor(7.0)), {}))
    assert float(optimizer.step()) == 7.0
    handle.remove()
