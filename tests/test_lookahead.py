"""Lookahead against kozistr's (a correct implementation) and the paper, and the failure modes of others."""

from __future__ import annotations

import io

import pytest
import torch
from pytorch_optimizer import Lookahead as KozistrLookahead

import optarena
from optarena.optim import Adaburst
from optarena.optim.lookahead import Lookahead

from .helpers import backward, max_diff, seeded_mlp
from .test_oracles import params_of

STEPS = 23  # four syncs with k = 5 and a partial cycle after them


@pytest.mark.parametrize("pullback", ["none", "reset", "pullback"])
def test_matches_kozistr_lookahead_around_sgd_momentum(pullback):
    ours_model, ref_model = seeded_mlp(0), seeded_mlp(0)
    ours = Lookahead(torch.optim.SGD(ours_model.parameters(), lr=0.05, momentum=0.9), k=5, alpha=0.5, pullback=pullback)
    ref = KozistrLookahead(
        torch.optim.SGD(ref_model.parameters(), lr=0.05, momentum=0.9), k=5, alpha=0.5, pullback_momentum=pullback
    )
    for k in range(STEPS):
        backward(ours_model, k)
        backward(ref_model, k)
        ours.step()
        ref.step()
    assert max_diff(params_of(ours_model), params_of(ref_model)) <= 1e-10


def test_matches_the_paper_around_adamw():
    k, alpha = 4, 0.8
    ours_model, ref_model = seeded_mlp(0), seeded_mlp(0)
    ours = Lookahead(torch.optim.AdamW(ours_model.parameters(), lr=1e-2), k=k, alpha=alpha)
    inner = torch.optim.AdamW(ref_model.parameters(), lr=1e-2)
    slow = [p.detach().clone() for p in ref_model.parameters()]  # φ0 = θ0
    for t in range(1, STEPS + 1):
        backward(ours_model, t)
        backward(ref_model, t)
        ours.step()
        inner.step()
        if t % k == 0:  # φ ← φ + α(θ − φ); θ ← φ
            with torch.no_grad():
                for p, s in zip(ref_model.parameters(), slow):
                    s += alpha * (p - s)
                    p.copy_(s)
    assert max_diff(params_of(ours_model), params_of(ref_model)) <= 1e-10


def test_first_sync_pulls_back_to_the_initial_weights():
    # timm creates the slow weights at the first sync, so its first sync does nothing.
    model = seeded_mlp(0)
    start = params_of(model)
    opt = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), k=3, alpha=0.5)
    for t in range(2):
        backward(model, t)
        opt.step()
    backward(model, 2)
    with torch.no_grad():
        fast = [p - 0.1 * p.grad for p in model.parameters()]  # what the third inner step produces
    opt.step()  # third step: sync
    expected = [s + 0.5 * (f - s) for s, f in zip(start, fast)]
    assert max_diff(params_of(model), expected) <= 1e-14


def test_pullback_changes_the_momentum_at_every_sync():
    # The authors' code aliases its cached momentum to the live buffer after the first sync,
    # so every later pullback is a no-op.
    model = seeded_mlp(0)
    sgd = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    opt = Lookahead(sgd, k=2, alpha=0.5, pullback="pullback")
    first = next(model.parameters())
    cached = torch.zeros_like(first)
    for t in range(1, 9):
        backward(model, t)
        if t % 2 == 0:
            sgd.step()  # the inner step alone, to see the buffer just before the sync
            before = sgd.state[first]["momentum_buffer"].clone()
            opt.steps_taken += 1
            opt.sync()
            after = sgd.state[first]["momentum_buffer"]
            expected = 0.5 * before + 0.5 * cached
            assert torch.allclose(after, expected, rtol=1e-14, atol=0)
            assert not torch.equal(after, before)
            assert opt.slow_momentum[first] is not after
            cached = after.clone()
        else:
            opt.step()


def test_slow_weights_and_counter_survive_a_checkpoint():
    def make(model):
        return Lookahead(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), k=5, pullback="pullback")

    model = seeded_mlp(0)
    opt = make(model)
    for t in range(STEPS):
        backward(model, t)
        opt.step()
    straight = params_of(model)

    model = seeded_mlp(0)
    opt = make(model)
    for t in range(7):  # mid-cycle: 2 steps after the first sync
        backward(model, t)
        opt.step()
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    resumed_model = seeded_mlp(1)  # different weights: the slow weights must come from the checkpoint
    resumed_model.load_state_dict(checkpoint["model"])
    resumed = make(resumed_model)
    resumed.load_state_dict(checkpoint["opt"])
    assert resumed.steps_taken == 7
    for t in range(7, STEPS):
        backward(resumed_model, t)
        resumed.step()
    assert max_diff(params_of(resumed_model), straight) == 0.0


def test_evaluate_on_slow_weights_and_swap_back():
    model = seeded_mlp(0)
    opt = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), k=10)
    for t in range(3):
        backward(model, t)
        opt.step()
    fast = params_of(model)
    with opt.slow_weights():
        assert max_diff(params_of(model), list(opt.slow.values())) == 0.0
    assert max_diff(params_of(model), fast) == 0.0


def test_lookahead_around_adaburst_keeps_its_burst_trigger():
    model = seeded_mlp(0)
    opt = optarena.create_optimizer(
        model, "lookahead_adaburst", total_steps=100, burst_trigger="metric_plateau", burst_patience=0, lookahead_k=3
    )
    assert isinstance(opt, Lookahead) and isinstance(opt.optimizer, Adaburst) and opt.k == 3
    backward(model, 0)
    opt.step()
    opt.epoch_end(0.9)
    assert opt.epoch_end(0.5)  # reaches Adaburst.epoch_end through the wrapper
    assert opt.burst.num_bursts == 1


@pytest.mark.parametrize(
    "kwargs,match",
    [({"k": 0}, "Invalid k"), ({"alpha": 1.5}, "Invalid alpha"), ({"pullback": "momentum"}, "Invalid pullback")],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Lookahead(torch.optim.SGD(seeded_mlp(0).parameters(), lr=0.1), **kwargs)
    with pytest.raises(ValueError, match="lookahead=True"):
        optarena.create_optimizer(seeded_mlp(0), "adamw", lookahead_k=3)


@pytest.mark.parametrize("name", ["adamw", "lookahead_adamw", "lookahead_adaburst"])
def test_a_step_pre_hook_sees_and_rewrites_the_closure_as_for_a_bare_optimizer(name):
    """A step pre-hook registered on a wrapper runs on the optimizer it wraps, which the wrapper steps with the
    closure by keyword: the hook sees ``step()``'s arguments as it does for a bare optimizer, and a closure it puts in
    the keywords is the one called (passed by position, torch would get the closure twice)."""
    params = [torch.nn.Parameter(torch.randn(3))]
    options = {"total_steps": 10} if name.endswith("adaburst") else {}
    opt = optarena.create_optimizer(params, name, **options)
    seen = []

    def hook(optimizer, args, kwargs):
        seen.append((args, dict(kwargs)))
        return args, {**kwargs, "closure": lambda: torch.tensor(7.0)}

    opt.register_step_pre_hook(hook)
    params[0].grad = torch.ones(3)
    assert float(opt.step()) == 7.0
    assert float(opt.step(closure=lambda: torch.tensor(1.0))) == 7.0
    inner = getattr(opt, "optimizer", opt)  # the hooks run on the optimizer a wrapper drives
    assert [args for args, _ in seen] == [(inner,), (inner,)]  # torch passes the optimizer itself; no closure
    assert seen[0][1].get("closure") is None and callable(seen[1][1]["closure"])
