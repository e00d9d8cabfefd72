"""AdaBelief and ACProp against their authors.

* AdaBelief against the authors' own package, ``adabelief-pytorch 0.2.1`` (a test dependency), over
  25 float64 steps on an MLP for every option that changes the equations (≤ 1e-10; in practice 0).
* ACProp against the authors' code (``juntang-zhuang/ACProp-Optimizer``, ``optimizers/ACProp.py``)
  restated here in plain tensor code, since no package ships it; plus the asynchronous property itself.
* The forms the authors' code does not have (``eps_in_state=False``, AGR in both modes) against their
  equations restated.
* The invariant suite of ``tests/test_invariants.py`` over the variants whose code paths differ.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import math

import pytest
import torch
from torch import nn

import optarena
from optarena.optim.acprop import ACProp
from optarena.optim.adabelief import AdaBelief

from .helpers import backward, max_diff, registry_configs, seeded_mlp

# AdaBelief's and ACProp's defaults and every variant their registry entries declare.
BELIEF_CONFIGS = [c for c in registry_configs() if c[1] in ("adabelief", "acprop")]

STEPS = 25
TOL = 1e-10
FROZEN_STEPS = (3, 4)  # the first layer's weight has no gradient on these steps (per-tensor step counts)


def official_adabelief(params, **kwargs):
    """adabelief-pytorch 0.2.1, with its banner and status prints silenced."""
    from adabelief_pytorch import AdaBelief as Official

    with contextlib.redirect_stdout(io.StringIO()):
        return Official(params, print_change_log=False, **kwargs)


def params_of(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def run_pair(make_ours, make_ref, steps: int = STEPS, transform_ref_grads=None):
    """Two identical MLPs on the same batches; the first weight is frozen on ``FROZEN_STEPS``."""
    ours_model, ref_model = seeded_mlp(0), seeded_mlp(0)
    ours, ref = make_ours(ours_model.parameters()), make_ref(ref_model.parameters())
    for k in range(steps):
        for model in (ours_model, ref_model):
            backward(model, k)
            if k in FROZEN_STEPS:
                model[0].weight.grad = None
        if transform_ref_grads is not None:
            for p in ref_model.parameters():
                if p.grad is not None:
                    p.grad = transform_ref_grads(p.grad)
        ours.step()
        ref.step()
    return params_of(ours_model), params_of(ref_model)


class EquationOracle:
    """A per-tensor optimizer in plain code: ``update(p, g, state, t)``, one step count per tensor."""

    def __init__(self, params, update):
        self.params = list(params)
        self.update = update
        self.state = [{} for _ in self.params]
        self.steps = [0] * len(self.params)

    @torch.no_grad()
    def step(self):
        for i, (p, s) in enumerate(zip(self.params, self.state)):
            if p.grad is None:
                continue
            self.steps[i] += 1
            self.update(p, p.grad.clone(), s, self.steps[i])


def agr(g: torch.Tensor) -> torch.Tensor:
    """The AGR paper's transform: α = |g| / Σ|g|, g − α⊙g."""
    return g - g.abs() / g.abs().sum() * g


def _raw(g):
    return g


def radam_rectification(beta2: float, t: int) -> tuple[float, float | None]:
    """RAdam's ρ_t and, when ρ_t ≥ 5 (the authors' threshold), r_t·(1−β1^t) — written as in the paper."""
    rho_inf = 2 / (1 - beta2) - 1
    rho = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
    if rho < 5:
        return rho, None
    return rho, math.sqrt((1 - beta2**t) * (rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))


# --- AdaBelief vs adabelief-pytorch 0.2.1 ------------------------------------------------------------


# The package's behaviour is one option away from ours: its rectification (ours follows the paper: none).
PACKAGE = {"rectify": True}


def test_adabelief_defaults_are_the_packages_but_the_rectification():
    from adabelief_pytorch import AdaBelief as Official

    theirs = inspect.signature(Official.__init__).parameters
    ours = inspect.signature(AdaBelief.__init__).parameters
    names = ("lr", "betas", "eps", "weight_decay", "amsgrad", "weight_decouple", "fixed_decay", "degenerated_to_sgd")
    for name in names:
        assert ours[name].default == theirs[name].default, name
    assert ours["eps"].default == 1e-16 and ours["weight_decouple"].default is True
    assert ours["eps_in_state"].default is True
    assert ours["rectify"].default is False and theirs["rectify"].default is True  # the paper's algorithm has none


