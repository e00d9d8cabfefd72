"""Adan and Lion against independent implementations, over >= 20 float64 steps on the seeded MLP.

References: kozistr ``pytorch_optimizer`` 4.1.0 (``Adan``, ``Lion``), and the authors' code restated
here in plain tensor code (``sail-sg/Adan`` ``adan.py``, ``hjiang24/AGR-method`` ``Adan_AGR.py``,
``google/automl`` ``lion_pytorch.py``). No optarena kernel is called by a reference.
"""

from __future__ import annotations

import math

import pytest
import pytorch_optimizer
import torch
from pytorch_optimizer.optimizer import adan as kozistr_adan

import optarena
from optarena.optim.adan import Adan
from optarena.optim.lion import Lion

from .helpers import backward, max_diff, seeded_mlp

STEPS = 25
TOL = 1e-10


def params_of(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def agr(g: torch.Tensor) -> torch.Tensor:
    """The AGR paper's transform: α = |g| / Σ|g| over the tensor, g' = g − α⊙g."""
    alpha = g.abs() / g.abs().sum()
    return g - alpha * g


def raw(g: torch.Tensor) -> torch.Tensor:
    return g


def run_models(make_ours, make_ref, *, steps=STEPS, ref_grad=None, grad_mask=None, after_step=None):
    """Train two identical MLPs on the same batches. ``ref_grad`` transforms the reference's
    gradients (e.g. AGR); ``grad_mask(k)`` names parameter indices whose grad is None at step k."""
    ours_model, ref_model = seeded_mlp(0), seeded_mlp(0)
    ours, ref = make_ours(ours_model), make_ref(ref_model)
    for k in range(steps):
        backward(ours_model, k)
        backward(ref_model, k)
        skip = grad_mask(k) if grad_mask else ()
        for i, (p, q) in enumerate(zip(ours_model.parameters(), ref_model.parameters())):
            if i in skip:
                p.grad = q.grad = None
            elif ref_grad is not None:
                q.grad = ref_grad(q.grad)
        ours.step()
        ref.step()
        if after_step is not None:
            after_step(k, ours, ref)
    return params_of(ours_model), params_of(ref_model)


# --- Adan: references -----------------------------------------------------------------------------


class OfficialAdanRestated:
    """``sail-sg/Adan`` ``adan.py`` (and ``Adan_AGR.py`` with a transform) restated in plain code.

    One step counter per group; the clip factor ``min(max/(‖g‖ + ε), 1)`` from the raw gradients of
    every group, ε read from the last group; ``m_transform`` / ``v_transform`` say what m and the
    rest (the difference EMA, n, the previous gradient) see — AGR'd or raw — before the clip factor
    multiplies them; the previous gradient is (re)initialised on a group's step 1.
    """

    def __init__(self, groups, *, max_grad_norm=0.0, m_transform=raw, v_transform=raw):
        self.groups = [dict(g, params=list(g["params"]), step=0) for g in groups]
        self.max_grad_norm = max_grad_norm
        self.m_transform, self.v_transform = m_transform, v_transform
        self.state: dict[torch.Tensor, dict] = {}

    @torch.no_grad()
    def step(self):
        clip = 1.0
        if self.max_grad_norm > 0:
            sq = sum((p.grad**2).sum() for g in self.groups for p in g["params"] if p.grad is not None)
            clip = min(self.max_grad_norm / (math.sqrt(sq) + self.groups[-1]["eps"]), 1.0)
        for group in self.groups:
            group["step"] += 1
            t = group["step"]
            b1, b2, b3 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = self.v_transform(p.grad) * clip
                gm = self.m_transform(p.grad) * clip
                s = self.state.setdefault(p, {})
                if not s:
                    s["m"], s["v"], s["n"] = (torch.zeros_like(p) for _ in range(3))
                if "prev" not in s or t == 1:
                    s["prev"] = g.clone()
                d = g - s["prev"]
                s["m"] = b1 * s["m"] + (1 - b1) * gm
                s["v"] = b2 * s["v"] + (1 - b2) * d
                s["n"] = b3 * s["n"] + (1 - b3) * (g + b2 * d) ** 2
                denom = torch.sqrt(s["n"]) / math.sqrt(1 - b3**t) + eps
                u = lr / (1 - b1**t) * s["m"] / denom + lr * b2 / (1 - b2**t) * s["v"] / denom
                if group["no_prox"]:
                    p.copy_(p * (1 - lr * wd) - u)
                else:
                    p.copy_((p - u) / (1 + lr * wd))
                s["prev"] = g.clone()

    def restart_opt(self):
        for group in self.groups:
            group["step"] = 0
            for p in group["params"]:
                if p in self.state:
                    for key in ("m", "v", "n"):
                        self.state[p][key] = torch.zeros_like(p)


def official_groups(model, **hyper):
    base = dict(lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0, no_prox=False)
    return [dict(base, params=model.parameters(), **hyper)]


def _float64_global_gradient_norm(param_groups, device=None, **_):
    """kozistr's squared global norm, summed in float64 (its own casts the norms to float32)."""
    squares = [(p.grad**2).sum() for g in param_groups for p in g["params"] if p.grad is not None]
    return torch.stack(squares).sum().reshape(1)


# --- Adan: parity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("no_prox,wd", [(False, 0.0), (False, 0.05), (True, 0.05)])
def test_adan_matches_kozistr(foreach, no_prox, wd):
    # weight_decouple=False is the proximal form (no_prox=False); True is no_prox=True.
    kw = dict(lr=1e-2, betas=(0.98, 0.92, 0.99), weight_decay=wd)
    ours, ref = run_models(
        lambda m: Adan(m.parameters(), eps=1e-8, no_prox=no_prox, foreach=foreach, **kw),
        lambda m: pytorch_optimizer.Adan(m.parameters(), eps=1e-8, weight_decouple=no_prox, foreach=False, **kw),
    )
    assert max_diff(ours, ref) <= TOL


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("no_prox", [False, True])
def test_adan_with_max_grad_norm_matches_kozistr(monkeypatch, foreach, no_prox):
    # kozistr sums the squared norms in float32 (a ~1e-9 drift here); ours sums in float64. With its
    # reduction done in float64, the rest of its clip (ε, clamp, previous-gradient init) must agree.
    monkeypatch.setattr(kozistr_adan, "get_global_gradient_norm", _float64_global_gradient_norm)
    clipped = []

    def after(k, ours, ref):
        clipped.append(ours._clip_factor < 1.0)

    kw = dict(lr=1e-2, betas=(0.9, 0.9, 0.999), weight_decay=0.02, max_grad_norm=0.3)
    ours, ref = run_models(
        lambda m: Adan(m.parameters(), eps=1e-8, no_prox=no_prox, foreach=foreach, **kw),
        lambda m: pytorch_optimizer.Adan(m.parameters(), eps=1e-8, weight_decouple=no_prox, foreach=False, **kw),
        after_step=after,
    )
    assert all(clipped)  # the clip is active on every step, so the test exercises it
    assert max_diff(ours, ref) <= TOL


@pytest.mark.parametrize("foreach", [False, True])
def test_adan_matches_official_restated_with_groups_clip_and_restart(foreach):
    # Two groups with their own lr, eps and decay: the clip reads the *last* group's ε (0.3 here, large
    # enough to matter), and restart() after step 12 zeroes m, v, n and the step (restart_opt).
    def groups(model):
        first, *rest = model.parameters()
        return [
            {"params": [first], "lr": 2e-2, "eps": 1e-8, "weight_decay": 0.05},
            {"params": rest, "lr": 5e-3, "eps": 0.3, "weight_decay": 0.0, "no_prox": True},
        ]

    def oracle_groups(model):
        base = dict(betas=(0.98, 0.92, 0.99), no_prox=False)
        return [dict(base, **g) for g in groups(model)]

    def after(k, ours, ref):
        if k == 11:
            ours.restart()
            ref.restart_opt()

    ours, ref = run_models(
        lambda m: Adan(groups(m), max_grad_norm=0.2, foreach=foreach),
        lambda m: OfficialAdanRestated(oracle_groups(m), max_grad_norm=0.2),
        after_step=after,
    )
    assert max_diff(ours, ref) <= TOL


def test_adan_first_difference_is_zero_and_restart_resets_it():
    model = seeded_mlp(0)
    opt = Adan(model.parameters(), lr=1e-2)
    backward(model, 0)
    opt.step()
    for p in model.parameters():
        state = opt.state[p]
        assert torch.equal(state["exp_avg_diff"], torch.zeros_like(p))  # d = 0 on step 1
        assert torch.equal(state["prev_grad"], p.grad)
    backward(model, 1)
    opt.step()
    assert all(opt.state[p]["exp_avg_diff"].abs().sum() > 0 for p in model.parameters())
    opt.restart_opt()  # the authors' name for restart()
    for p in model.parameters():
        state = opt.state[p]
        assert state["step"].item() == 0
        for key in ("exp_avg", "exp_avg_diff", "exp_avg_sq"):
            assert torch.equal(state[key], torch.zeros_like(p))
    backward(model, 2)
    opt.step()
    assert all(torch.equal(opt.state[p]["exp_avg_diff"], torch.zeros_like(p)) for p in model.parameters())
    assert all(opt.state[p]["step"].item() == 1 for p in model.parameters())


def test_adan_counts_steps_per_parameter():
    # The last bias gets no gradient for 6 steps. Ours counts its steps from its first gradient
    # (bias corrections as for a fresh optimizer); the authors' per-group counter would not.
    late = 3

    class PerParameterKozistr:
        """One kozistr Adan per parameter, each created at that parameter's first gradient."""

        def __init__(self, model):
            self.params, self.opts = list(model.parameters()), {}

        def step(self):
            for i, p in enumerate(self.params):
                if p.grad is not None:
                    self.opts.setdefault(i, pytorch_optimizer.Adan([p], lr=1e-2, foreach=False)).step()

    ours, ref = run_models(
        lambda m: Adan(m.parameters(), lr=1e-2),
        PerParameterKozistr,
        grad_mask=lambda k: (late,) if k < 6 else (),
    )
    assert max_diff(ours, ref) <= TOL


# --- Adan + AGR --------------------------------------------------------------------------------


@pytest.mark.parametrize("foreach", [False, True])
def test_adan_agr_code_mode_is_kozistr_adan_fed_agr_gradients(foreach):
    ours, ref = run_models(
        lambda m: optarena.create_optimizer(
            m.parameters(), "adan_agr", lr=1e-2, weight_decay=0.02, agr_scope="all", foreach=foreach
        ),
        lambda m: pytorch_optimizer.Adan(m.parameters(), lr=1e-2, weight_decay=0.02, foreach=False),
        ref_grad=agr,
    )
    assert max_diff(ours, ref) <= TOL


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("mode,m_transform,v_transform", [("code", agr, agr), ("paper", agr, raw)])
def test_adan_agr_with_clipping_matches_the_authors_adan_agr(foreach, mode, m_transform, v_transform):
    # Adan_AGR.py: the clip factor from the raw gradients, then AGR, then the factor multiplies the
    # AGR'd gradient. 'paper': m sees AGR(g); the difference EMA, n and the previous gradient see g.
    ours, ref = run_models(
        lambda m: create_adan_agr(m, mode, foreach),
        lambda m: OfficialAdanRestated(
            official_groups(m, lr=1e-2, weight_decay=0.02),
            max_grad_norm=0.3,
            m_transform=m_transform,
            v_transform=v_transform,
        ),
    )
    assert max_diff(ours, ref) <= TOL


def create_adan_agr(model, mode, foreach):
    return optarena.create_optimizer(
        model.parameters(),
        "adan_agr",
        agr=mode,
        agr_scope="all",
        lr=1e-2,
        weight_decay=0.02,
        max_grad_norm=0.3,
        foreach=foreach,
    )


def test_adan_agr_paper_and_code_modes_differ():
    # The modes must be distinguishable, or the test above could not tell them apart.
    code, paper = run_models(lambda m: create_adan_agr(m, "code", True), lambda m: create_adan_agr(m, "paper", True))
    assert max_diff(code, paper) > 1e-6


def test_adan_agr_registry_preset():
    info = optarena.get_optimizer_info("adan_agr")
    assert info.cls is Adan and info.defaults == {"agr": "code"} and info.supports_agr
    opt = optarena.create_optimizer(seeded_mlp(0), "adan_agr")
    assert opt.param_groups[0]["agr"] == "code" and opt.param_groups[0]["betas"] == (0.98, 0.92, 0.99)
    assert optarena.create_optimizer(seeded_mlp(0), "adan").param_groups[0]["agr"] is None


# --- Adan: validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"betas": (0.9, 0.99)}, "betas"),
        ({"betas": (0.98, 0.92, 1.0)}, r"betas\[2\]"),
        ({"max_grad_norm": -1.0}, "max_grad_norm"),
        ({"no_prox": "yes"}, "no_prox"),
        ({"eps": -1e-8}, "eps"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"lr": -1.0}, "lr"),
    ],
)
def test_adan_rejects_bad_hyperparameters(kwargs, name):
    with pytest.raises(ValueError, match=rf"Invalid {name}"):
        Adan([torch.zeros(2, requires_grad=True)], **kwargs)


