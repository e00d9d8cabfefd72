"""Schedules: exact lr sequences against closed forms, the plateau trigger against torch, resume."""

from __future__ import annotations

import io
import math
import random

import pytest
import torch

from optarena.optim import Adaburst
from optarena.schedules import SGDR, AdamNXLR, LRBurst, PlateauDetector, adamnx_lr_ratio


def sgd(lr: float = 0.1, groups: int = 1) -> torch.optim.SGD:
    params = [{"params": [torch.zeros(2, requires_grad=True)], "lr": lr * (i + 1)} for i in range(groups)]
    return torch.optim.SGD(params, lr=lr)


def cosine(low: float, high: float, k: int, T: int) -> float:
    return low + (high - low) * 0.5 * (1 + math.cos(math.pi * k / T)) if k < T else low


def load_weights_only(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# --- the plateau trigger against torch's ReduceLROnPlateau ------------------------------------


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("threshold_mode,threshold", [("rel", 1e-2), ("abs", 0.05), ("rel", 0.0)])
@pytest.mark.parametrize("patience,cooldown", [(0, 0), (2, 0), (3, 2)])
def test_plateau_detector_fires_when_reduce_lr_on_plateau_reduces(mode, threshold_mode, threshold, patience, cooldown):
    rng = random.Random(f"{mode}{threshold_mode}{threshold}{patience}{cooldown}")
    metrics = [round(rng.uniform(0, 1), 2) + 0.01 * i * (1 if mode == "max" else -1) * (i % 7 < 3) for i in range(80)]
    opt = sgd(1.0)
    torch_sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode=mode, factor=0.5, patience=patience, threshold=threshold, threshold_mode=threshold_mode,
        cooldown=cooldown, min_lr=0.0, eps=0.0,
    )  # fmt: skip
    ours = PlateauDetector(mode, patience, threshold, threshold_mode, cooldown)
    fired_torch, fired_ours = [], []
    for value in metrics:
        before = opt.param_groups[0]["lr"]
        torch_sched.step(value)
        fired_torch.append(opt.param_groups[0]["lr"] < before)
        fired_ours.append(ours.update(value))
    assert fired_ours == fired_torch
    assert any(fired_ours)


# --- LRBurst ---------------------------------------------------------------------------------------


def test_lr_burst_is_cosine_annealing_restarted_on_plateau():
    opt = sgd(0.1, groups=2)
    T, eta_min = 5, [0.01, 0.02]
    sched = LRBurst(opt, T_max=T, eta_min=eta_min, patience=1, mode="max")
    seen, expected = [], []
    k = 0
    metrics = {3: 0.5, 4: 0.4, 5: 0.4, 12: 0.3}  # epoch 3 sets the best; 4 and 5 are bad: a burst after 5
    for step in range(20):
        seen.extend(g["lr"] for g in opt.param_groups)
        expected.extend(cosine(lo, hi, k, T) for lo, hi in zip(eta_min, (0.1, 0.2)))
        opt.step()
        burst = sched.step(metrics.get(step))
        k = 0 if burst else k + 1
        assert burst == (step == 5)
    assert seen == pytest.approx(expected, abs=0, rel=1e-15)
    assert sched.num_bursts == 1
    assert sched.get_last_lr() == [g["lr"] for g in opt.param_groups]


def test_lr_burst_counted_in_steps_with_epoch_observations():
    opt = sgd(1.0)
    T, steps_per_epoch = 7, 4
    sched = LRBurst(opt, T_max=T, patience=0, mode="min")
    k, seen, expected = 0, [], []
    losses = [1.0, 0.5, 0.6, 0.4, 0.45]
    for epoch, loss in enumerate(losses):
        for _ in range(steps_per_epoch):
            seen.append(opt.param_groups[0]["lr"])
            expected.append(cosine(0.0, 1.0, k, T))
            opt.step()
            sched.step()
            k += 1
        if sched.observe(loss):
            k = 0
            assert epoch in (2, 4)  # 0.6 and 0.45 did not improve
    assert seen == pytest.approx(expected, rel=1e-15, abs=1e-300)
    assert sched.num_bursts == 2


def test_lr_burst_cyclic_and_idle_start():
    opt = sgd(1.0)
    sched = LRBurst(opt, T_max=3, cyclic=True)
    values = []
    for _ in range(7):
        values.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert values == pytest.approx([cosine(0, 1, k % 3, 3) for k in range(7)], abs=1e-15)

    opt = sgd(1.0)
    sched = LRBurst(opt, T_max=3, start_in_burst=False, eta_min=0.1, patience=0)
    assert opt.param_groups[0]["lr"] == 0.1
    sched.step(0.5)
    sched.step(0.4)  # no improvement with patience 0: burst
    assert opt.param_groups[0]["lr"] == 1.0