def rosenbrock_distance(make, lr: float, steps: int = 2000) -> tuple[float, float]:
    """timm's optimizer check: Rosenbrock from (1.5, 1.5) by cyclic coordinate descent (each step sees the
    gradient of x or of y only); returns the distances to the minimum (1, 1) before and after."""
    p = torch.nn.Parameter(torch.tensor([1.5, 1.5], dtype=torch.float64))
    opt = make([p], lr)
    minimum = torch.ones(2, dtype=torch.float64)
    start = (p.detach() - minimum).norm().item()
    for k in range(steps):
        x, y = p.detach()
        grad = torch.stack((-400 * x * (y - x**2) - 2 * (1 - x), 200 * (y - x**2)))
        p.grad = grad * torch.tensor([0.0, 1.0] if k % 2 == 0 else [1.0, 0.0], dtype=torch.float64)
        opt.step()
    return start, (p.detach() - minimum).norm().item()


@pytest.mark.parametrize("lr", [1e-2, 5e-2])
def test_adabelief_by_the_paper_passes_the_rosenbrock_check_where_the_package_default_diverges(lr):
    start, end = rosenbrock_distance(lambda p, lr: AdaBelief(p, lr=lr), lr)
    assert end < start  # the paper's AdaBelief (no rectification) ends closer to the minimum
    _, package_end = rosenbrock_distance(lambda p, lr: AdaBelief(p, lr=lr, **PACKAGE), lr)
    assert package_end > 10 * start  # the package's rectified default runs away (why it is not our default)


ADABELIEF_CONFIGS = {
    "defaults": {},
    "defaults-decoupled_wd": {"weight_decay": 5e-2},
    "rectify_off": {"rectify": False, "weight_decay": 5e-2},
    "l2": {"weight_decouple": False, "weight_decay": 5e-3},
    "l2-rectify_off": {"weight_decouple": False, "weight_decay": 5e-3, "rectify": False},
    "fixed_decay": {"fixed_decay": True, "weight_decay": 1e-3},
    "amsgrad-rectify_off": {"amsgrad": True, "rectify": False},
    "amsgrad-rectify_on": {"amsgrad": True},
    "no_sgd_fallback": {"degenerated_to_sgd": False},
    "large_eps-rectify_off": {"eps": 1e-4, "rectify": False},  # the accumulated ε now shows in float64
    "large_eps-amsgrad": {"eps": 1e-4, "rectify": False, "amsgrad": True},
    "large_eps-rectify_on": {"eps": 1e-4},
    "betas": {"betas": (0.5, 0.9), "rectify": False},
    "betas-rectify_on": {"betas": (0.5, 0.9)},
}


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("config", list(ADABELIEF_CONFIGS))
def test_adabelief_matches_adabelief_pytorch(config, foreach):
    kw = dict(lr=1e-2, **ADABELIEF_CONFIGS[config])
    ours, ref = run_pair(
        lambda p: AdaBelief(p, foreach=foreach, **{**PACKAGE, **kw}), lambda p: official_adabelief(p, **kw)
    )
    assert max_diff(ours, ref) <= TOL


@pytest.mark.parametrize("foreach", [False, True])
def test_adabelief_groups_with_their_own_betas_match_the_package(foreach):
    # The package caches the rectification per group, keyed by step only; a group added later with
    # add_param_group shares the first group's cache (wrong step sizes). Its dict form is right.
    ours_model, ref_model = seeded_mlp(0), seeded_mlp(0)
    ours = AdaBelief(list(ours_model[0].parameters()), lr=1e-2, foreach=foreach, **PACKAGE)
    ours.add_param_group({"params": list(ours_model[2].parameters()), "betas": (0.5, 0.9)})
    ref = official_adabelief(
        [{"params": list(ref_model[0].parameters())}, {"params": list(ref_model[2].parameters()), "betas": (0.5, 0.9)}],
        lr=1e-2,
    )
    for k in range(STEPS):
        backward(ours_model, k)
        backward(ref_model, k)
        ours.step()
        ref.step()
    assert max_diff(params_of(ours_model), params_of(ref_model)) <= TOL


