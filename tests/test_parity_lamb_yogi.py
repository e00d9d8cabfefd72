"""LAMB and Yogi against kozistr's ``pytorch_optimizer`` 4.1.0 and against their papers' equations restated
here in plain tensor code (no optarena kernel is called by a reference), over 25 float64 steps on the seeded MLP.

kozistr's readings are reached through options: Yogi's ``bias_correction='moments'`` (kozistr starts m at
its ``initial_accumulator`` too; here its m starts at 0, the TensorFlow code's and ours), LAMB's
``bias_correction=False`` (kozistr's ``adam_debias=True``) with ``weight_norm_bounds=(0, clamp)``. kozistr
adds ε to ‖u‖ in the trust ratio as well; the LAMB parity runs at ε = 1e-12, where that term changes the
ratio by less than 1e-12 relative, and ε's place in r is checked against the paper's equations.
"""

from __future__ import annotations

import math

import pytest
import pytorch_optimizer
import torch

from optarena.optim.lamb import Lamb
from optarena.optim.yogi import Yogi

from .helpers import backward, max_diff, seeded_mlp

STEPS = 25
TOL = 1e-10


def run_pair(make_ours, make_ref, *, steps: int = STEPS, zero_bias: bool = False):
    """Train two identical MLPs on the same batches; ``zero_bias`` starts the output bias at 0 (‖θ‖ = 0)."""
    ours_model, ref_model = seeded_mlp(0), seeded_mlp(0)
    if zero_bias:
        with torch.no_grad():
            ours_model[2].bias.zero_()
            ref_model[2].bias.zero_()
    ours, ref = make_ours(ours_model.parameters()), make_ref(ref_model.parameters())
    for k in range(steps):
        backward(ours_model, k)
        backward(ref_model, k)
        ours.step()
        ref.step()
    return [p.detach().clone() for p in ours_model.parameters()], [p.detach().clone() for p in ref_model.parameters()]


class EquationOracle:
    """A per-tensor optimizer written from the paper: ``update(p, g, state, t)`` in plain code."""

    def __init__(self, params, update):
        self.params = list(params)
        self.update = update
        self.state = [{} for _ in self.params]
        self.t = 0

    @torch.no_grad()
    def step(self):
        self.t += 1
        for p, s in zip(self.params, self.state):
            self.update(p, p.grad.clone(), s, self.t)


# --- Yogi -------------------------------------------------------------------------------------------


def kozistr_yogi(params, *, m_at_zero: bool, **kw):
    """kozistr's Yogi; with ``m_at_zero`` its first moment starts at 0 (it starts both moments at the accumulator)."""
    params = list(params)
    ref = pytorch_optimizer.Yogi(params, foreach=False, **kw)
    if m_at_zero:
        for p in params:
            ref.state[p] = {
                "exp_avg": torch.zeros_like(p),
                "exp_avg_sq": torch.full_like(p, kw["initial_accumulator"]),
            }
    return ref


YOGI_DECAY = [  # ours, kozistr's flags, λ
    ("decoupled", {"weight_decouple": True}, 1e-2),
    ("unscaled", {"weight_decouple": True, "fixed_decay": True}, 1e-3),
    ("l2", {"weight_decouple": False}, 1e-2),
]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("mode,flags,wd", YOGI_DECAY, ids=[d[0] for d in YOGI_DECAY])
@pytest.mark.parametrize("v0", [0.0, 1e-6])
def test_yogi_moments_reading_matches_kozistr(foreach, mode, flags, wd, v0):
    kw = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-3, weight_decay=wd, initial_accumulator=v0)
    ours, ref = run_pair(
        lambda p: Yogi(p, bias_correction="moments", weight_decay_mode=mode, foreach=foreach, **kw),
        lambda p: kozistr_yogi(p, m_at_zero=v0 != 0.0, **flags, **kw),
    )
    assert max_diff(ours, ref) <= TOL


def yogi_oracle(lr, b1, b2, eps, v0, bias_correction, wd=0.0):
    """Algorithm 2 of the Yogi paper (v moves towards g² by (1 − β2)·g², in the direction of sign(g² − v)),
    with the step of each bias-correction reading and decoupled decay θ(1 − lr·λ) first."""

    def update(p, g, s, t):
        if not s:
            s["m"], s["v"] = torch.zeros_like(p), torch.full_like(p, v0)
        p.mul_(1 - lr * wd)
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["v"] = s["v"] - (1 - b2) * torch.sign(s["v"] - g * g) * g * g
        if bias_correction == "step_size":  # TensorFlow: lr·√(1 − β2^t)/(1 − β1^t) · m/(√v + ε)
            p.sub_(lr * math.sqrt(1 - b2**t) / (1 - b1**t) * s["m"] / (torch.sqrt(s["v"]) + eps))
        elif bias_correction == "moments":  # m̂/(√v̂ + ε)
            p.sub_(lr * (s["m"] / (1 - b1**t)) / (torch.sqrt(s["v"] / (1 - b2**t)) + eps))
        else:  # the paper as written
            p.sub_(lr * s["m"] / (torch.sqrt(s["v"]) + eps))

    return update


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("bias_correction", ["step_size", "moments", "none"])
def test_yogi_matches_its_equations(foreach, bias_correction):
    kw = dict(lr=2e-2, eps=1e-3, v0=1e-6, wd=1e-2)
    ours, oracle = run_pair(
        lambda p: Yogi(
            p,
            lr=kw["lr"],
            eps=kw["eps"],
            initial_accumulator=kw["v0"],
            weight_decay=kw["wd"],
            bias_correction=bias_correction,
            foreach=foreach,
        ),
        lambda p: EquationOracle(p, yogi_oracle(kw["lr"], 0.9, 0.999, kw["eps"], kw["v0"], bias_correction, kw["wd"])),
    )
    assert max_diff(ours, oracle) <= TOL


