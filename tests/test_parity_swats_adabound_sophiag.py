"""SWATS, AdaBound/AMSBound and SophiaG against independent oracles (>= 20 float64 steps, seeded MLP).

Primary oracles restate the paper's (SWATS) or the authors' (AdaBound, SophiaG) equations in plain
tensor code; no optarena kernel is called by an oracle. Third-party cross-checks: kozistr
``pytorch_optimizer.SWATS`` and ``pytorch_optimizer.AdaBound``, where their semantics agree.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import pytorch_optimizer
import torch
import torch.nn.functional as F
from torch import nn

import optarena
from optarena.optim.adabound import AdaBound
from optarena.optim.sophiag import SophiaG, sophiag_gnb_update
from optarena.optim.swats import SWATS, swats_sgd_multi_tensor, swats_sgd_single_tensor

from .helpers import backward, batch, max_diff, seeded_mlp

STEPS = 25
TOL = 1e-10


def params_of(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def layers(model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    return list(model[0].parameters()), list(model[2].parameters())


# === SWATS ========================================================================================


class SwatsAlgorithm1:
    """Algorithm 1 of the SWATS paper restated, with one switch test per *unit* (a list of param indices).

    ``lrs[i]`` is the lr of parameter i (its group's; the test may change it). The one extension of
    the paper written here is optarena's documented one: after the switch the SGD rate is
    Λ·lr/lr_at_switch (Λ itself while lr is constant).
    """

    def __init__(self, params, lrs, units, beta1=0.9, beta2=0.999, eps=1e-9, tol=1e-9, rtol=0.0):
        self.params, self.lrs = list(params), list(lrs)
        self.units = [dict(members=u, lam=0.0, sgd=False, Lambda=None, lr_switch=None, switch_step=None) for u in units]
        self.b1, self.b2, self.eps, self.tol, self.rtol = beta1, beta2, eps, tol, rtol
        self.m = [torch.zeros_like(p) for p in self.params]
        self.a = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.k = 0

    @torch.no_grad()
    def step(self):
        self.k += 1
        k, b1, b2 = self.k, self.b1, self.b2
        for unit in self.units:
            pp = pg = 0.0
            for i in unit["members"]:
                x, g = self.params[i], self.params[i].grad.clone()
                if unit["sgd"]:  # lines 5-8
                    self.v[i] = b1 * self.v[i] + g
                    rate = unit["Lambda"] * self.lrs[i] / unit["lr_switch"][i]
                    x.sub_((1 - b1) * rate * self.v[i])
                    continue
                self.m[i] = b1 * self.m[i] + (1 - b1) * g  # line 10
                self.a[i] = b2 * self.a[i] + (1 - b2) * g * g  # line 11
                p = -self.lrs[i] * math.sqrt(1 - b2**k) / (1 - b1**k) * self.m[i] / (torch.sqrt(self.a[i]) + self.eps)
                x.add_(p)  # line 13
                pp += (p * p).sum().item()
                pg += (p * g).sum().item()
            if unit["sgd"] or pg == 0:
                continue
            gamma = pp / -pg  # line 15
            unit["lam"] = b2 * unit["lam"] + (1 - b2) * gamma  # line 16
            Lambda = unit["lam"] / (1 - b2**k)
            if k > 1 and Lambda > 0 and abs(Lambda - gamma) < self.tol + self.rtol * abs(gamma):  # line 17
                lr_switch = {i: self.lrs[i] for i in unit["members"]}
                unit.update(sgd=True, Lambda=Lambda, switch_step=k, lr_switch=lr_switch)
                for i in unit["members"]:
                    self.v[i] = torch.zeros_like(self.v[i])


# (id, granularity, lrs of the two layers (None: one group), units over the 4 tensors, tolerances,
#  step after which every lr is halved). Settings chosen so that switches happen inside the run.
SWATS_CASES = [
    ("global-two-groups-schedule", "global", (0.03, 0.05), [[0, 1, 2, 3]], dict(switch_tol=1e-3, switch_rtol=0.0), 15),
    ("group", "group", (0.03, 0.01), [[0, 1], [2, 3]], dict(switch_tol=0.0, switch_rtol=0.02), None),
    ("tensor", "tensor", None, [[0], [1], [2], [3]], dict(switch_tol=0.0, switch_rtol=0.02), None),
]


def _swats_groups(model, lrs):
    if lrs is None:
        return [{"params": list(model.parameters())}], [0.01] * 4
    first, second = layers(model)
    return [{"params": first, "lr": lrs[0]}, {"params": second, "lr": lrs[1]}], [lrs[0]] * 2 + [lrs[1]] * 2


def _switch_steps(opt: SWATS) -> list:
    """Our switch step of every tensor, in model order."""
    out = []
    for group in opt.param_groups:
        for p in group["params"]:
            unit = opt.state[p] if group["granularity"] == "tensor" else group
            out.append(unit["swats_switch_step"])
    return out


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("cid,granularity,lrs,units,tols,halve_after", SWATS_CASES, ids=[c[0] for c in SWATS_CASES])
def test_swats_matches_algorithm_1(foreach, cid, granularity, lrs, units, tols, halve_after):
    ours_model, oracle_model = seeded_mlp(0), seeded_mlp(0)
    groups, lr_list = _swats_groups(ours_model, lrs)
    ours = SWATS(groups, lr=0.01, granularity=granularity, foreach=foreach, **tols)
    oracle = SwatsAlgorithm1(
        oracle_model.parameters(), lr_list, units, tol=tols["switch_tol"], rtol=tols["switch_rtol"]
    )
    for k in range(STEPS):
        backward(ours_model, k)
        backward(oracle_model, k)
        ours.step()
        oracle.step()
        if halve_after is not None and k == halve_after:
            for group in ours.param_groups:
                group["lr"] *= 0.5
            oracle.lrs = [lr * 0.5 for lr in oracle.lrs]
    expected = [None] * 4
    for unit in oracle.units:
        for i in unit["members"]:
            expected[i] = unit["switch_step"]
    # The run covers the Adam phase, at least one switch, and SGD steps after it.
    switched = [s for s in expected if s is not None]
    assert switched and min(switched) < STEPS - 5
    assert _switch_steps(ours) == expected
    assert max_diff(params_of(ours_model), params_of(oracle_model)) <= TOL


def test_swats_global_mode_is_one_decision_and_one_rate_for_every_group():
    model = seeded_mlp(0)
    groups, _ = _swats_groups(model, (0.03, 0.05))
    opt = SWATS(groups, switch_tol=1e-3)
    for k in range(STEPS):
        backward(model, k)
        opt.step()
    a, b = opt.param_groups
    assert a["swats_phase"] == b["swats_phase"] == "sgd"
    assert a["swats_switch_step"] == b["swats_switch_step"] is not None
    assert a["swats_sgd_lr"] == b["swats_sgd_lr"] > 0
    assert (a["swats_switch_lr"], b["swats_switch_lr"]) == (0.03, 0.05)


@pytest.mark.parametrize("foreach", [False, True])
def test_swats_steady_state_sgd_step_under_a_constant_gradient_equals_the_papers(foreach):
    """The product owner's failure mode: the SGD phase with dampening (1 − β1) converges to Λ·g.

    pytorch-swats scales its buffer in place every step, buf ← (1 − β1)(β1·buf + g), which settles
    at (1 − β1)/(1 − β1(1 − β1))·g: a step ~9× smaller than the paper's.
    """
    lr, beta1 = 0.01, 0.9
    g = torch.tensor([0.5, -1.0, 0.2, 2.0, -0.3], dtype=torch.float64)
    x = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    opt = SWATS([x], lr=lr, betas=(beta1, 0.999), foreach=foreach)
    total = 120
    for _ in range(total):
        x.grad = g.clone()
        before = x.detach().clone()
        opt.step()
    last_step = x.detach() - before
    group = opt.param_groups[0]
    # A constant gradient makes γ_k constant (up to ε), so the paper's test fires at k = 2 ...
    assert group["swats_switch_step"] == 2
    # ... with Λ = γ = pᵀp/(−pᵀg), p ≈ −lr·sign(g): Λ ≈ lr·n/Σ|g|.
    Lambda = group["swats_sgd_lr"]
    assert Lambda == pytest.approx(lr * g.numel() / g.abs().sum().item(), rel=1e-6)
    # From v = 0: v_n = g(1 − β1^n)/(1 − β1), so the n-th SGD step is −Λ·g·(1 − β1^n) → −Λ·g.
    n = total - group["swats_switch_step"]
    assert max_diff(last_step, -Lambda * g * (1 - beta1**n)) <= 1e-15
    assert max_diff(last_step, -Lambda * g) <= 1e-5 * Lambda * g.abs().max().item()
    buggy = (1 - beta1) / (1 - beta1 * (1 - beta1)) * Lambda * g
    assert (last_step.abs() / buggy.abs()).min().item() > 9.0
    # kozistr fixed the bug: its steady state is the same (its eps doubles as the switch rtol).
    x2 = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    y = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    ours = SWATS([x2], lr=lr, eps=1e-9, switch_tol=1e-8, switch_rtol=1e-9, foreach=foreach)
    koz = pytorch_optimizer.SWATS([y], lr=lr, eps=1e-9, foreach=False)
    for _ in range(total):
        x2.grad, y.grad = g.clone(), g.clone()
        ours.step()
        koz.step()
    assert koz.param_groups[0]["phase"] == "sgd"
    # (its +1e-15 inside √a shifts Λ by ~1e-11 relative here: ~1e-11 on θ ≈ 3 after 120 steps)
    assert max_diff(x2.detach(), y.detach()) <= TOL


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("granularity", ["group", "tensor"])
def test_swats_matches_kozistr_where_the_semantics_agree(foreach, granularity):
    """kozistr estimates per tensor and switches the whole group; with one tensor per group that is
    our 'group' and 'tensor' mode. Its test is allclose(Λ, γ, rtol=eps, atol=1e-8) with Λ > 0:
    ``switch_tol=1e-8, switch_rtol=eps``. Its +1e-15 inside √a is far below eps = 0.02 here."""
    eps = 0.02
    ours_model, ref_model = seeded_mlp(0), seeded_mlp(0)
    ours = SWATS(
        [{"params": [p]} for p in ours_model.parameters()],
        lr=1e-2,
        eps=eps,
        granularity=granularity,
        switch_tol=1e-8,
        switch_rtol=eps,
        foreach=foreach,
    )
    ref = pytorch_optimizer.SWATS([{"params": [p]} for p in ref_model.parameters()], lr=1e-2, eps=eps, foreach=False)
    for k in range(STEPS):
        backward(ours_model, k)
        backward(ref_model, k)
        ours.step()
        ref.step()
    steps = _switch_steps(ours)
    assert [s is not None for s in steps] == [g["phase"] == "sgd" for g in ref.param_groups]
    assert len({s for s in steps if s is not None}) >= 2  # tensors switch at different steps
    assert max_diff(params_of(ours_model), params_of(ref_model)) <= TOL


@pytest.mark.parametrize("granularity", ["global", "group", "tensor"])
def test_swats_resumes_from_a_state_dict_across_the_switch(granularity):
    kw = dict(lr=0.01, granularity=granularity, switch_tol=0.0, switch_rtol=0.1)
    model = seeded_mlp(0)
    opt = SWATS(model.parameters(), **kw)
    for k in range(2):  # before any switch (k > 1 is required)
        backward(model, k)
        opt.step()
    assert all(s is None for s in _switch_steps(opt))
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    twin_model = copy.deepcopy(model)
    twin = SWATS(twin_model.parameters(), **kw)
    twin.load_state_dict(torch.load(buffer, weights_only=True))
    for k in range(2, STEPS):
        backward(model, k)
        backward(twin_model, k)
        opt.step()
        twin.step()
    assert any(s is not None for s in _switch_steps(opt))
    assert _switch_steps(opt) == _switch_steps(twin)
    assert max_diff(params_of(model), params_of(twin_model)) == 0.0


def test_swats_group_added_after_a_global_switch_starts_in_sgd_at_its_own_lr():
    g = torch.tensor([0.5, -1.0, 0.2], dtype=torch.float64)
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = SWATS([x], lr=0.01)
    for _ in range(3):
        x.grad = g.clone()
        opt.step()
    assert opt.param_groups[0]["swats_phase"] == "sgd"
    y = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt.add_param_group({"params": [y], "lr": 0.05})
    y.grad = g.clone()
    x.grad = None
    opt.step()
    group = opt.param_groups[1]
    assert group["swats_phase"] == "sgd" and group["swats_switch_lr"] == 0.05
    # First SGD step from v = 0: −(1 − β1)·Λ·g.
    assert max_diff(y.detach(), -(1 - 0.9) * group["swats_sgd_lr"] * g) <= 1e-15


def test_swats_sgd_kernel_takes_tensor_hyperparameters():
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 3), (5,), (1,)]
    results = []
    for as_tensor in (False, True):
        params = [torch.randn(s, generator=g.manual_seed(1), dtype=torch.float64) for s in shapes]
        grads = [torch.randn(s, generator=g.manual_seed(2), dtype=torch.float64) for s in shapes]
        bufs = [torch.rand(s, generator=g.manual_seed(3), dtype=torch.float64) for s in shapes]
        unused = [torch.zeros(s, dtype=torch.float64) for s in shapes]
        rates = [0.3, 0.2, 0.1]
        wrap = (lambda v: torch.tensor(v, dtype=torch.float64)) if as_tensor else (lambda v: v)
        for _ in range(3):
            swats_sgd_multi_tensor(
                params,
                grads,
                grads,
                bufs,
                unused,
                steps=[wrap(3.0)] * 3,
                sgd_lrs=[wrap(r) for r in rates],
                beta1=wrap(0.9),
                weight_decay=wrap(0.01),
                decoupled=True,
            )
        results.append(params + bufs)
    assert max_diff(results[0], results[1]) <= 1e-12
    # and the reference kernel agrees with the multi-tensor one
    p, b = torch.ones(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    swats_sgd_single_tensor(
        p, 2 * p, 2 * p, b, b.clone(), step=1.0, sgd_lr=0.5, beta1=0.9, weight_decay=0.0, decoupled=False
    )
    assert torch.allclose(p, torch.full((3,), 1 - 0.1 * 0.5 * 2, dtype=torch.float64), rtol=0, atol=1e-15)


def test_swats_rejects_bad_settings():
    params = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match="granularity"):
        SWATS(params, granularity="layer")
    with pytest.raises(ValueError, match=r"switch_tol.*\[0"):
        SWATS(params, switch_tol=-1.0)
    with pytest.raises(ValueError, match="weight_decay_mode"):
        SWATS(params, weight_decay_mode="unscaled")
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = SWATS([{"params": [a]}, {"params": [b], "betas": (0.9, 0.99)}])
    a.grad, b.grad = torch.ones(2), torch.ones(2)
    with pytest.raises(ValueError, match="β2"):
        opt.step()


# === AdaBound / AMSBound ============================================================================


class AdaBoundOfficial:
    """The authors' AdaBound / AdaBoundW (Luolc/AdaBound) restated, one base_lr per group as they
    capture it (``base_lr`` given explicitly for a group added later, which their code cannot do)."""

    def __init__(self, groups, betas=(0.9, 0.999), final_lr=0.1, gamma=1e-3, eps=1e-8, wd=0.0, ams=False, wd_mode="l2"):
        self.groups = [dict(g, base_lr=g.get("base_lr", g["lr"]), params=list(g["params"])) for g in groups]
        self.b1, self.b2 = betas
        self.final_lr, self.gamma, self.eps, self.wd, self.ams, self.wd_mode = final_lr, gamma, eps, wd, ams, wd_mode
        self.state = {}
        self.clamped = [0, 0]  # coordinates held at the lower / upper bound, to show the bounds bind

    def add_group(self, group):
        self.groups.append(dict(group, base_lr=group["lr"], params=list(group["params"])))

    @torch.no_grad()
    def step(self):
        b1, b2 = self.b1, self.b2
        for group in self.groups:
            lr = group["lr"]
            for p in group["params"]:
                s = self.state.setdefault(p, dict(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p)))
                s["t"] += 1
                t = s["t"]
                g = p.grad
                if self.wd and self.wd_mode == "l2":
                    g = g + self.wd * p
                s["m"] = b1 * s["m"] + (1 - b1) * g
                s["v"] = b2 * s["v"] + (1 - b2) * g * g
                v = s["v"]
                if self.ams:
                    s["vmax"] = torch.maximum(s.get("vmax", torch.zeros_like(v)), v)
                    v = s["vmax"]
                denom = torch.sqrt(v) + self.eps
                step_size = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
                final = self.final_lr * lr / group["base_lr"]
                lower, upper = final * (1 - 1 / (self.gamma * t + 1)), final * (1 + 1 / (self.gamma * t))
                raw = step_size / denom
                self.clamped[0] += int((raw < lower).sum())
                self.clamped[1] += int((raw > upper).sum())
                update = torch.clamp(raw, lower, upper) * s["m"]
                if self.wd and self.wd_mode == "unscaled":  # AdaBoundW: θ − update − λ·θ_old
                    p.sub_(update + self.wd * p)
                elif self.wd and self.wd_mode == "decoupled":
                    p.mul_(1 - lr * self.wd).sub_(update)
                else:
                    p.sub_(update)


# β2 = 0.99: v falls at times, so AMSBound differs; final_lr and γ such that both bounds bind in 25 steps.
AB_KW = dict(betas=(0.9, 0.99), final_lr=0.3, gamma=0.1)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("ams", [False, True], ids=["adabound", "amsbound"])
@pytest.mark.parametrize("wd,mode", [(0.0, "l2"), (5e-3, "l2"), (5e-3, "unscaled"), (5e-2, "decoupled")])
def test_adabound_matches_the_authors_equations(foreach, ams, wd, mode):
    lr = 1e-2
    ours_model, oracle_model = seeded_mlp(0), seeded_mlp(0)
    name = "amsbound" if ams else "adabound"
    ours = optarena.create_optimizer(
        ours_model.parameters(), name, lr=lr, weight_decay=wd, weight_decay_mode=mode, foreach=foreach, **AB_KW
    )
    oracle = AdaBoundOfficial([{"params": oracle_model.parameters(), "lr": lr}], wd=wd, ams=ams, wd_mode=mode, **AB_KW)
    sched = torch.optim.lr_scheduler.StepLR(ours, step_size=12, gamma=0.5)
    for k in range(STEPS):
        backward(ours_model, k)
        backward(oracle_model, k)
        ours.step()
        oracle.step()
        sched.step()
        oracle.groups[0]["lr"] = ours.param_groups[0]["lr"]  # final_lr follows lr / base_lr
    assert ours.param_groups[0]["lr"] < lr  # the schedule acted
    assert min(oracle.clamped) > 0  # both bounds bound
    assert max_diff(params_of(ours_model), params_of(oracle_model)) <= TOL
    if ams:
        v = [ours.state[p]["exp_avg_sq"] for p in ours_model.parameters()]
        vmax = [ours.state[p]["max_exp_avg_sq"] for p in ours_model.parameters()]
        assert max_diff(v, vmax) > 0  # the max mattered
    else:
        assert all("max_exp_avg_sq" not in ours.state[p] for p in ours_model.parameters())


@pytest.mark.parametrize("ams", [False, True], ids=["adabound", "amsbound"])
@pytest.mark.parametrize("wd", [0.0, 5e-4])
def test_adabound_matches_kozistr_with_coupled_decay(ams, wd):
    """kozistr's AdaBound with weight_decouple=False (ams_bound for AMSBound).

    kozistr adds 1e-15 inside the square root: √(v + 1e-15) − √v ≈ 5e-16/√v, a relative change of
    ~5e-16/v in the denominator. At this MLP's natural scale (v ~ 1e-7 early on) that alone moves
    the parameters by ~5e-9 in 25 steps, so here the gradients are scaled by 1e3 (v ≥ ~0.1, the
    term below 1e-14 relative). The authors' equations are the primary oracle, at natural scale, above.
    """
    scale, lr = 1e3, 1e-2
    ours_model, ref_model = seeded_mlp(0), seeded_mlp(0)
    ours = AdaBound(ours_model.parameters(), lr=lr, final_lr=0.05, weight_decay=wd, amsbound=ams)
    ref = pytorch_optimizer.AdaBound(
        ref_model.parameters(),
        lr=lr,
        final_lr=0.05,
        weight_decay=wd,
        weight_decouple=False,
        ams_bound=ams,
        foreach=False,
    )
    for k in range(STEPS):
        for model in (ours_model, ref_model):
            backward(model, k)
            for p in model.parameters():
                p.grad.mul_(scale)
        ours.step()
        ref.step()
    assert max_diff(params_of(ours_model), params_of(ref_model)) <= TOL


@pytest.mark.parametrize("foreach", [False, True])
def test_adabound_paper_sqrt_t_divides_the_clipped_rate_by_sqrt_t(foreach):
    lr, b1, b2, final_lr, gamma, eps = 1e-2, 0.9, 0.999, 0.1, 1e-3, 1e-8

    def update(p, g, s, t):  # Algorithm 2's η_t = clip(...)/√t on the code's clipped quantity
        if not s:
            s["m"], s["v"] = torch.zeros_like(p), torch.zeros_like(p)
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["v"] = b2 * s["v"] + (1 - b2) * g * g
        rate = lr * math.sqrt(1 - b2**t) / (1 - b1**t) / (torch.sqrt(s["v"]) + eps)
        rate = torch.clamp(rate, final_lr * (1 - 1 / (gamma * t + 1)), final_lr * (1 + 1 / (gamma * t)))
        p.sub_(rate / math.sqrt(t) * s["m"])

    ours_model, oracle_model = seeded_mlp(0), seeded_mlp(0)
    ours = AdaBound(ours_model.parameters(), lr=lr, paper_sqrt_t=True, foreach=foreach)
    state = {}
    for k in range(STEPS):
        backward(ours_model, k)
        backward(oracle_model, k)
        ours.step()
        with torch.no_grad():
            for p in oracle_model.parameters():
                update(p, p.grad.clone(), state.setdefault(p, {}), k + 1)
    assert max_diff(params_of(ours_model), params_of(oracle_model)) <= TOL


def test_adabound_group_added_later_gets_its_own_base_lr_and_is_updated():
    """Hazard 1: the authors zip a base_lrs list made at construction with the groups, so a group
    added later is silently skipped by step(). Here it carries its own base_lr and follows its lr."""
    ours_model, oracle_model = seeded_mlp(0), seeded_mlp(0)
    first, second = layers(ours_model)
    o_first, o_second = layers(oracle_model)
    ours = AdaBound(first, lr=1e-2, **AB_KW)
    oracle = AdaBoundOfficial([{"params": o_first, "lr": 1e-2}], **AB_KW)
    for k in range(STEPS):
        if k == 5:
            ours.add_param_group({"params": second, "lr": 4e-3})
            oracle.add_group({"params": o_second, "lr": 4e-3})
        if k == 14:  # a schedule halves every lr: the added group's bounds must halve too
            for group in ours.param_groups:
                group["lr"] *= 0.5
            for group in oracle.groups:
                group["lr"] *= 0.5
        backward(ours_model, k)
        backward(oracle_model, k)
        if k < 5:
            for p in second + o_second:
                p.grad = None
        ours.step()
        oracle.step()
    assert ours.param_groups[1]["base_lr"] == 4e-3
    assert max_diff(params_of(ours_model), params_of(oracle_model)) <= TOL
    assert max_diff(second, layers(seeded_mlp(0))[1]) > 0  # the added group moved


def test_adabound_state_dict_saves_base_lr():
    """Hazard 2: the authors' base_lrs are not saved; a resumed optimizer takes its constructor's lr
    as the reference. Here base_lr is in the group, so the resumed run is the uninterrupted one."""
    model = seeded_mlp(0)
    opt = AdaBound(model.parameters(), lr=1e-2, **AB_KW)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    for k in range(10):
        backward(model, k)
        opt.step()
        sched.step()
    saved = opt.state_dict()
    assert saved["param_groups"][0]["base_lr"] == 1e-2 and saved["param_groups"][0]["lr"] == 2.5e-3
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    twin_model = copy.deepcopy(model)
    twin = AdaBound(twin_model.parameters(), lr=2.5e-3, **AB_KW)  # e.g. rebuilt from the current lr
    twin.load_state_dict(torch.load(buffer, weights_only=True))
    assert twin.param_groups[0]["base_lr"] == 1e-2
    for k in range(10, STEPS):
        backward(model, k)
        backward(twin_model, k)
        opt.step()
        twin.step()
    assert max_diff(params_of(model), params_of(twin_model)) == 0.0


def test_adabound_group_created_with_lr_zero_takes_its_first_nonzero_lr_as_reference():
    p = torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = AdaBound([p], lr=0.0)
    p.grad = torch.ones(3, dtype=torch.float64)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(3, dtype=torch.float64))  # frozen, and no 0/0
    opt.param_groups[0]["lr"] = 1e-3
    opt.step()
    assert opt.param_groups[0]["base_lr"] == 1e-3
    assert torch.isfinite(p).all() and (p.detach() < 1).all()


def test_adabound_kernel_takes_tensor_hyperparameters_with_amsbound():
    opt = AdaBound([torch.zeros(1, requires_grad=True)], lr=3e-2, weight_decay=1e-2, amsbound=True)
    hyper = opt._kernel_hyperparameters(opt.param_groups[0])
    as_tensor = {k: torch.tensor(v, dtype=torch.float64) if isinstance(v, float) else v for k, v in hyper.items()}
    results = []
    for hp, steps in ((hyper, [3.0, 7.0]), (as_tensor, [torch.tensor(3.0), torch.tensor(7.0)])):
        g = torch.Generator().manual_seed(0)
        params = [torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)]
        grads = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]
        states = [[torch.rand(p.shape, generator=g, dtype=torch.float64) for p in params] for _ in range(3)]
        for _ in range(3):
            AdaBound.multi_tensor_kernel(params, grads, grads, *states, steps=steps, **hp)
        results.append(params + [t for s in states for t in s])
    assert max_diff(results[0], results[1]) <= 1e-12


def test_adabound_rejects_bad_settings():
    params = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match=r"gamma.*\(0, 1\)"):
        AdaBound(params, gamma=0.0)
    with pytest.raises(ValueError, match="final_lr"):
        AdaBound(params, final_lr=-0.1)
    with pytest.raises(ValueError, match="weight_decay_mode"):
        AdaBound(params, weight_decay_mode="adamw")
    with pytest.raises(ValueError, match=r"weight_decay.*\[0, 1\]"):
        AdaBound(params, weight_decay=2.0, weight_decay_mode="unscaled")
    assert optarena.create_optimizer(params, "amsbound").param_groups[0]["amsbound"] is True


# === SophiaG ========================================================================================


class SophiaGOfficial:
    """The authors' SophiaG (Liuhong99/Sophia, sophia.py) restated: step(bs) and update_hessian()."""

    def __init__(self, groups, lr, betas, rho, weight_decay):
        self.groups = [dict(g, params=list(g["params"])) for g in groups]
        self.lr, self.b1, self.b2, self.rho, self.wd = lr, betas[0], betas[1], rho, weight_decay
        self.state = {}

    def _state(self, p):
        return self.state.setdefault(p, dict(m=torch.zeros_like(p), h=torch.zeros_like(p)))

    @torch.no_grad()
    def update_hessian(self, grads):
        for p, g in grads.items():
            s = self._state(p)
            s["h"] = self.b2 * s["h"] + (1 - self.b2) * g * g

    @torch.no_grad()
    def step(self):
        for group in self.groups:
            for p in group["params"]:
                s = self._state(p)
                p.mul_(1 - self.lr * self.wd)
                s["m"] = self.b1 * s["m"] + (1 - self.b1) * p.grad
                ratio = (s["m"].abs() / (self.rho * group["bs"] * s["h"] + 1e-15)).clamp(None, 1)
                p.addcmul_(s["m"].sign(), ratio, value=-self.lr)


def official_gnb_gradients(model, x):
    """The authors' training loop: y ~ Categorical(logits); mean CE on it; its gradients."""
    logits = model(x)
    y = torch.distributions.Categorical(logits=logits).sample()
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=-1)
    params = list(model.parameters())
    return dict(zip(params, torch.autograd.grad(loss, params)))


