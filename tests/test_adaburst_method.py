"""Adaburst as the paper means it, in real training runs: the burst spans the run, its update is AdamW's plus
SGD-momentum's at the stated rates, and the trigger fires when training stalls (and not while it improves)."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from optarena import Adaburst
from optarena.burst import LossTrendDetector

from .helpers import max_diff


def digits_run(steps: int, seed: int = 0):
    """A digits MLP trained with plain minibatch cross-entropy: (model, batches)."""
    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float64)
    y = torch.tensor(data.target)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10)).double()
    batches = [torch.randint(0, len(x), (64,), generator=g) for _ in range(steps)]
    return model, [(x[i], y[i]) for i in batches]


def test_the_sgd_momentum_term_is_present_throughout_a_default_run():
    """A README-style loop: the cosine spans the run, so φ > 0 at every step but the run's end."""
    steps = 300
    model, batches = digits_run(steps)
    opt = Adaburst(model.parameters(), lr=1e-3, total_steps=steps)
    phis = []
    for x, y in batches:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        phis.append(opt.burst_factor)  # the φ this step's update uses (burst_min 0, burst_max 1)
        opt.step()
        opt.observe(loss.item())
    assert min(phis) > 0.0
    assert phis[0] == 1.0
    # Between restarts φ only falls, and the last annealing ends near the floor with the run.
    restarts = [k for k in range(1, steps) if phis[k] > phis[k - 1]]
    assert len(restarts) in (opt.burst.num_bursts, opt.burst.num_bursts - 1)  # a burst at the last step acts on none
    last = restarts[-1] if restarts else 0
    assert all(a > b for a, b in itertools.pairwise(phis[last:]))
    assert phis[-1] < 0.1


def test_the_update_is_adamw_plus_sgd_momentum_at_the_stated_rates():
    """Gradients recorded from a real run, replayed: Adaburst's displacement is torch AdamW's at lr plus torch
    SGD-momentum's (momentum β1, no dampening) at lr·φ_t, φ_t the cosine over the run (docs/algorithms/adaburst.md)."""
    steps, lr, betas, eps = 60, 1e-2, (0.9, 0.999), 1e-8
    model, batches = digits_run(steps, seed=1)
    recorder = torch.optim.SGD(model.parameters(), lr=0.1)
    grads = []
    for x, y in batches:  # a real run gives the gradient sequence
        recorder.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        recorder.step()

    def replay(make, schedule=None):
        params = [torch.zeros_like(g, requires_grad=True) for g in grads[0]]
        opt = make(params)
        for k, step_grads in enumerate(grads):
            for p, g in zip(params, step_grads):
                p.grad = g.clone()
            if schedule is not None:
                opt.param_groups[0]["lr"] = schedule(k)
            opt.step()
        return [p.detach() for p in params]

    ours = replay(lambda p: Adaburst(p, lr, betas, eps, weight_decay=0.0, total_steps=steps, burst_trigger="none"))
    adamw = replay(lambda p: torch.optim.AdamW(p, lr, betas, eps, weight_decay=0.0))
    phi = [0.5 * (1 + math.cos(math.pi * k / steps)) for k in range(steps)]
    sgdm = replay(lambda p: torch.optim.SGD(p, lr, momentum=betas[0], dampening=0.0), lambda k: lr * phi[k])
    assert max_diff(ours, [a + s for a, s in zip(adamw, sgdm)]) <= 1e-12


def test_the_loss_trend_trigger_fires_on_a_plateau_and_not_while_the_loss_falls():
    rng = np.random.default_rng(0)
    falling = 2.0 * np.exp(-np.arange(400) / 150) + 0.05 * rng.standard_normal(400)
    plateau = 0.3 + 0.05 * rng.standard_normal(400)
    detector = LossTrendDetector(window=50)
    assert not any(detector.update(v) for v in falling)
    detector = LossTrendDetector(window=50)
    fired = [i for i, v in enumerate(plateau) if detector.update(v)]
    # A window of pure noise projects a chance fall about half the time, so a test a quarter window later
    # usually fires: a plateau is found within a few tests, and again after every refill.
    assert fired and fired[0] < 100 and len(fired) >= 3
    assert all(b - a >= 50 for a, b in itertools.pairwise(fired))  # the window refills after each burst


def test_a_loss_that_creeps_down_by_a_negligible_amount_has_stalled():
    # Every step lower than the last, so a rank test would say "falling"; the Theil–Sen drop over the
    # window (5e-8 of the loss) is below min_drop (1e-2), so it has stalled. A fall of 5% per window has not.
    creeping = LossTrendDetector(window=50)
    assert creeping.update(1.0) is False
    assert any(creeping.update(1.0 - 1e-9 * k) for k in range(1, 50))
    falling = LossTrendDetector(window=50)
    assert not any(falling.update(1.0 - 1e-3 * k) for k in range(200))


def test_the_loss_trend_scale_is_the_first_window_so_a_loss_halving_near_zero_still_falls():
    # Relative to its own level the tail of 2·exp(-k/100) always falls 1 − e^(-1/2) ≈ 39% per window,
    # but against the first window's level (≈ 1.6) it falls below 1%, which is a stall: min_drop is a
    # rate in the units of the run's early loss, the same at step 50 and step 5,000.
    decay = LossTrendDetector(window=50)
    fired = [k for k in range(1000) if decay.update(2.0 * math.exp(-k / 100))]
    assert decay.scale == pytest.approx(float(np.median([2.0 * math.exp(-k / 100) for k in range(50)])))
    assert fired and fired[0] > 400  # falling while the loss is still far from zero
    # The fall where the first burst fires is below 1e-2 of the scale, a window earlier it was not.
    slope = lambda k: 2.0 * math.exp(-k / 100) * (1 - math.exp(-0.5))  # noqa: E731
    assert slope(fired[0] - 49) < 1.2e-2 * decay.scale and slope(fired[0] - 49 - 50) > 1e-2 * decay.scale