def test_yogi_defaults_are_the_tensorflow_code_s():
    opt = Yogi([torch.zeros(2, requires_grad=True)])
    group = opt.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["initial_accumulator"]) == (1e-2, (0.9, 0.999), 1e-3, 1e-6)
    assert group["bias_correction"] == "step_size" and group["weight_decay"] == 0.0


# --- LAMB -------------------------------------------------------------------------------------------

LAMB_DECAY = [  # ours, kozistr's flags, λ
    ("update", {"weight_decouple": False}, 1e-2),
    ("decoupled", {"weight_decouple": True}, 1e-2),
    ("unscaled", {"weight_decouple": True, "fixed_decay": True}, 1e-3),
]


def kozistr_lamb(params, clamp: float, **kw):
    ref = pytorch_optimizer.Lamb(params, foreach=False, adam_debias=True, **kw)
    ref.clamp = clamp  # φ's upper bound (a class attribute, 10, in kozistr)
    return ref


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("mode,flags,wd", LAMB_DECAY, ids=[d[0] for d in LAMB_DECAY])
@pytest.mark.parametrize("clamp", [10.0, 0.5])
def test_lamb_without_bias_correction_matches_kozistr(foreach, mode, flags, wd, clamp):
    kw = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-12, weight_decay=wd)
    ours, ref = run_pair(
        lambda p: Lamb(
            p,
            bias_correction=False,
            weight_norm_bounds=(0.0, clamp),
            weight_decay_mode=mode,
            foreach=foreach,
            **kw,
        ),
        lambda p: kozistr_lamb(p, clamp, **flags, **kw),
        zero_bias=True,  # ‖θ‖ = 0 at the first step: the ratio is 1 in both
    )
    assert max_diff(ours, ref) <= TOL


def test_kozistr_s_epsilon_in_the_trust_ratio_shows_at_its_default_epsilon():
    """Why the parity above runs at ε = 1e-12: kozistr's ``‖u‖ + ε`` is not the paper's ``‖u‖``."""
    kw = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-6, weight_decay=1e-2)
    ours, ref = run_pair(
        lambda p: Lamb(p, bias_correction=False, weight_norm_bounds=(0.0, 10.0), weight_decay_mode="update", **kw),
        lambda p: kozistr_lamb(p, 10.0, weight_decouple=False, **kw),
    )
    assert max_diff(ours, ref) > TOL


def lamb_oracle(lr, b1, b2, eps, wd, *, bias_correction=True, bounds=None, scope="all"):
    """Algorithm 2 of the LAMB paper: x ← x − η·φ(‖x‖)/‖r + λx‖·(r + λx), r = m̂/(√v̂ + ε), per tensor;
    the ratio is 1 where φ(‖x‖) or ‖r + λx‖ is 0, and (``scope='weights'``) for tensors of fewer than 2 dims."""

    def update(p, g, s, t):
        if not s:
            s["m"], s["v"] = torch.zeros_like(p), torch.zeros_like(p)
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["v"] = b2 * s["v"] + (1 - b2) * g * g
        m_hat = s["m"] / (1 - b1**t) if bias_correction else s["m"]
        v_hat = s["v"] / (1 - b2**t) if bias_correction else s["v"]
        u = m_hat / (torch.sqrt(v_hat) + eps) + wd * p
        phi = torch.linalg.vector_norm(p).item()
        if bounds is not None:
            phi = min(max(phi, bounds[0]), bounds[1])
        u_norm = torch.linalg.vector_norm(u).item()
        ratio = phi / u_norm if phi > 0 and u_norm > 0 else 1.0
        if scope == "weights" and p.dim() < 2:
            ratio = 1.0
        p.sub_(lr * ratio * u)

    return update


LAMB_CASES = {
    "paper": {},
    "no_bias_correction": {"bias_correction": False},
    "bounds": {"bounds": (0.5, 1.5)},
    "weights_only": {"scope": "weights"},
}


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("case", LAMB_CASES)
def test_lamb_matches_algorithm_2(foreach, case):
    options = LAMB_CASES[case]
    lr, eps, wd = 1e-2, 1e-3, 1e-2  # a large ε, so that its place in r shows
    ours, oracle = run_pair(
        lambda p: Lamb(
            p,
            lr=lr,
            eps=eps,
            weight_decay=wd,
            bias_correction=options.get("bias_correction", True),
            weight_norm_bounds=options.get("bounds"),
            trust_scope=options.get("scope", "all"),
            foreach=foreach,
        ),
        lambda p: EquationOracle(p, lamb_oracle(lr, 0.9, 0.999, eps, wd, **options)),
        zero_bias=True,
    )
    assert max_diff(ours, oracle) <= TOL


def test_lamb_moves_every_tensor_by_lr_times_its_norm():
    """With λ = 0 and φ the identity, the trust ratio makes each tensor's step exactly lr·‖θ‖ (LAMB's point)."""
    model = seeded_mlp(0)
    opt = Lamb(model.parameters(), lr=3e-2)
    for k in range(5):
        before = [p.detach().clone() for p in model.parameters()]
        backward(model, k)
        opt.step()
        for p, q in zip(model.parameters(), before):
            step = torch.linalg.vector_norm(p.detach() - q).item()
            assert step == pytest.approx(3e-2 * torch.linalg.vector_norm(q).item(), rel=1e-12)