def test_adan_max_grad_norm_is_optimizer_wide():
    opt = Adan([torch.zeros(2, requires_grad=True)], max_grad_norm=1.0)
    with pytest.raises(ValueError, match=r"Invalid max_grad_norm.*optimizer-wide"):
        opt.add_param_group({"params": [torch.zeros(3, requires_grad=True)], "max_grad_norm": 2.0})


def test_adan_clip_ignores_maximize_and_never_writes_grads():
    p = torch.tensor([3.0, -4.0], dtype=torch.float64, requires_grad=True)  # ‖g‖ = 5
    opt = Adan([p], max_grad_norm=1.0, eps=0.0, maximize=True)
    p.grad = torch.tensor([3.0, -4.0], dtype=torch.float64)
    grad = p.grad.clone()
    opt.step()
    assert opt._clip_factor == pytest.approx(0.2, rel=1e-15)
    assert torch.equal(p.grad, grad)
    assert torch.equal(opt.state[p]["prev_grad"], -0.2 * grad)  # maximize negates after the clip


# --- Lion -----------------------------------------------------------------------------------------


def lion_restated(lr, beta1, beta2, wd, transform=raw):
    """google/automl lion_pytorch.py restated: decay, sign of the interpolation, then the momentum."""

    class Oracle:
        def __init__(self, model):
            self.params, self.m = list(model.parameters()), {}

        @torch.no_grad()
        def step(self):
            for p in self.params:
                g = transform(p.grad)
                m = self.m.setdefault(p, torch.zeros_like(p))
                p.mul_(1 - lr * wd)
                c = m * beta1 + g * (1 - beta1)
                p.sub_(lr * torch.sign(c))
                self.m[p] = beta2 * m + (1 - beta2) * g

    return Oracle


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_lion_matches_kozistr(foreach, wd):
    kw = dict(lr=1e-3, betas=(0.9, 0.99), weight_decay=wd)
    ours, ref = run_models(
        lambda m: Lion(m.parameters(), foreach=foreach, **kw),
        # weight_decouple=True, fixed_decay=False: the decoupled, lr-scaled decay of plain Lion.
        lambda m: pytorch_optimizer.Lion(m.parameters(), weight_decouple=True, fixed_decay=False, foreach=False, **kw),
    )
    assert max_diff(ours, ref) <= TOL


