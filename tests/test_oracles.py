"""Each algorithm against an independent oracle, over >= 20 float64 steps on a seeded MLP.

Oracles: torch's own optimizers where an exact reduction exists, and the papers' / authors'
equations restated here in plain tensor code (no optarena kernel is called by an oracle).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import optarena
from optarena.optim import Adaburst, AdamNX, AdamW, AdaX

from .helpers import backward, max_diff, seeded_mlp

STEPS = 25
TOL = 1e-10


def params_of(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def run_pair(make_ours, make_oracle, steps: int = STEPS, after_step=None):
    """Train two identical MLPs, one per optimizer, on the same batches; return both params."""
    ours_model, oracle_model = seeded_mlp(0), seeded_mlp(0)
    ours, oracle = make_ours(ours_model.parameters()), make_oracle(oracle_model.parameters())
    for k in range(steps):
        backward(ours_model, k)
        backward(oracle_model, k)
        ours.step()
        oracle.step()
        if after_step is not None:
            after_step(k, ours, oracle)
    return params_of(ours_model), params_of(oracle_model)


class EquationOracle:
    """A per-tensor optimizer written from the paper: ``update(p, g, state, t)`` in plain code."""

    def __init__(self, params, update):
        self.params = list(params)
        self.update = update
        self.state = [dict() for _ in self.params]
        self.t = 0

    @torch.no_grad()
    def step(self):
        self.t += 1
        for p, s in zip(self.params, self.state):
            self.update(p, p.grad.clone(), s, self.t)


def agr(g: torch.Tensor, scope: str = "weights") -> torch.Tensor:
    """The AGR paper's transform, α = |g| / Σ|g|, g − α⊙g, on the weights of linear and convolutional layers
    (tensors of two or more dimensions, the paper's §5.1) or, with ``scope='all'``, on every tensor."""
    if scope == "weights" and g.dim() < 2:
        return g
    alpha = g.abs() / g.abs().sum()
    return g - alpha * g


# --- AdamW (optarena's host for AGR) ---------------------------------------------------------


@pytest.mark.parametrize("foreach", [False, True])
def test_adamw_matches_torch_adamw(foreach):
    kw = dict(lr=3e-3, betas=(0.8, 0.95), eps=1e-7, weight_decay=0.05)
    ours, ref = run_pair(lambda p: AdamW(p, foreach=foreach, **kw), lambda p: torch.optim.AdamW(p, foreach=False, **kw))
    assert max_diff(ours, ref) <= TOL


# --- Adaburst ------------------------------------------------------------------------------------


def adaburst_oracle(lr, beta1, beta2, eps, wd, phi_of_t, moments="normalized"):
    """Algorithm 4 of the Adaburst paper restated, with φ(t) given; A divides the undamped sums by their
    total weight (``'normalized'``: Adam's m̂, v̂) or by Adam's bias correction (``'undamped'``)."""

    def update(p, g, s, t):
        if not s:
            s["m"], s["v"] = torch.zeros_like(p), torch.zeros_like(p)
        p.mul_(1 - lr * wd)
        s["m"] = beta1 * s["m"] + g
        s["v"] = beta2 * s["v"] + g * g
        if moments == "normalized":
            m_hat = s["m"] * (1 - beta1) / (1 - beta1**t)
            v_hat = s["v"] * (1 - beta2) / (1 - beta2**t)
        else:
            m_hat = s["m"] / (1 - beta1**t)
            v_hat = s["v"] / (1 - beta2**t)
        a = m_hat / (torch.sqrt(v_hat) + eps)
        lr2 = lr * phi_of_t(t)
        p.sub_(lr * a + lr2 * s["m"])

    return update


@pytest.mark.parametrize("moments", ["normalized", "undamped"])
@pytest.mark.parametrize("foreach", [False, True])
def test_adaburst_matches_its_equations_with_a_burst_and_a_restart(foreach, moments):
    T, restart_after = 7, 15  # the clock runs out after 7 steps; epoch_end restarts it after step 15

    def phi(t):  # φ used at step t (1-based): cosine over T steps from 1 to 0, restarted
        k = t - 1 if t <= restart_after else t - 1 - restart_after
        return 0.5 * (1 + math.cos(math.pi * k / T)) if k < T else 0.0

    def after(k, ours, oracle):
        if k + 1 == restart_after:
            assert ours.epoch_end(0.0)  # patience 0 and a non-improving metric: burst

    kw = dict(lr=2e-2, betas=(0.9, 0.99), eps=1e-4, weight_decay=0.01)
    ours_model, oracle_model = seeded_mlp(0), seeded_mlp(0)
    ours = Adaburst(
        ours_model.parameters(),
        burst_T_max=T,
        burst_trigger="metric_plateau",
        burst_patience=0,
        moments=moments,
        foreach=foreach,
        **kw,
    )
    ours.epoch_end(1.0)  # set the best metric, so the 0.0 later is a non-improvement
    oracle = EquationOracle(oracle_model.parameters(), adaburst_oracle(2e-2, 0.9, 0.99, 1e-4, 0.01, phi, moments))
    for k in range(STEPS):
        backward(ours_model, k)
        backward(oracle_model, k)
        ours.step()
        oracle.step()
        after(k, ours, oracle)
    assert ours.burst.num_bursts == 1
    assert max_diff(params_of(ours_model), params_of(oracle_model)) <= TOL


@pytest.mark.parametrize("foreach", [False, True])
def test_adaburst_without_sgd_term_is_torch_adamw(foreach):
    # moments='normalized' (the default): A is AdamW's own direction, so burst_max = 0 is torch's AdamW.
    lr, b1, b2, eps, wd = 1e-2, 0.9, 0.999, 1e-8, 0.02
    ours, ref = run_pair(
        lambda p: Adaburst(p, lr, (b1, b2), eps, wd, burst_max=0.0, total_steps=STEPS, foreach=foreach),
        lambda p: torch.optim.AdamW(p, lr, (b1, b2), eps, wd, foreach=False),
    )
    assert max_diff(ours, ref) <= TOL


@pytest.mark.parametrize("foreach", [False, True])
def test_undamped_adaburst_without_sgd_term_is_rescaled_adamw(foreach):
    lr, b1, b2, eps, wd = 1e-2, 0.9, 0.999, 1e-4, 0.02
    # moments='undamped': m = m_adam/(1−β1), v = v_adam/(1−β2), so lr1·A is AdamW with these:
    lr_adamw = lr * math.sqrt(1 - b2) / (1 - b1)
    eps_adamw = eps * math.sqrt(1 - b2)
    wd_adamw = wd * lr / lr_adamw  # the same decay factor 1 − lr·λ
    ours, ref = run_pair(
        lambda p: Adaburst(
            p, lr, (b1, b2), eps, wd, burst_max=0.0, moments="undamped", total_steps=STEPS, foreach=foreach
        ),
        lambda p: torch.optim.AdamW(p, lr_adamw, (b1, b2), eps_adamw, wd_adamw, foreach=False),
    )
    assert max_diff(ours, ref) <= TOL


@pytest.mark.parametrize("foreach", [False, True])
def test_adaburst_without_adamw_term_is_torch_sgd_momentum(foreach):
    lr, b1 = 5e-2, 0.9
    # φ held at 0.5 (burst_max = burst_min): lr2 = lr·0.5 throughout.
    ours, ref = run_pair(
        lambda p: Adaburst(
            p,
            lr,
            (b1, 0.999),
            weight_decay=0.0,
            variant="sgdm_burst",
            burst_max=0.5,
            burst_min=0.5,
            total_steps=STEPS,
            foreach=foreach,
        ),
        lambda p: torch.optim.SGD(p, lr * 0.5, momentum=b1, dampening=0.0, foreach=False),
    )
    assert max_diff(ours, ref) <= TOL


@pytest.mark.parametrize("foreach", [False, True])
def test_adaburst_sgdm_burst_ablation_is_sgd_under_the_burst_schedule(foreach):
    lr, b1, T, wd = 5e-2, 0.9, 8, 0.1
    ours_model, ref_model = seeded_mlp(0), seeded_mlp(0)
    opt = Adaburst(
        ours_model.parameters(), lr, (b1, 0.999), weight_decay=wd, variant="sgdm_burst", burst_T_max=T, foreach=foreach
    )
    # The decay follows the SGD rate it applies: torch's SGD with decoupled decay at lr·φ (its weight_decay
    # is L2, so the decay is written out here) under the same cosine.
    sgd = torch.optim.SGD(ref_model.parameters(), lr, momentum=b1, dampening=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(sgd, lambda k: 0.5 * (1 + math.cos(math.pi * k / T)) if k < T else 0.0)
    for k in range(STEPS):
        backward(ours_model, k)
        backward(ref_model, k)
        with torch.no_grad():
            for p in ref_model.parameters():
                p.mul_(1 - sgd.param_groups[0]["lr"] * wd)
        opt.step()
        sgd.step()
        sched.step()
    assert max_diff(params_of(ours_model), params_of(ref_model)) <= TOL


def test_adaburst_keeps_no_state_beyond_adamw():
    model_a, model_b = seeded_mlp(0), seeded_mlp(0)
    ours, adamw = Adaburst(model_a.parameters(), total_steps=10), torch.optim.AdamW(model_b.parameters())
    backward(model_a, 0)
    backward(model_b, 0)
    ours.step()
    adamw.step()

    def state_bytes(opt):
        return sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values())

    assert [set(s) for s in ours.state.values()] == [set(s) for s in adamw.state.values()]
    assert state_bytes(ours) == state_bytes(adamw)


def test_adamw_burst_ablation_is_adamw_with_a_burst_schedule():
    lr, T = 1e-2, 6
    b1, b2, eps, wd = 0.9, 0.999, 1e-4, 0.05
    ours_model, ref_model = seeded_mlp(0), seeded_mlp(0)
    opt = Adaburst(ours_model.parameters(), lr, (b1, b2), eps, wd, variant="adamw_burst", burst_T_max=T)
    # The AdamW rate is lr·φ and torch's AdamW decays with its own scheduled rate: the same update.
    ref = torch.optim.AdamW(ref_model.parameters(), lr, (b1, b2), eps, wd)
    sched = torch.optim.lr_scheduler.LambdaLR(ref, lambda k: 0.5 * (1 + math.cos(math.pi * k / T)) if k < T else 0.0)
    for k in range(STEPS):
        backward(ours_model, k)
        backward(ref_model, k)
        opt.step()
        ref.step()
        sched.step()
    assert max_diff(params_of(ours_model), params_of(ref_model)) <= TOL


@pytest.mark.parametrize("variant", ["sgdm_burst", "adamw_burst"])
def test_an_ablation_whose_rate_has_annealed_to_zero_stands_still(variant):
    # Zero gradients and φ at the floor (burst_max = 0): the rate it applies is 0, so weight decay does nothing.
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = Adaburst([p], lr=1e-2, weight_decay=0.1, variant=variant, burst_max=0.0, total_steps=400)
    for _ in range(400):
        p.grad = torch.zeros_like(p)
        opt.step()
    assert torch.equal(p.detach(), torch.ones(3, dtype=torch.float64))


# --- AdamNX and AdaX ---------------------------------------------------------------------------


def adamnx_oracle(lr, beta1, beta2, eps, wd):
    """The AdamNX authors' equations restated: Adam's bias-corrected m, Eq. 11 for v."""

    def update(p, g, s, t):
        if not s:
            s["m_adam"], s["v"] = torch.zeros_like(p), torch.zeros_like(p)
        p.mul_(1 - lr * wd)
        s["m_adam"] = beta1 * s["m_adam"] + (1 - beta1) * g
        m_hat = s["m_adam"] / (1 - beta1**t)
        beta2_t = (1 - beta2 ** ((1 - beta2) * (t - 1))) / (1 - beta2 ** ((1 - beta2) * t))
        s["v"] = beta2_t * s["v"] + (1 - beta2_t) * g * g
        p.sub_(lr * m_hat / (torch.sqrt(s["v"]) + eps))

    return update


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("betas", [(0.9, 0.99), (0.9, 0.999), (0.5, 0.9)])
def test_adamnx_matches_its_equations(foreach, betas):
    ours, ref = run_pair(
        lambda p: AdamNX(p, lr=5e-3, betas=betas, weight_decay=0.01, foreach=foreach),
        lambda p: EquationOracle(p, adamnx_oracle(5e-3, betas[0], betas[1], 1e-8, 0.01)),
    )
    assert max_diff(ours, ref) <= TOL


def adax_oracle(lr, beta1, beta2, eps, wd, decoupled):
    """The AdaX authors' code restated (AdaX: L2; AdaXW: decoupled)."""

    def update(p, g, s, t):
        if not s:
            s["m"], s["v"] = torch.zeros_like(p), torch.zeros_like(p)
        if decoupled:
            p.sub_(lr * wd * p)
        else:
            g = g + wd * p
        s["m"] = beta1 * s["m"] + (1 - beta1) * g
        s["v"] = (1 + beta2) * s["v"] + beta2 * g * g
        step_size = lr * math.sqrt((1 + beta2) ** t - 1)
        p.sub_(step_size * s["m"] / (torch.sqrt(s["v"]) + eps))

    return update


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("decoupled,wd", [(False, 5e-4), (True, 5e-2)])
def test_adax_matches_its_equations(foreach, decoupled, wd):
    ours, ref = run_pair(
        lambda p: AdaX(p, lr=3e-3, weight_decay=wd, decoupled=decoupled, foreach=foreach),
        lambda p: EquationOracle(p, adax_oracle(3e-3, 0.9, 1e-4, 1e-12, wd, decoupled)),
    )
    assert max_diff(ours, ref) <= TOL


@pytest.mark.parametrize("beta2", [0.99, 0.999, 0.9])
def test_adamnx_second_moment_is_adax_normalised(beta2):
    """AdamNX's v equals AdaX's v / ((1+β)^t − 1) with β = β2^(−(1−β2)) − 1 (and m equals m̂)."""
    beta_adax = beta2 ** (-(1 - beta2)) - 1
    p_nx = torch.zeros(6, 5, dtype=torch.float64, requires_grad=True)
    p_x = torch.zeros(6, 5, dtype=torch.float64, requires_grad=True)
    nx = AdamNX([p_nx], lr=0.0, betas=(0.9, beta2), weight_decay=0.0)
    x = AdaX([p_x], lr=0.0, betas=(0.9, beta_adax), weight_decay=0.0)
    g = torch.Generator().manual_seed(7)
    for t in range(1, 200):
        grad = torch.randn(6, 5, generator=g, dtype=torch.float64) * (1 + t % 5)
        p_nx.grad, p_x.grad = grad, grad.clone()
        nx.step()
        x.step()
        v_nx = nx.state[p_nx]["exp_avg_sq"]
        v_x = x.state[p_x]["exp_avg_sq"] / math.expm1(t * math.log1p(beta_adax))
        m_x = x.state[p_x]["exp_avg"] / (1 - 0.9**t)
        assert torch.allclose(v_nx, v_x, rtol=1e-10, atol=0)
        assert torch.allclose(nx.state[p_nx]["exp_avg"], m_x, rtol=1e-10, atol=1e-300)


def test_adamnx_beta2_schedule_is_stable_where_pow_is_not():
    from optarena.optim.adamnx import adamnx_beta2

    # Far into training with β2 = 0.999 the exponent (1−β2)t is small; compare with exact math.
    for t in (1, 2, 10, 1000, 10**6, 10**8):
        exact = math.expm1((1 - 0.999) * (t - 1) * math.log(0.999)) / math.expm1((1 - 0.999) * t * math.log(0.999))
        assert adamnx_beta2(0.999, t) == pytest.approx(exact, rel=1e-14)
    assert adamnx_beta2(0.99, 1) == 0.0
    assert 0.0 < adamnx_beta2(0.99, 2) < adamnx_beta2(0.99, 10**5) < 1.0


@pytest.mark.parametrize("foreach", [False, True])
def test_adamnx_with_adams_decay_is_torch_adamw(foreach):
    """The ablation's 'adam' row: AdamNX's update with Adam's β2 decay is AdamW (torch's, an independent oracle)."""
    ours, ref = run_pair(
        lambda p: AdamNX(p, lr=5e-3, betas=(0.9, 0.999), weight_decay=0.01, beta2_decay="adam", foreach=foreach),
        lambda p: torch.optim.AdamW(p, lr=5e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, foreach=False),
    )
    assert max_diff(ours, ref) <= TOL


@pytest.mark.parametrize("beta", [1e-4, 1e-2])
def test_adamnx_with_adax_decay_has_adax_second_moment(beta):
    """The 'adax' row: v equals AdaX's own v / ((1+β)^t − 1), with AdaX run beside it."""
    p_nx = torch.zeros(6, 5, dtype=torch.float64, requires_grad=True)
    p_x = torch.zeros(6, 5, dtype=torch.float64, requires_grad=True)
    nx = AdamNX([p_nx], lr=0.0, betas=(0.9, beta), weight_decay=0.0, beta2_decay="adax")
    x = AdaX([p_x], lr=0.0, betas=(0.9, beta), weight_decay=0.0)
    g = torch.Generator().manual_seed(3)
    for t in range(1, 150):
        grad = torch.randn(6, 5, generator=g, dtype=torch.float64) * (1 + t % 4)
        p_nx.grad, p_x.grad = grad, grad.clone()
        nx.step()
        x.step()
        v_x = x.state[p_x]["exp_avg_sq"] / math.expm1(t * math.log1p(beta))
        assert torch.allclose(nx.state[p_nx]["exp_avg_sq"], v_x, rtol=1e-10, atol=0)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("exponent", [0.8, 0.5])
def test_adamnx_with_adafactor_decay_matches_its_equation(foreach, exponent):
    """The 'adafactor' row: v_t = (1 − t^(−c))·v_{t−1} + t^(−c)·g² (Shazeer & Stern, Alg. 4 with decay −c)."""

    def update(p, g, s, t):
        if not s:
            s["m"], s["v"] = torch.zeros_like(p), torch.zeros_like(p)
        p.mul_(1 - 5e-3 * 0.01)
        s["m"] = 0.9 * s["m"] + 0.1 * g
        rho = t ** (-exponent)
        s["v"] = (1 - rho) * s["v"] + rho * g * g
        p.sub_(5e-3 * (s["m"] / (1 - 0.9**t)) / (torch.sqrt(s["v"]) + 1e-8))

    ours, ref = run_pair(
        lambda p: AdamNX(
            p, lr=5e-3, betas=(0.9, exponent), weight_decay=0.01, beta2_decay="adafactor", foreach=foreach
        ),
        lambda p: EquationOracle(p, update),
    )
    assert max_diff(ours, ref) <= TOL


def test_adamnx_beta2_decay_is_validated():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match=r"beta2_decay.*adamnx.*adam.*adax.*adafactor"):
        AdamNX(p, beta2_decay="rmsprop")
    with pytest.raises(ValueError, match=r"betas\[1\].*adafactor.*\(0, 1\)"):
        AdamNX(p, betas=(0.9, 0.0), beta2_decay="adafactor")