SOPHIA_KW = dict(lr=1e-2, betas=(0.965, 0.99), rho=1.0, weight_decay=0.1)  # ρ=1: 10-35 % unclipped here


@pytest.mark.parametrize("foreach", [False, True])
def test_sophiag_matches_the_authors_algorithm_with_hessian_updates(foreach):
    k_hessian = 3
    ours_model, oracle_model = seeded_mlp(0), seeded_mlp(0)
    a, b = layers(ours_model)
    ours = SophiaG([{"params": a, "bs": 16}, {"params": b, "bs": 8}], foreach=foreach, **SOPHIA_KW)
    oa, ob = layers(oracle_model)
    oracle = SophiaGOfficial([{"params": oa, "bs": 16}, {"params": ob, "bs": 8}], **SOPHIA_KW)
    updates = 0
    for k in range(STEPS):
        backward(ours_model, k)
        backward(oracle_model, k)
        ours.step()
        oracle.step()
        if k % k_hessian == k_hessian - 1:  # the authors' `iter_num % k == k - 1`
            x, _ = batch(k)
            torch.manual_seed(500 + k)
            sophiag_gnb_update(ours_model, x, ours)
            torch.manual_seed(500 + k)
            oracle.update_hessian(official_gnb_gradients(oracle_model, x))
            updates += 1
    assert updates >= 8
    # The clip binds for some coordinates and not for others (the README's "win rate").
    win = [
        (ours.state[p]["exp_avg"].abs() < g["rho"] * g["bs"] * ours.state[p]["hessian"]).double().mean().item()
        for g in ours.param_groups
        for p in g["params"]
    ]
    assert min(win) > 0 and max(win) < 1
    assert max_diff(params_of(ours_model), params_of(oracle_model)) <= TOL
    hessians = [ours.state[p]["hessian"] for p in ours_model.parameters()]
    assert max_diff(hessians, [oracle.state[p]["h"] for p in oracle_model.parameters()]) <= TOL


