"""Muon with auxiliary AdamW against torch.optim.Muon + torch.optim.AdamW, and the Adagrad baseline against torch.

``muon`` runs torch's own update code on both sides, so the reference is torch's two optimizers stepped on the
same split of the parameters, and the results must be equal bit for bit (the Newton–Schulz iteration is the
same bfloat16 computation).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import optarena
from optarena.optim.muon import MuonWithAuxAdamW, muon_param_groups

STEPS = 12


class Net(nn.Module):
    """An embedding, a conv layer (4-D), two linear layers (2-D), a LayerNorm and biases (1-D)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.conv = nn.Conv1d(1, 2, 3, padding=1)
        self.hidden = nn.Linear(12, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens).mean(1, keepdim=True)  # (n, 1, 6)
        x = self.conv(x).flatten(1)  # (n, 12)
        return self.head(torch.tanh(self.norm(self.hidden(x))))


def net(dtype: torch.dtype = torch.float32) -> Net:
    torch.manual_seed(0)
    return Net().to(dtype)


def loss_of(model: Net, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 + step)
    tokens = torch.randint(0, 10, (16, 5), generator=g)
    target = torch.randn(16, 3, generator=g).to(model.head.weight.dtype)
    return (model(tokens) - target).pow(2).mean()


def train(
    model: Net, optimizers: list[torch.optim.Optimizer], steps: int = STEPS, sign: float = 1.0, start: int = 0
) -> None:
    for k in range(start, start + steps):
        for opt in optimizers:
            opt.zero_grad()
        (sign * loss_of(model, k)).backward()
        for opt in optimizers:
            opt.step()


def torch_pair(muon_params, adamw_params, **kw) -> list[torch.optim.Optimizer]:
    muon_kw = dict(lr=0.02, momentum=0.95, weight_decay=0.0)
    adamw_kw = dict(lr=3e-4, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.0)
    muon_kw.update(kw.get("muon", {}))
    adamw_kw.update(kw.get("adamw", {}))
    return [torch.optim.Muon(muon_params, **muon_kw), torch.optim.AdamW(adamw_params, foreach=False, **adamw_kw)]


def assert_same(a: nn.Module, b: nn.Module) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("foreach", [False, True])
def test_muon_equals_torch_muon_on_2d_and_torch_adamw_on_the_rest(dtype, foreach):
    ours_model, ref_model = net(dtype), net(dtype)
    ours = optarena.create_optimizer(ours_model, "muon", foreach=foreach)
    # A flat split by shape: the 2-D weights (embedding and head included) to Muon, the rest to AdamW.
    flat = [p for p in ref_model.parameters() if p.dim() == 2]
    other = [p for p in ref_model.parameters() if p.dim() != 2]
    assert {p.dim() for p in other} == {1, 3}  # biases, LayerNorm, the conv filter
    train(ours_model, [ours])
    train(ref_model, torch_pair(flat, other))
    assert_same(ours_model, ref_model)
    assert [g["use_muon"] for g in ours.param_groups] == [True, False]