# --- AGR -----------------------------------------------------------------------------------------


def adamw_with(lr, b1, b2, eps, wd, m_transform, v_transform):
    """AdamW written out, with what the first and second moments see chosen by the caller."""

    def update(p, g, s, t):
        if not s:
            s["m"], s["v"] = torch.zeros_like(p), torch.zeros_like(p)
        p.mul_(1 - lr * wd)
        gm, gv = m_transform(g, t), v_transform(g, t)
        s["m"] = b1 * s["m"] + (1 - b1) * gm
        s["v"] = b2 * s["v"] + (1 - b2) * gv * gv
        m_hat, v_hat = s["m"] / (1 - b1**t), s["v"] / (1 - b2**t)
        p.sub_(lr * m_hat / (torch.sqrt(v_hat) + eps))

    return update


def _raw(g, t):
    return g


def _agr_always(g, t):
    return agr(g)


def _agr_every_tensor(g, t):
    return agr(g, scope="all")


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "mode,scope,m_transform,v_transform",
    [
        ("code", "weights", _agr_always, _agr_always),
        ("paper", "weights", _agr_always, _raw),
        ("code", "all", _agr_every_tensor, _agr_every_tensor),
        ("paper", "all", _agr_every_tensor, _raw),
    ],
)
def test_adamw_agr_matches_both_readings_on_both_scopes(foreach, mode, scope, m_transform, v_transform):
    kw = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    ours, ref = run_pair(
        lambda p: optarena.create_optimizer(p, "adamw_agr", agr=mode, agr_scope=scope, foreach=foreach, **kw),
        lambda p: EquationOracle(p, adamw_with(1e-2, 0.9, 0.999, 1e-8, 0.01, m_transform, v_transform)),
    )
    assert max_diff(ours, ref) <= TOL