def test_adabelief_l2_leaves_the_gradient_alone_where_the_package_writes_it():
    p = torch.ones(3, dtype=torch.float64, requires_grad=True)
    q = torch.ones(3, dtype=torch.float64, requires_grad=True)
    p.grad, q.grad = torch.full((3,), 0.5, dtype=torch.float64), torch.full((3,), 0.5, dtype=torch.float64)
    AdaBelief([p], weight_decouple=False, weight_decay=0.1, **PACKAGE).step()
    official_adabelief([q], weight_decouple=False, weight_decay=0.1).step()
    assert torch.equal(p.grad, torch.full((3,), 0.5, dtype=torch.float64))
    assert torch.equal(q.grad, torch.full((3,), 0.6, dtype=torch.float64))  # 0.5 + 0.1·1, in place
    assert torch.equal(p, q)


# --- AdaBelief: ε in the state or not -----------------------------------------------------------------


@pytest.mark.parametrize("eps_in_state", [True, False])
def test_adabelief_eps_accumulates_into_the_state_only_by_default(eps_in_state):
    # Zero gradients: the residual is 0, so s_t = β2·s_{t−1} + ε = ε(1 − β2^t)/(1 − β2), or 0.
    beta2, eps = 0.9, 1e-3
    p = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = AdaBelief([p], betas=(0.9, beta2), eps=eps, eps_in_state=eps_in_state)
    for t in range(1, 11):
        p.grad = torch.zeros_like(p)
        opt.step()
        expected = eps * (1 - beta2**t) / (1 - beta2) if eps_in_state else 0.0
        assert torch.allclose(opt.state[p]["exp_avg_var"], torch.full_like(p, expected), rtol=1e-14, atol=0)
    assert torch.equal(p, torch.zeros_like(p))  # a zero gradient moves nothing, accumulated ε or not


def adabelief_oracle(
    lr,
    b1,
    b2,
    eps,
    wd=0.0,
    *,
    amsgrad=False,
    rectify=True,
    degenerated_to_sgd=True,
    eps_in_state=True,
    m_transform=_raw,
):
    """AdaBelief restated (decoupled decay): m from ``m_transform(g)``, s from the raw residual g − m."""

    def update(p, g, s, t):
        if not s:
            s["m"], s["s"], s["max"] = torch.zeros_like(p), torch.zeros_like(p), torch.zeros_like(p)
        p.mul_(1 - lr * wd)
        s["m"] = b1 * s["m"] + (1 - b1) * m_transform(g)
        s["s"] = b2 * s["s"] + (1 - b2) * (g - s["m"]) ** 2
        if eps_in_state:
            s["s"] = s["s"] + eps
        shifted = s["s"] if eps_in_state else s["s"] + eps  # s + ε, as the denominator sees it
        s["max"] = torch.maximum(s["max"], s["s"])
        source = (s["max"] if eps_in_state else s["max"] + eps) if amsgrad else shifted
        if not rectify:
            p.sub_(lr / (1 - b1**t) * s["m"] / (torch.sqrt(source / (1 - b2**t)) + eps))
            return
        _, r = radam_rectification(b2, t)
        if r is not None:
            p.sub_(lr * r / (1 - b1**t) * s["m"] / (torch.sqrt(shifted) + eps))
        elif degenerated_to_sgd:
            p.sub_(lr / (1 - b1**t) * s["m"])

    return update


NON_ACCUMULATING = {
    "rectify_on": {"rectify": True},
    "rectify_off": {"rectify": False},
    "amsgrad": {"rectify": False, "amsgrad": True},
}


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("config", list(NON_ACCUMULATING))
def test_adabelief_non_accumulating_form_matches_its_equations(config, foreach):
    kw = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-4, weight_decay=1e-2, **NON_ACCUMULATING[config])
    ours, ref = run_pair(
        lambda p: AdaBelief(p, eps_in_state=False, foreach=foreach, **kw),
        lambda p: EquationOracle(
            p, adabelief_oracle(1e-2, 0.9, 0.999, 1e-4, 1e-2, eps_in_state=False, **NON_ACCUMULATING[config])
        ),
    )
    assert max_diff(ours, ref) <= TOL


def test_adabelief_oracle_is_the_package():
    """The restated equations (used for the forms the package lacks) equal the package itself."""
    kw = dict(lr=1e-2, eps=1e-4, weight_decay=1e-2)
    ours, ref = run_pair(
        lambda p: EquationOracle(p, adabelief_oracle(1e-2, 0.9, 0.999, 1e-4, 1e-2)),
        lambda p: official_adabelief(p, **kw),
    )
    assert max_diff(ours, ref) <= TOL


# --- AdaBelief with AGR ------------------------------------------------------------------------------