@pytest.mark.parametrize("foreach", [False, True])
def test_lion_matches_the_authors_code_restated(foreach):
    ours, ref = run_models(
        lambda m: Lion(m.parameters(), lr=3e-3, betas=(0.95, 0.98), weight_decay=0.3, foreach=foreach),
        lion_restated(3e-3, 0.95, 0.98, 0.3),
    )
    assert max_diff(ours, ref) <= TOL


@pytest.mark.parametrize("foreach", [False, True])
def test_lion_agr_is_kozistr_lion_fed_agr_gradients_in_both_modes(foreach):
    runs = {}
    for mode in ("code", "paper"):
        runs[mode] = run_models(
            lambda m, mode=mode: Lion(
                m.parameters(), lr=1e-3, weight_decay=0.1, agr=mode, agr_scope="all", foreach=foreach
            ),
            lambda m: pytorch_optimizer.Lion(m.parameters(), lr=1e-3, weight_decay=0.1, foreach=False),
            ref_grad=agr,
        )
        assert max_diff(*runs[mode]) <= TOL
    # Both c and m are first moments, so 'paper' is 'code' exactly.
    assert max_diff(runs["code"][0], runs["paper"][0]) == 0.0


def test_lion_zero_gradient_moves_nothing_and_momentum_alone_moves_by_lr():
    lr = 1e-2
    p = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    opt = Lion([p], lr=lr)
    p.grad = torch.zeros(3, dtype=torch.float64)
    opt.step()
    assert torch.equal(p.detach(), torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))  # sign(0) = 0
    # A gradient with an exact zero: that coordinate keeps c = 0 and does not move.
    p.grad = torch.tensor([0.5, 0.0, -1e-12], dtype=torch.float64)
    opt.step()
    expected = torch.tensor([1.0 - lr, -2.0, 3.0 + lr], dtype=torch.float64)
    assert torch.equal(p.detach(), expected)
    # Then g = 0 with m ≠ 0: c = β1·m, so each coordinate moves by lr·sign(m) (0 where m = 0).
    before = p.detach().clone()
    sign_m = torch.sign(opt.state[p]["exp_avg"])
    p.grad = torch.zeros(3, dtype=torch.float64)
    opt.step()
    assert torch.equal(p.detach(), before.add(sign_m, alpha=-lr))


@pytest.mark.parametrize(
    "kwargs,name",
    [({"lr": -1e-4}, "lr"), ({"betas": (0.9, 1.0)}, r"betas\[1\]"), ({"weight_decay": -0.1}, "weight_decay")],
)
def test_lion_rejects_bad_hyperparameters(kwargs, name):
    with pytest.raises(ValueError, match=rf"Invalid {name}"):
        Lion([torch.zeros(2, requires_grad=True)], **kwargs)


def test_lion_keeps_one_moment():
    model = seeded_mlp(0)
    opt = Lion(model.parameters())
    backward(model, 0)
    opt.step()
    assert all(set(s) == {"step", "exp_avg"} for s in opt.state.values())


@pytest.mark.parametrize("make", [lambda p: Adan(p), lambda p: Adan(p, max_grad_norm=1.0), lambda p: Lion(p)])
def test_sparse_gradients_get_a_clear_error(make):
    # With max_grad_norm the refusal comes from the global-norm pass, before any group is touched.
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = make(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match=f"{type(opt).__name__} does not support sparse gradients"):
        opt.step()
    assert emb.weight.grad.is_sparse