def test_agr_leaves_biases_and_norm_weights_alone_by_default():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2)).double()
    opt = optarena.create_optimizer(model, "adamw_agr")
    grads = [torch.randn_like(p) for p in model.parameters()]
    from optarena.optim.transforms import apply_pipeline, pipeline

    regularized, _ = apply_pipeline(pipeline(opt.param_groups[0]), grads, [1.0] * len(grads), foreach=True)
    for g, r in zip(grads, regularized):
        assert torch.equal(g, r) == (g.dim() < 2)


def test_adamw_agr_code_mode_is_torch_adamw_fed_agr_gradients():
    model_a, model_b = seeded_mlp(0), seeded_mlp(0)
    ours = optarena.create_optimizer(model_a.parameters(), "adamw_agr")
    ref = torch.optim.AdamW(model_b.parameters())
    for k in range(STEPS):
        backward(model_a, k)
        backward(model_b, k)
        for p in model_b.parameters():
            p.grad = agr(p.grad)
        ours.step()
        ref.step()
    assert max_diff(params_of(model_a), params_of(model_b)) <= TOL


def test_agr_stops_after_the_given_step():
    stop = 9

    def agr_until(g, t):
        return agr(g) if t <= stop else g

    ours, ref = run_pair(
        lambda p: AdamW(p, lr=1e-2, agr="code", agr_stop_step=stop),
        lambda p: EquationOracle(p, adamw_with(1e-2, 0.9, 0.999, 1e-8, 0.01, agr_until, agr_until)),
    )
    assert max_diff(ours, ref) <= TOL