@pytest.mark.parametrize("foreach", [False, True])
def test_adabelief_agr_code_mode_is_the_package_fed_agr_gradients(foreach):
    kw = dict(lr=1e-2, weight_decay=1e-2)
    ours, ref = run_pair(
        lambda p: AdaBelief(p, agr="code", agr_scope="all", foreach=foreach, **PACKAGE, **kw),
        lambda p: official_adabelief(p, **kw),
        transform_ref_grads=agr,
    )
    assert max_diff(ours, ref) <= TOL


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("rectify", [True, False])
def test_adabelief_agr_paper_mode_feeds_m_only(rectify, foreach):
    # Paper mode: ψ(g) feeds m; the second moment's residual is the raw g minus that m.
    ours, ref = run_pair(
        lambda p: AdaBelief(
            p, lr=1e-2, weight_decay=1e-2, rectify=rectify, agr="paper", agr_scope="all", foreach=foreach
        ),
        lambda p: EquationOracle(p, adabelief_oracle(1e-2, 0.9, 0.999, 1e-16, 1e-2, rectify=rectify, m_transform=agr)),
    )
    assert max_diff(ours, ref) <= TOL


# --- ACProp vs the authors' code, restated -------------------------------------------------------------


def acprop_oracle(
    lr,
    b1,
    b2,
    eps,
    wd=0.0,
    *,
    amsgrad=False,
    weight_decouple=True,
    fixed_decay=False,
    rectify=True,
    degenerated_to_sgd=True,
    momentum_update=False,
    eps_in_state=True,
    m_transform=_raw,
):
    """``optimizers/ACProp.py`` of juntang-zhuang/ACProp-Optimizer, restated out of place.

    The step at t divides by s_{t−1}; the residual (g − m_t)² enters s only after the step.
    ``m_transform`` (AGR's paper mode) feeds m and the numerator; the residual uses the raw g.
    """

    def update(p, g, s, t):
        if not s:
            s["m"], s["s"], s["max"] = torch.zeros_like(p), torch.zeros_like(p), torch.zeros_like(p)
        gm = m_transform(g)
        if weight_decouple:
            p.mul_(1 - (wd if fixed_decay else lr * wd))
        else:
            g, gm = g + wd * p, gm + wd * p
        s["m"] = b1 * s["m"] + (1 - b1) * gm
        previous = s["s"]  # s_{t−1}: holds gradients up to step t − 1 only
        shifted = previous + eps
        if eps_in_state and (amsgrad or t > 1):  # the authors add ε at t = 1 only with amsgrad
            s["s"] = shifted
        if amsgrad:
            s["max"] = torch.maximum(s["max"], s["s"])
        denom_source = (s["max"] if eps_in_state else s["max"] + eps) if amsgrad else shifted
        numerator = s["m"] / (1 - b1**t) if momentum_update else gm  # m̂_t or g_t
        if t == 1:
            p.sub_(lr * s["m"] / (1 - b1))  # = lr·g: nothing to divide by yet
        elif not rectify:
            p.sub_(lr * numerator / (torch.sqrt(denom_source / (1 - b2 ** (t - 1))) + eps))
        else:
            _, r = radam_rectification(b2, t)
            if r is not None:
                p.sub_(lr * r * numerator / (torch.sqrt(shifted) + eps))
            elif degenerated_to_sgd:
                p.sub_(lr / (1 - b1**t) * s["m"])
        s["s"] = b2 * s["s"] + (1 - b2) * (g - s["m"]) ** 2

    return update


def test_acprop_defaults_are_the_authors_class():
    # ACProp.__init__ of juntang-zhuang/ACProp-Optimizer @ a880843 (its unused `bias_correction` left out).
    authors = dict(
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-16,
        weight_decay=0,
        amsgrad=False,
        weight_decouple=True,
        fixed_decay=False,
        rectify=True,
        degenerated_to_sgd=True,
        momentum_update=False,
    )
    ours = inspect.signature(ACProp.__init__).parameters
    for name, value in authors.items():
        assert ours[name].default == value, name
    assert ours["eps_in_state"].default is True