def test_the_loss_trend_trigger_is_deterministic_and_survives_a_state_dict_round_trip():
    rng = np.random.default_rng(1)
    losses = np.concatenate([np.linspace(2, 0.5, 150), 0.5 + 0.02 * rng.standard_normal(250)])
    p = torch.nn.Parameter(torch.zeros(3))
    first = Adaburst([p], total_steps=400, burst_window=40)
    events = [k for k, v in enumerate(losses) if first.observe(v)]
    assert events  # the plateau after step 150 is found
    again = Adaburst([torch.nn.Parameter(torch.zeros(3))], total_steps=400, burst_window=40)
    assert [k for k, v in enumerate(losses) if again.observe(v)] == events
    # Split the sequence at a point inside a window, through a state_dict saved mid-way.
    resumed = Adaburst([torch.nn.Parameter(torch.zeros(3))], total_steps=400, burst_window=40)
    cut = events[0] + 17
    early = [k for k, v in enumerate(losses[:cut]) if resumed.observe(v)]
    state = copy.deepcopy(resumed.state_dict())
    fresh = Adaburst([torch.nn.Parameter(torch.zeros(3))], total_steps=400, burst_window=40)
    fresh.load_state_dict(state)
    late = [cut + k for k, v in enumerate(losses[cut:]) if fresh.observe(v)]
    assert early + late == events


def test_a_closure_feeds_the_trigger_and_a_burst_restarts_from_the_peak_over_the_steps_left():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4))
    steps = 200
    opt = Adaburst([w], lr=1e-2, total_steps=steps, burst_window=20)

    def closure():  # the loss reaches its floor quickly, then stays there: a plateau
        opt.zero_grad()
        loss = (w - 1.0).pow(2).sum() + 0.5
        loss.backward()
        return loss

    phis = []
    for _ in range(steps):
        phis.append(opt.burst_factor)  # the φ this step uses
        opt.step(closure)
    assert opt.burst.num_bursts >= 1
    restarts = [k for k in range(1, steps) if phis[k] > phis[k - 1]]
    assert len(restarts) in (opt.burst.num_bursts, opt.burst.num_bursts - 1)  # a burst at the last step acts on none
    assert all(phis[k] == 1.0 for k in restarts)  # from the peak
    # Each restart anneals over the steps left: the last one still reaches (near) the floor as the run ends.
    left = steps - restarts[-1]
    assert phis[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * (left - 1) / left)), abs=1e-12)


@pytest.mark.parametrize("trigger", ["loss_trend", "metric_plateau"])
def test_a_run_that_stalls_bursts_and_one_that_improves_does_not(trigger):
    """Real runs on digits: full-batch training improves steadily for all 320 steps (no burst); minibatch training
    at a large lr on 64 images memorises them within a few epochs and stalls (bursts)."""

    def run(lr, n, batch):
        data = load_digits()
        x = torch.tensor(data.data[:n] / 16.0)
        y = torch.tensor(data.target[:n])
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10)).double()
        epochs, per_epoch = 40, 8
        opt = Adaburst(
            model.parameters(),
            lr=lr,
            total_steps=epochs * per_epoch,
            burst_trigger=trigger,
            burst_patience=2,  # the loss trend's window is its default, 15% of the run (50 steps)
        )
        g = torch.Generator().manual_seed(0)
        for _ in range(epochs):
            for _ in range(per_epoch):
                i = torch.randint(0, n, (batch,), generator=g) if batch else torch.arange(n)
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(x[i]), y[i])
                loss.backward()
                opt.step()
                opt.observe(loss.item())
            accuracy = (model(x).argmax(1) == y).double().mean().item()
            opt.epoch_end(accuracy)
        return opt.burst.num_bursts

    assert run(lr=5e-2, n=64, batch=32) >= 1
    assert run(lr=3e-3, n=1797, batch=None) == 0


def test_the_arena_records_bursts_at_their_steps():
    """Through the arena's runner (which supplies total_steps and every step's loss through Adaburst's hooks): a
    run that stalls in a local minimum of Rastrigin bursts, and the events land in the run record at their steps."""
    from optarena.arena.run.runner import train
    from optarena.arena.tasks import get_task

    result = train(get_task("rastrigin"), "adaburst", {"lr": 1e-3}, seed=0, epochs=6)
    steps = int(result.records[-1]["step"])
    bursts = result.events.get("burst", [])
    assert bursts and all(0 < b <= steps for b in bursts) and bursts == sorted(bursts)
    assert result.to_dict()["burst_events"] == bursts


@pytest.mark.parametrize("trigger", ["loss_trend", "metric_plateau"])
def test_the_no_burst_ablation_reports_no_burst_while_the_full_method_does(trigger):
    """The trigger fires the same in both (one clock); only where φ follows it is a restart a burst event."""
    options = {"burst_trigger": trigger, "burst_window": 50, "burst_patience": 0}
    fired = {}
    for variant in ("adaburst", "adamw_sgdm"):
        opt = Adaburst([torch.zeros(2, requires_grad=True)], lr=1e-3, total_steps=400, variant=variant, **options)
        if trigger == "loss_trend":
            fired[variant] = sum(opt.observe(0.3 + 0.01 * math.sin(k)) for k in range(400))
        else:
            fired[variant] = sum(opt.epoch_end(0.5) for _ in range(10))
        assert opt.param_groups[0]["burst_lr"] == (opt.burst.value(0.0, 1.0) if variant == "adaburst" else 1.0)
    assert fired["adaburst"] > 0 and fired["adamw_sgdm"] == 0
