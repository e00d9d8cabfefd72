"""A param group's step counters as views of one buffer (optarena.optim.step_counters), on the list path.

The oracle is torch's own AdamW, which keeps one counter tensor per parameter and advances each on its own.
"""

from __future__ import annotations

import io

import pytest
import torch

import optarena

SHAPES = [(6, 5), (5,), (3, 2, 2), (1,), (7,)]


def _params(seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator, dtype=torch.float64, requires_grad=True) for shape in SHAPES]


def _grads(step: int, skip: set[int]) -> list[torch.Tensor | None]:
    generator = torch.Generator().manual_seed(100 + step)
    return [None if i in skip else torch.randn(shape, generator=generator, dtype=torch.float64)
            for i, shape in enumerate(SHAPES)]  # fmt: skip


def _step_all(runs: list[tuple[torch.optim.Optimizer, list[torch.Tensor]]], steps: tuple[int, ...]) -> None:
    """Every optimizer steps on the same gradients (every parameter has one)."""
    for step in steps:
        for opt, params in runs:
            for p, g in zip(params, _grads(step, set())):
                p.grad = g
            opt.step()


def _run_both(skips: list[set[int]], *, foreach: bool) -> tuple[optarena.AdamW, list, torch.optim.AdamW, list]:
    ours, theirs = _params(), _params()
    opt = optarena.AdamW(ours, lr=0.1, weight_decay=0.01, foreach=foreach, flat=False)
    ref = torch.optim.AdamW(theirs, lr=0.1, weight_decay=0.01, foreach=False)
    for step, skip in enumerate(skips):
        for params in (ours, theirs):
            for p, g in zip(params, _grads(step, skip)):
                p.grad = g
        opt.step()
        ref.step()
    return opt, ours, ref, theirs


@pytest.mark.parametrize("foreach", [True, False])
def test_counters_share_one_buffer_and_count_like_torchs_per_parameter_counters(foreach):
    skips = [set(), set(), {1, 3}, {1}, set(), {0}, set()]  # some parameters without a gradient in some steps
    opt, ours, ref, theirs = _run_both(skips, foreach=foreach)
    assert [opt.state[p]["step"].item() for p in ours] == [ref.state[p]["step"].item() for p in theirs]
    assert [opt.state[p]["step"].item() for p in ours] == [6.0, 5.0, 7.0, 6.0, 7.0]
    for a, b in zip(ours, theirs):  # the bias corrections followed each parameter's own count
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    (counters,) = opt._counters.values()
    assert {opt.state[p]["step"].untyped_storage().data_ptr() for p in ours} == {
        counters.buffer.untyped_storage().data_ptr()
    }
    assert all(opt.state[p]["step"].dtype == torch.float32 and opt.state[p]["step"].dim() == 0 for p in ours)


def test_a_replaced_or_reloaded_counter_is_honoured_and_the_state_dict_round_trips():
    opt, ours, ref, theirs = _run_both([set(), set()], foreach=True)
    for p, q in zip(ours, theirs):  # a user's new counters: stacked into a new buffer at the next step
        opt.state[p]["step"] = torch.tensor(10.0)
        ref.state[q]["step"] = torch.tensor(10.0)
    _step_all([(opt, ours), (ref, theirs)], (2, 3))
    assert [opt.state[p]["step"].item() for p in ours] == [12.0] * len(ours)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)

    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    clone_params = [p.detach().clone().requires_grad_() for p in ours]
    clone = optarena.AdamW(clone_params, lr=0.1, weight_decay=0.01, flat=False)
    buffer.seek(0)
    clone.load_state_dict(torch.load(buffer))
    _step_all([(opt, ours), (clone, clone_params)], (4, 5))
    for a, b in zip(ours, clone_params):
        assert torch.equal(a, b)
    assert [clone.state[p]["step"].item() for p in clone_params] == [14.0] * len(ours)
    (counters,) = clone._counters.values()  # the loaded counters went into one buffer again
    assert clone.state[clone_params[0]]["step"].untyped_storage().data_ptr() == counters.buffer.data_ptr()
    for p in clone_params:  # counters that cannot share the float32 buffer are advanced one by one
        clone.state[p]["step"] = torch.tensor(14.0, dtype=torch.float64)
    clone.step()
    assert not clone._counters
    assert [clone.state[p]["step"].item() for p in clone_params] == [15.0] * len(ours)