ACPROP_CONFIGS = {
    "defaults": {},
    "defaults-decoupled_wd": {"weight_decay": 5e-2},
    # what the authors' main.py passes for their CIFAR experiments
    "experiments": {"rectify": False, "weight_decouple": False, "eps": 1e-8, "weight_decay": 5e-4},
    "rectify_off": {"rectify": False},
    "fixed_decay": {"fixed_decay": True, "weight_decay": 1e-3},
    "amsgrad-rectify_off": {"amsgrad": True, "rectify": False},
    "amsgrad-rectify_on": {"amsgrad": True},
    "momentum_update": {"momentum_update": True},
    "momentum_update-rectify_off": {"momentum_update": True, "rectify": False},
    "no_sgd_fallback": {"degenerated_to_sgd": False},
    "large_eps-rectify_off": {"eps": 1e-4, "rectify": False},
    "large_eps-amsgrad": {"eps": 1e-4, "rectify": False, "amsgrad": True},
    "eps_not_in_state": {"eps": 1e-4, "rectify": False, "eps_in_state": False},
    "eps_not_in_state-amsgrad": {"eps": 1e-4, "amsgrad": True, "rectify": False, "eps_in_state": False},
    "eps_not_in_state-rectify_on": {"eps": 1e-4, "eps_in_state": False},
    "betas-l2": {"betas": (0.5, 0.9), "weight_decouple": False, "weight_decay": 5e-3},
}


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("config", list(ACPROP_CONFIGS))
def test_acprop_matches_the_authors_equations(config, foreach):
    flags = dict(ACPROP_CONFIGS[config])
    lr, betas = 1e-2, flags.pop("betas", (0.9, 0.999))
    eps, wd = flags.pop("eps", 1e-16), flags.pop("weight_decay", 0.0)
    ours, ref = run_pair(
        lambda p: ACProp(p, lr=lr, betas=betas, eps=eps, weight_decay=wd, foreach=foreach, **flags),
        lambda p: EquationOracle(p, acprop_oracle(lr, *betas, eps, wd, **flags)),
    )
    assert max_diff(ours, ref) <= TOL


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("mode", ["code", "paper"])
def test_acprop_agr_modes(mode, foreach):
    # code: ψ(g) everywhere; paper: ψ(g) feeds m and the numerator, the residual uses the raw g.
    ours_kw = dict(lr=1e-2, rectify=False, weight_decay=1e-2, agr=mode, agr_scope="all", foreach=foreach)
    if mode == "code":
        oracle = acprop_oracle(1e-2, 0.9, 0.999, 1e-16, 1e-2, rectify=False)
        ours, ref = run_pair(
            lambda p: ACProp(p, **ours_kw), lambda p: EquationOracle(p, oracle), transform_ref_grads=agr
        )
    else:
        oracle = acprop_oracle(1e-2, 0.9, 0.999, 1e-16, 1e-2, rectify=False, m_transform=agr)
        ours, ref = run_pair(lambda p: ACProp(p, **ours_kw), lambda p: EquationOracle(p, oracle))
    assert max_diff(ours, ref) <= TOL


# --- ACProp: the asynchronous update itself --------------------------------------------------------------


def _tensor(seed: int, shape=(6, 5)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "kw",
    [{}, {"rectify": False}, {"amsgrad": True}, {"momentum_update": True}, {"eps_in_state": False}, {"eps": 1e-3}],
    ids=["defaults", "rectify_off", "amsgrad", "momentum_update", "eps_not_in_state", "large_eps"],
)
def test_acprop_first_step_is_sgd(kw, foreach):
    # s_0 = 0 carries no information, so the authors' first step is θ − lr·m_1/(1 − β1) = θ − lr·g_1.
    p = _tensor(0).requires_grad_()
    start = p.detach().clone()
    g = _tensor(1) * 10
    p.grad = g
    ACProp([p], lr=1e-2, foreach=foreach, **kw).step()
    assert torch.allclose(p.detach(), start - 1e-2 * g, rtol=1e-14, atol=1e-16)


def _update_for(opt, grad: torch.Tensor) -> torch.Tensor:
    """The parameter change one more step with ``grad`` would make (on a copy of ``opt``)."""
    clone = copy.deepcopy(opt)
    (q,) = clone.param_groups[0]["params"]
    before = q.detach().clone()
    q.grad = grad.clone()
    clone.step()
    return q.detach() - before


def _warmed_up(cls, steps: int = 10, **kw):
    p = _tensor(0).requires_grad_()
    opt = cls([p], lr=1e-2, **kw)
    for k in range(steps):
        p.grad = _tensor(100 + k) * (1 + k % 3)
        opt.step()
    return opt, p


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "kw",
    [{}, {"rectify": False}, {"amsgrad": True, "rectify": False}, {"eps_in_state": False}, {"eps": 1e-3}],
    ids=["rectified", "rectify_off", "amsgrad", "eps_not_in_state", "large_eps"],
)
def test_acprop_step_t_does_not_divide_by_g_t(kw, foreach):
    # Numerator g_t over a denominator built from steps < t: the update is linear in g_t. (Updates are
    # ~1e-4..1e-2 and read as differences of parameters ~1, hence an absolute tolerance of a few ulp of 1.)
    opt, _ = _warmed_up(ACProp, foreach=foreach, **kw)  # t = 11: past the rectification threshold
    g = _tensor(7)
    base = _update_for(opt, g)
    assert base.abs().max() > 1e-4
    for c in (3.0, -0.25):
        assert max_diff(_update_for(opt, c * g), c * base) <= 1e-14