def test_lr_burst_resumes_mid_burst_exactly():
    def run(split: int | None):
        opt = sgd(0.3)
        sched = LRBurst(opt, T_max=6, eta_min=0.001, patience=1, cooldown=1)
        metrics = [0.1, 0.2, 0.2, 0.2, 0.3, 0.3, 0.3, 0.3, 0.25, 0.4, 0.4, 0.4, 0.4, 0.4]
        values = []
        for i, m in enumerate(metrics):
            if i == split:
                opt_state, sched_state = load_weights_only(opt.state_dict()), load_weights_only(sched.state_dict())
                opt = sgd(0.3)
                opt.load_state_dict(opt_state)
                sched = LRBurst(opt, T_max=6, eta_min=0.001, patience=1, cooldown=1)
                sched.load_state_dict(sched_state)
            opt.step()
            sched.step(m)
            values.append(opt.param_groups[0]["lr"])
        return values, sched.num_bursts

    straight, bursts = run(None)
    assert bursts >= 2
    for split in (3, 5, 9):
        assert run(split) == (straight, bursts)


def test_lr_burst_load_writes_the_resumed_value_in_any_order():
    opt = sgd(0.1)
    sched = LRBurst(opt, T_max=10)
    for _ in range(3):
        opt.step()
        sched.step()
    opt_state, sched_state = opt.state_dict(), sched.state_dict()
    expected = opt.param_groups[0]["lr"]
    fresh = sgd(0.1)
    fresh.load_state_dict(opt_state)  # optimizer first, scheduler built after: writes the peak...
    resumed = LRBurst(fresh, T_max=10)
    resumed.load_state_dict(sched_state)  # ...and loading puts the resumed value back
    assert fresh.param_groups[0]["lr"] == expected == cosine(0.0, 0.1, 3, 10)

    opt = sgd(0.1)
    sched = AdamNXLR(opt, total_steps=20)
    for _ in range(5):
        opt.step()
        sched.step()
    fresh = sgd(0.1)
    fresh.load_state_dict(opt.state_dict())
    resumed = AdamNXLR(fresh, total_steps=20)
    resumed.load_state_dict(sched.state_dict())
    assert fresh.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == pytest.approx(0.1 * authors_ratio(5, 20))


def test_lr_burst_refuses_a_key_the_optimizer_schedules_itself():
    opt = Adaburst([torch.zeros(1, requires_grad=True)], total_steps=10)
    with pytest.raises(ValueError, match="schedules 'burst_lr' itself"):
        LRBurst(opt, T_max=4, key="burst_lr")


def test_lr_burst_drives_adaburst_burst_lr_and_tensor_lr():
    p = torch.zeros(3, requires_grad=True)
    opt = Adaburst([p], lr=1e-3, variant="adamw_sgdm", burst_max=2.0, burst_start=False, total_steps=10)
    sched = LRBurst(opt, T_max=4, key="burst_lr")
    for k in range(6):
        assert opt.param_groups[0]["burst_lr"] == pytest.approx(cosine(0.0, 2.0, k, 4), abs=1e-15)
        p.grad = torch.ones(3)
        opt.step()
        sched.step()
    # A tensor lr stays the same tensor (compiled steps do not recompile on a new Python float).
    lr = torch.tensor(0.5)
    opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=lr)
    sched = LRBurst(opt, T_max=4)
    sched.step()
    assert opt.param_groups[0]["lr"] is lr
    assert lr.item() == pytest.approx(cosine(0.0, 0.5, 1, 4))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"T_max": 0}, "T_max"),
        ({"T_max": 2.5}, "T_max"),
        ({"T_max": 5, "patience": -1}, "patience"),
        ({"T_max": 5, "mode": "up"}, "mode"),
        ({"T_max": 5, "threshold_mode": "pct"}, "threshold_mode"),
        ({"T_max": 5, "threshold": -1.0}, "threshold"),
        ({"T_max": 5, "cooldown": -2}, "cooldown"),
        ({"T_max": 5, "eta_min": 0.5}, "eta_min"),
        ({"T_max": 5, "eta_min": [0.0, 0.0]}, "eta_min"),
        ({"T_max": 5, "key": "momentum_x"}, "key"),
    ],
)
def test_lr_burst_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LRBurst(sgd(0.1), **kwargs)