def test_sophiag_update_hessian_reads_p_grad_and_writes_only_h():
    model = seeded_mlp(0)
    opt = SophiaG(model.parameters())
    backward(model, 0)
    grads = [p.grad for p in model.parameters()]
    snapshot = [(g.clone(), g._version) for g in grads]
    opt.update_hessian()  # before any step: state made lazily, step not counted
    opt.update_hessian()
    beta2 = opt.param_groups[0]["betas"][1]
    for p, g, (value, version) in zip(model.parameters(), grads, snapshot):
        assert p.grad is g and g._version == version and torch.equal(g, value)
        state = opt.state[p]
        assert state["step"].item() == 0 and not state["exp_avg"].any()
        expected = (1 - beta2) * beta2 * value * value + (1 - beta2) * value * value
        assert max_diff(state["hessian"], expected) <= 1e-15


def test_sophiag_gnb_helper_restores_every_grad_and_estimates_from_sampled_labels():
    model = seeded_mlp(0)
    extra = nn.Linear(3, 3).double()  # a parameter of the model the optimizer does not own
    full = nn.Sequential(model, extra)
    opt = SophiaG(model.parameters())
    backward(model, 0)
    first_weight = model[0].weight
    first_weight.grad = None  # one None, the rest tensors
    before = {p: (p.grad, None if p.grad is None else (p.grad.clone(), p.grad._version)) for p in full.parameters()}
    x, _ = batch(3)
    torch.manual_seed(7)
    loss = sophiag_gnb_update(full, x, opt)
    for p, (grad, snap) in before.items():
        assert p.grad is grad
        if snap is not None:
            assert torch.equal(grad, snap[0]) and grad._version == snap[1]
    assert not loss.requires_grad
    # h = (1 − β2)·ĝ² with ĝ of the mean CE on y ~ softmax(logits) drawn as the authors draw it.
    torch.manual_seed(7)
    ref = official_gnb_gradients(full, x)
    beta2 = opt.param_groups[0]["betas"][1]
    for p in model.parameters():
        assert max_diff(opt.state[p]["hessian"], (1 - beta2) * ref[p] * ref[p]) <= 1e-15
    assert extra not in opt.state