def test_adabelief_is_synchronous_by_contrast():
    opt, _ = _warmed_up(AdaBelief, rectify=False)
    g = _tensor(7)
    assert max_diff(_update_for(opt, 3.0 * g), 3.0 * _update_for(opt, g)) > 1e-6


@pytest.mark.parametrize("eps_in_state", [True, False])
def test_acprop_denominator_is_last_steps_state(eps_in_state):
    # Read s_{t−1} from the state before step t, predict the update, then take the step.
    lr, beta2, eps = 1e-2, 0.999, 1e-4
    opt, p = _warmed_up(ACProp, rectify=False, eps=eps, eps_in_state=eps_in_state)
    t = opt.state[p]["step"].item() + 1
    s_prev = opt.state[p]["exp_avg_var"].clone()
    g = _tensor(7)
    expected = -lr * g / (torch.sqrt((s_prev + eps) / (1 - beta2 ** (t - 1))) + eps)
    assert max_diff(_update_for(opt, g), expected) <= 1e-14


# --- the invariant suite over the variants whose code paths differ ------------------------------------


def test_amsgrad_buffer_only_where_asked_and_created_late():
    a = torch.ones(3, dtype=torch.float64, requires_grad=True)
    b = torch.ones(3, dtype=torch.float64, requires_grad=True)
    for cls in (AdaBelief, ACProp):
        opt = cls([{"params": [a]}, {"params": [b], "amsgrad": True}])
        a.grad, b.grad = torch.ones_like(a), torch.ones_like(b)
        opt.step()
        assert set(opt.state[a]) == {"step", "exp_avg", "exp_avg_var"}
        assert set(opt.state[b]) == {"step", "exp_avg", "exp_avg_var", "max_exp_avg_var"}
        opt.param_groups[0]["amsgrad"] = True  # switched on later: the buffer starts at zero then
        opt.step()
        assert "max_exp_avg_var" in opt.state[a]


@pytest.mark.parametrize("cls", [AdaBelief, ACProp])
def test_flags_must_be_bools(cls):
    p = torch.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="Invalid rectify"):
        cls([p], rectify=1)
    with pytest.raises(ValueError, match="Invalid eps_in_state"):
        cls([p], eps_in_state="no")
    with pytest.raises(ValueError, match=r"Invalid betas\[1\]"):
        cls([p], betas=(0.9, 1.0))


@pytest.mark.parametrize(
    "cid,name,kwargs",
    BELIEF_CONFIGS,
    ids=[c[0] for c in BELIEF_CONFIGS],
)
def test_multi_tensor_kernel_takes_tensor_hyperparameters_on_variants(cid, name, kwargs):
    # As tests/test_kernels.py, with the amsgrad buffer and a first step (ACProp's SGD step) included.
    opt = optarena.create_optimizer([torch.zeros(1, requires_grad=True)], name, lr=3e-2, **kwargs)
    hyper = opt._kernel_hyperparameters(opt.param_groups[0])
    as_tensor = {k: torch.tensor(v, dtype=torch.float64) if isinstance(v, float) else v for k, v in hyper.items()}
    results = []
    for hp, steps in ((hyper, [1.0, 3.0, 7.0]), (as_tensor, [torch.tensor(t, dtype=torch.float64) for t in (1, 3, 7)])):
        g = torch.Generator().manual_seed(0)
        params = [torch.randn(s, generator=g, dtype=torch.float64) for s in ((4, 3), (5,), (1,))]
        grads = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]
        states = [[torch.rand(p.shape, generator=g, dtype=torch.float64) for p in params] for _ in range(3)]
        if not hyper["amsgrad"]:
            states[2] = None
        for _ in range(3):
            type(opt).multi_tensor_kernel(params, grads, grads, *states, steps=steps, **hp)
        results.append(params + [t for s in states if s is not None for t in s])
    assert max_diff(results[0], results[1]) <= 1e-12