# --- Adaburst's built-in burst ------------------------------------------------------------------------


@pytest.mark.parametrize("unit", ["step", "epoch"])
def test_adaburst_builtin_burst_follows_the_closed_form(unit):
    p = torch.zeros(2, requires_grad=True)
    T, steps_per_epoch = 4, 3
    opt = Adaburst(
        [p],
        burst_T_max=T,
        burst_unit=unit,
        burst_max=1.5,
        burst_min=0.1,
        burst_trigger="metric_plateau",
        burst_patience=0,
    )
    accuracies = [0.1, 0.2, 0.3, 0.3, 0.4, 0.5, 0.6, 0.7]
    k, seen, expected = 0, [], []
    for acc in accuracies:
        for _ in range(steps_per_epoch):
            p.grad = torch.ones(2)
            opt.step()
            seen.append(opt.param_groups[0]["burst_lr"])
            expected.append(cosine(0.1, 1.5, k, T))
            if unit == "step":
                k += 1
        burst = opt.epoch_end(acc)
        assert burst == (acc == 0.3 and opt.burst.num_bursts == 1)
        k = 0 if burst else (k + 1 if unit == "epoch" else k)
    assert seen == pytest.approx(expected, rel=1e-15)


def test_adaburst_resumes_mid_burst_exactly():
    def run(split: int | None):
        torch.manual_seed(0)
        p = torch.randn(5, requires_grad=True)
        make = lambda params: Adaburst(  # noqa: E731
            params, lr=1e-2, burst_T_max=5, burst_trigger="metric_plateau", burst_patience=1
        )
        opt = make([p])
        for k in range(12):
            if k == split:
                state = load_weights_only(opt.state_dict())
                p = p.detach().clone().requires_grad_()
                opt = make([p])
                opt.load_state_dict(state)
            p.grad = torch.sin(p.detach() * (k + 1))
            opt.step()
            opt.epoch_end([0.5, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7, 0.8, 0.8, 0.8, 0.8, 0.9][k])
        return p.detach(), opt.burst.state_dict()

    straight = run(None)
    assert straight[1]["num_bursts"] >= 2
    for split in (2, 5, 9):
        resumed = run(split)
        assert torch.equal(resumed[0], straight[0])
        assert resumed[1] == straight[1]


# --- AdamNX's schedule --------------------------------------------------------------------------------


def authors_ratio(b: int, total: int, r_min: float = 0.01, fraction: float = 0.6) -> float:
    """MyLRLambda of the AdamNX training code, restated."""
    t1 = int(fraction * total)
    return 1 + (r_min - 1) * b / t1 if b <= t1 else r_min


def test_adamnx_schedule_matches_the_authors_lambda():
    total = 250
    opt = sgd(1e-2)
    sched = AdamNXLR(opt, total_steps=total)
    for b in range(total + 10):
        assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 * authors_ratio(b, total), rel=1e-13)
        opt.step()
        sched.step()


def test_adamnx_schedule_with_warmup():
    total, warm = 100, 10
    t1 = 60
    for b in range(total):
        r = adamnx_lr_ratio(b, total_steps=total, warmup_steps=warm, warmup_start_ratio=0.1)
        if b < warm:
            assert r == pytest.approx(0.1 + 0.9 * b / warm)
        elif b <= t1:
            assert r == pytest.approx(1 + (0.01 - 1) * (b - warm) / (t1 - warm))
        else:
            assert r == 0.01


def test_adamnx_schedule_resumes_from_state_dict():
    total = 50
    opt = sgd(0.2)
    sched = AdamNXLR(opt, total_steps=total, warmup_steps=5)
    for _ in range(17):
        opt.step()
        sched.step()
    state = load_weights_only(sched.state_dict())
    opt2 = sgd(0.2)
    opt2.load_state_dict(opt.state_dict())
    sched2 = AdamNXLR(opt2, total_steps=total, warmup_steps=5)
    sched2.load_state_dict(state)
    for _ in range(20):
        opt.step()
        sched.step()
        opt2.step()
        sched2.step()
        assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"total_steps": 0}, "total_steps"),
        ({"total_steps": 10, "decay_fraction": 0.0}, "decay_fraction"),
        ({"total_steps": 10, "min_ratio": 1.5}, "min_ratio"),
        ({"total_steps": 10, "warmup_steps": 7}, "warmup_steps"),
        ({"total_steps": 10, "warmup_start_ratio": -0.1}, "warmup_start_ratio"),
    ],
)
def test_adamnx_schedule_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdamNXLR(sgd(0.1), **kwargs)