def test_agr_wrapper_around_torch_sgd():
    ours, ref = run_pair(
        lambda p: optarena.create_optimizer(p, "sgdm", lr=1e-2, agr="code"),
        lambda p: EquationOracle(p, _sgd_momentum_on_agr(1e-2, 0.9)),
    )
    assert max_diff(ours, ref) <= TOL


def _sgd_momentum_on_agr(lr, momentum):
    def update(p, g, s, t):
        g = agr(g)
        s["buf"] = g.clone() if "buf" not in s else momentum * s["buf"] + g
        p.sub_(lr * s["buf"])

    return update


def test_agr_edge_cases_safe_by_default_and_official_on_request():
    from optarena.optim.agr import agr_multi_tensor, agr_single_tensor

    zero = torch.zeros(4, dtype=torch.float64)
    single = torch.tensor([3.0], dtype=torch.float64)
    scalar = torch.tensor(2.0, dtype=torch.float64)
    for fn in (lambda gs, **k: [agr_single_tensor(g, **k) for g in gs], agr_multi_tensor):
        safe = fn([zero, single, scalar])
        assert torch.equal(safe[0], zero) and torch.equal(safe[1], single) and torch.equal(safe[2], scalar)
        official = fn([zero, single, scalar], official_edge_cases=True)
        assert torch.isnan(official[0]).all()  # 0/0, as the authors' code
        assert torch.equal(official[1], torch.zeros(1, dtype=torch.float64))  # α = 1 freezes it
        assert torch.equal(official[2], torch.zeros((), dtype=torch.float64))


def test_agr_formula_on_a_known_tensor():
    from optarena.optim.agr import agr_single_tensor

    g = torch.tensor([1.0, -3.0, 0.0, 4.0], dtype=torch.float64)
    # Σ|g| = 8, α = (1/8, 3/8, 0, 1/2), g' = g(1 − α)
    expected = torch.tensor([7 / 8, -15 / 8, 0.0, 2.0], dtype=torch.float64)
    assert torch.equal(agr_single_tensor(g), expected)