def test_sophiag_gnb_helper_clips_like_clip_grad_norm():
    model = seeded_mlp(0)
    opt = SophiaG(model.parameters())
    x, _ = batch(0)
    torch.manual_seed(3)
    sophiag_gnb_update(model, x, opt, max_grad_norm=0.05)
    ref_model = seeded_mlp(0)
    torch.manual_seed(3)
    ref = official_gnb_gradients(ref_model, x)
    for p in ref_model.parameters():
        p.grad = ref[p]
    norm = torch.nn.utils.clip_grad_norm_(ref_model.parameters(), 0.05)
    assert norm > 0.05  # the clip acted
    beta2 = opt.param_groups[0]["betas"][1]
    expected = [(1 - beta2) * p.grad * p.grad for p in ref_model.parameters()]
    assert max_diff([opt.state[p]["hessian"] for p in model.parameters()], expected) <= 1e-15


def test_sophiag_foreach_equals_for_loop_with_hessian_updates():
    # The invariant suite never calls update_hessian; with it, h > 0 and the ratio path is live.
    results = []
    for foreach in (False, True):
        model = seeded_mlp(0)
        opt = SophiaG(model.parameters(), foreach=foreach, bs=16, **SOPHIA_KW)
        for k in range(10):
            backward(model, k)
            opt.step()
            if k % 2 == 1:
                torch.manual_seed(k)
                sophiag_gnb_update(model, batch(k)[0], opt)
        results.append(params_of(model) + [opt.state[p]["hessian"] for p in model.parameters()])
    assert max_diff(results[0], results[1]) <= 1e-12