# --- SGDR -------------------------------------------------------------------------------------------------


def paper_sgdr(t: float, T_0: float, T_mult: float, eta_max: float, eta_min: float = 0.0, decay: float = 1.0):
    """The SGDR paper's formula, cycle by cycle."""
    i, start, length = 0, 0.0, T_0
    while t >= start + length:
        start, length, i = start + length, length * T_mult, i + 1
    return eta_min + 0.5 * (eta_max * decay**i - eta_min) * (1 + math.cos(math.pi * (t - start) / length))


@pytest.mark.parametrize("T_0,T_mult", [(2, 1), (1, 2), (3, 2)])
def test_sgdr_matches_torch_warm_restarts_stepped_per_batch(T_0, T_mult):
    per_epoch = 7
    ours_opt, torch_opt = sgd(0.1), sgd(0.1)
    ours = SGDR(ours_opt, T_0=T_0, T_mult=T_mult, eta_min=0.001, steps_per_epoch=per_epoch)
    ref = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(torch_opt, T_0=T_0, T_mult=T_mult, eta_min=0.001)
    for b in range(per_epoch * 15):
        assert ours_opt.param_groups[0]["lr"] == pytest.approx(torch_opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15)
        ours_opt.step()
        torch_opt.step()
        ours.step()
        ref.step((b + 1) / per_epoch)  # torch's documented way to anneal per batch


@pytest.mark.parametrize("T_0,T_mult,decay", [(1.5, 1.5, 1.0), (2.0, 1.3, 0.7), (4.0, 1.0, 0.5)])
def test_sgdr_real_t_mult_and_peak_decay_follow_the_paper(T_0, T_mult, decay):
    per_epoch = 10
    opt = sgd(0.2)
    sched = SGDR(opt, T_0=T_0, T_mult=T_mult, decay=decay, steps_per_epoch=per_epoch)
    for b in range(300):
        expected = paper_sgdr(b / per_epoch, T_0, T_mult, 0.2, decay=decay)
        assert opt.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12, abs=1e-15)
        opt.step()
        sched.step()
    assert sched.cycle() >= 3


def test_sgdr_warmup_then_cycles():
    opt = sgd(1.0)
    sched = SGDR(opt, T_0=10, warmup=5, warmup_start=0.1)
    values = []
    for _ in range(30):
        values.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert values[:5] == pytest.approx([0.1 + 0.9 * k / 5 for k in range(5)])
    assert values[5:] == pytest.approx([paper_sgdr(k, 10, 1, 1.0) for k in range(25)], abs=1e-15)


@pytest.mark.parametrize("split", [1, 13, 29])
def test_sgdr_resumes_at_any_step(split):
    def make(opt):
        return SGDR(opt, T_0=1.5, T_mult=1.7, eta_min=0.01, decay=0.8, warmup=0.5, steps_per_epoch=6)

    opt = sgd(0.3)
    sched = make(opt)
    straight = []
    for _ in range(60):
        opt.step()
        sched.step()
        straight.append(opt.param_groups[0]["lr"])
    opt = sgd(0.3)
    sched = make(opt)
    resumed = []
    for step in range(60):
        if step == split:
            opt_state, sched_state = load_weights_only(opt.state_dict()), load_weights_only(sched.state_dict())
            opt = sgd(0.3)
            opt.load_state_dict(opt_state)
            sched = make(opt)  # built after the optimizer was loaded: it writes its start value...
            sched.load_state_dict(sched_state)  # ...and loading puts the resumed value back
        opt.step()
        sched.step()
        resumed.append(opt.param_groups[0]["lr"])
    assert resumed == straight


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"T_0": 0}, "T_0"),
        ({"T_0": 5, "T_mult": 0.5}, "T_mult"),
        ({"T_0": 5, "eta_min": -1.0}, "eta_min"),
        ({"T_0": 5, "eta_min": 0.5}, "eta_min"),
        ({"T_0": 5, "decay": 0.0}, "decay"),
        ({"T_0": 5, "warmup": -1}, "warmup"),
        ({"T_0": 5, "steps_per_epoch": 0}, "steps_per_epoch"),
    ],
)
def test_sgdr_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=f"Invalid {match}"):
        SGDR(sgd(0.1), **kwargs)