def test_muon_with_weight_decay_groups_from_a_module_and_torch_s_other_options():
    # create_optimizer splits a module into decayed (2+ dims) and undecayed (1-D) groups; each is split again.
    kw = dict(weight_decay=0.1, adjust_lr_fn="match_rms_adamw", nesterov=False, ns_steps=3, lr=1e-2)
    ours_model, ref_model = net(), net()
    ours = optarena.create_optimizer(ours_model, "muon", adamw_weight_decay=0.05, adamw_betas=(0.8, 0.99), **kw)
    assert [(g["use_muon"], g["weight_decay"]) for g in ours.param_groups] == [(True, 0.1), (False, 0.05), (False, 0.0)]
    params = list(ref_model.parameters())
    flat = [p for p in params if p.dim() == 2]
    adamw_groups = [
        {"params": [p for p in params if p.dim() > 2], "weight_decay": 0.05},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    train(ours_model, [ours])
    train(ref_model, torch_pair(flat, adamw_groups, muon=kw, adamw={"betas": (0.8, 0.99)}))
    assert_same(ours_model, ref_model)


def test_muon_param_groups_give_embeddings_and_the_head_to_adamw_as_the_authors_do():
    ours_model, ref_model = net(), net()
    groups = muon_param_groups(ours_model, aux_modules=[ours_model.head])
    assert [p for g in groups if g["use_muon"] for p in g["params"]] == [ours_model.hidden.weight]
    ours = MuonWithAuxAdamW(groups, lr=0.05, adamw_lr=1e-3)
    ref = torch_pair(
        [ref_model.hidden.weight],
        [p for p in ref_model.parameters() if p is not ref_model.hidden.weight],
        muon={"lr": 0.05},
        adamw={"lr": 1e-3},
    )
    train(ours_model, [ours])
    train(ref_model, ref)
    assert_same(ours_model, ref_model)


def test_maximize_ascends_as_torch_does_on_the_negated_loss():
    ours_model, ref_model = net(), net()
    ours = optarena.create_optimizer(ours_model, "muon", maximize=True)
    train(ours_model, [ours])
    train(ref_model, torch_pair(*_split(ref_model)), sign=-1.0)
    assert_same(ours_model, ref_model)


def _split(model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    params = list(model.parameters())
    return [p for p in params if p.dim() == 2], [p for p in params if p.dim() != 2]


def test_state_is_torch_s_and_a_scheduler_drives_both_sides():
    ours_model, ref_model = net(), net()
    ours = optarena.create_optimizer(ours_model, "muon")
    ref = torch_pair(*_split(ref_model))
    schedules = [torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5) for o in (ours, *ref)]
    for k in range(STEPS):
        train(ours_model, [ours], steps=1, start=k)
        train(ref_model, ref, steps=1, start=k)
        for s in schedules:
            s.step()
    assert_same(ours_model, ref_model)
    assert ours.param_groups[0]["lr"] == 0.02 * 0.5**4 and ours.param_groups[1]["lr"] == 3e-4 * 0.5**4
    ref_state = {**ref[0].state, **ref[1].state}
    for p, q in zip(ours_model.parameters(), ref_model.parameters()):
        assert ours.state[p].keys() == ref_state[q].keys()
        for key, value in ours.state[p].items():
            assert torch.equal(value, ref_state[q][key]), key


def test_state_dict_round_trip_continues_exactly():
    model = net()
    opt = optarena.create_optimizer(model, "muon", weight_decay=0.1)
    train(model, [opt], steps=4)
    saved = copy.deepcopy(opt.state_dict())  # torch's load_state_dict may alias the tensors it is given
    assert [g["saved_by"] for g in saved["param_groups"]] == ["optarena.MuonWithAuxAdamW"] * 3
    twin_model = net()
    twin_model.load_state_dict(model.state_dict())
    twin = optarena.create_optimizer(twin_model, "muon", weight_decay=0.1)
    twin.load_state_dict(saved)
    for m, o in ((model, opt), (twin_model, twin)):
        train(m, [o], steps=4, start=4)
    assert_same(model, twin_model)
    with pytest.raises(ValueError, match=r"Invalid state_dict for optarena\.MuonWithAuxAdamW: .*saved by torch\.optim"):
        opt.load_state_dict(optarena.create_optimizer(net(), "adamw").state_dict())


def test_group_keys_reach_their_side():
    w, b = nn.Parameter(torch.ones(3, 2)), nn.Parameter(torch.ones(3))
    opt = MuonWithAuxAdamW([{"params": [w, b], "lr": 0.1, "momentum": 0.9, "betas": (0.5, 0.6), "adamw_eps": 1e-6}])
    muon_group, adamw_group = opt.param_groups
    assert (muon_group["lr"], muon_group["momentum"], "betas" in muon_group) == (0.1, 0.9, False)
    assert (adamw_group["lr"], adamw_group["betas"], adamw_group["eps"], "momentum" in adamw_group) == (
        0.1,
        (0.5, 0.6),
        1e-6,
        False,
    )
    assert muon_group["eps"] == 1e-7  # Muon's own default: adamw_eps is the AdamW side's only
    opt.add_param_group({"params": [nn.Parameter(torch.ones(2))], "adamw_lr": 5e-3})
    assert (opt.param_groups[2]["use_muon"], opt.param_groups[2]["lr"]) == (False, 5e-3)


def test_bad_input_is_a_clear_error_and_changes_nothing():
    w, b = nn.Parameter(torch.ones(3, 2)), nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match=r"use_muon=True group takes 2-D tensors only .*shape \(3,\)"):
        MuonWithAuxAdamW([{"params": [w, b], "use_muon": True}])
    with pytest.raises(ValueError, match=r"Invalid eps: 0\.0; a Muon group's eps must be > 0"):
        MuonWithAuxAdamW([w], eps=0.0)
    with pytest.raises(ValueError, match=r"Invalid adamw_betas\[0\]: 1\.0"):
        MuonWithAuxAdamW([w], adamw_betas=(1.0, 0.9))
    with pytest.raises(ValueError, match=r"Invalid ns_steps: 100; expected an integer in \[0, 99\]"):
        MuonWithAuxAdamW([w], ns_steps=100)
    opt = MuonWithAuxAdamW([w])
    extra = nn.Parameter(torch.ones(4, 4))
    for bad in ({"params": [extra, b], "momentum": 1.5}, {"params": [extra, w]}):  # a bad value; a duplicate
        with pytest.raises(ValueError, match=r"Invalid momentum: 1\.5|more than one parameter group"):
            opt.add_param_group(bad)
        assert len(opt.param_groups) == 1  # neither half was added
    # torch refuses a complex matrix: the AdamW group before it has not stepped either.
    complex_weight = nn.Parameter(torch.ones(2, 2, dtype=torch.complex64))
    opt = MuonWithAuxAdamW([{"params": [b], "use_muon": False}, {"params": [complex_weight], "use_muon": True}])
    b.grad, complex_weight.grad = torch.ones(3), torch.ones(2, 2, dtype=torch.complex64)
    with pytest.raises(RuntimeError, match="Muon does not support complex parameters"):
        opt.step()
    assert torch.equal(b, torch.ones(3)) and opt.state[b]["step"] == 0


# --- Adagrad ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sparse", [False, True])
def test_adagrad_is_torch_s_adagrad_with_sparse_gradients(sparse):
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(nn.Embedding(10, 4, sparse=sparse))
    ours = optarena.create_optimizer(models[0].parameters(), "adagrad", lr=0.1, lr_decay=1e-2)
    ref = torch.optim.Adagrad(models[1].parameters(), lr=0.1, lr_decay=1e-2)
    assert isinstance(ours, torch.optim.Adagrad)
    for k in range(5):
        tokens = torch.tensor([k % 10, (3 * k) % 10, 7])
        for model, opt in zip(models, (ours, ref)):
            opt.zero_grad()
            model(tokens).pow(2).sum().backward()
            assert model.weight.grad.is_sparse == sparse
            opt.step()
    assert torch.equal(models[0].weight, models[1].weight)