def test_sophiag_complex_update_hessian_is_view_as_real():
    g = torch.Generator().manual_seed(3)
    c = torch.randn(4, 3, generator=g, dtype=torch.complex128).requires_grad_()
    r = torch.view_as_real(c.detach()).clone().requires_grad_()
    opt_c, opt_r = SophiaG([c], lr=1e-2, rho=1.0, bs=4), SophiaG([r], lr=1e-2, rho=1.0, bs=4)
    for _ in range(6):
        grad = torch.randn(4, 3, 2, generator=g, dtype=torch.float64)
        c.grad, r.grad = torch.view_as_complex(grad.clone()), grad.clone()
        opt_c.update_hessian()
        opt_r.update_hessian()
        opt_c.step()
        opt_r.step()
    assert max_diff(torch.view_as_real(c.detach()), r.detach()) <= 1e-12
    assert (torch.view_as_real(opt_c.state[c]["hessian"]) >= 0).all()


def test_sophiag_rejects_bad_settings():
    params = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match=r"bs.*\(0"):
        SophiaG(params, bs=0)
    with pytest.raises(ValueError, match="rho"):
        SophiaG(params, rho=-1.0)
    with pytest.raises(ValueError, match=r"betas\[1\]"):
        SophiaG(params, betas=(0.9, 1.0))
