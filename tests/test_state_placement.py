"""Large CPU state tensors start where their parameter starts within a page (base.zeros_state): what makes an
elementwise step's streams keep out of each other's way (docs/performance.md, "Where the tensors sit")."""

from __future__ import annotations

import io

import pytest
import torch

from optarena.optim import create_optimizer, list_optimizers
from optarena.optim.base import PLACED_STATE_MIN_BYTES, OptarenaOptimizer, zeros_state
from optarena.optim.registry import get_optimizer_info
from tests.helpers import build

PAGE = 4096


def large(dtype: torch.dtype = torch.float32) -> tuple[int, int]:
    """A shape just over the placement threshold in ``dtype``, of a byte size that is not a page multiple."""
    return (PLACED_STATE_MIN_BYTES // torch.empty((), dtype=dtype).element_size() // 64 + 3, 64)


LARGE = large()


def at_offset(shape: tuple[int, ...], offset: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A random tensor of ``shape`` whose first element sits ``offset`` bytes past a page boundary."""
    numel = torch.Size(shape).numel()
    size = torch.empty((), dtype=dtype).element_size()
    buffer = torch.empty(numel + PAGE // size, dtype=dtype)
    start = (offset - buffer.data_ptr()) % PAGE // size
    out = buffer[start : start + numel].view(shape)
    out.copy_(torch.randn(shape, dtype=dtype))
    return out


@pytest.mark.parametrize("offset", [0, 64, 1216, 4032])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_a_large_state_starts_where_its_parameter_starts_in_a_page(offset, dtype):
    p = torch.nn.Parameter(at_offset(large(dtype), offset, dtype))
    state = zeros_state(p)
    assert state.data_ptr() % PAGE == p.data_ptr() % PAGE == offset
    assert (state.shape, state.stride(), state.dtype, state.device) == (p.shape, p.stride(), p.dtype, p.device)
    assert not state.any()
    assert state.untyped_storage().data_ptr() != p.untyped_storage().data_ptr()
    assert state.untyped_storage().nbytes() - state.numel() * state.element_size() < PAGE  # at most a page more


def test_small_non_contiguous_and_subclass_parameters_get_a_plain_zeros_like():
    small = torch.randn(100, 10)
    transposed = torch.randn(64, LARGE[0]).t()  # large, not contiguous
    for p in (small, transposed):
        state = zeros_state(p)
        assert state.stride() == p.stride() and not state.any()
        assert state.untyped_storage().nbytes() == state.numel() * state.element_size()

    class Marked(torch.Tensor):
        pass

    marked = torch.randn(LARGE).as_subclass(Marked)
    state = zeros_state(marked)
    assert type(state) is Marked and state.untyped_storage().nbytes() == state.numel() * state.element_size()


ENGINE = [n for n in list_optimizers() if issubclass(get_optimizer_info(n).cls, OptarenaOptimizer)]


@pytest.mark.parametrize("name", ENGINE)
def test_every_engine_optimizers_large_states_start_where_the_parameter_starts(name):
    """Each engine optimizer's states of a parameter's shape, after a step, begin at the parameter's page offset
    (AdaBelief's amsgrad and AdaBound's amsbound maxima, made on first use, too)."""
    options = {"adabelief": {"amsgrad": True}, "adabound": {"amsbound": True}}.get(name, {})
    p = torch.nn.Parameter(at_offset(LARGE, 1216))
    optimizer = build([p], name, **options)
    p.grad = torch.randn_like(p)
    optimizer.step()
    states = {k: v for k, v in optimizer.state[p].items() if isinstance(v, torch.Tensor) and v.shape == p.shape}
    assert states, f"{name} keeps no state of its parameter's shape"
    assert {k: v.data_ptr() % PAGE for k, v in states.items()} == dict.fromkeys(states, 1216)
    if options:
        assert len(states) == 3  # the maximum too


def test_placed_states_round_trip_through_a_saved_state_dict_and_continue_identically():
    """A state_dict with placed states saves and loads (torch.save); the loaded large states start where their
    parameter starts within a page, as a fresh run's, with the saved values; and the loaded optimizer's next steps
    equal the original's."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(at_offset(LARGE, 64)), torch.nn.Parameter(torch.randn(7))]
    twins = [torch.nn.Parameter(at_offset(LARGE, 1216)), torch.nn.Parameter(torch.randn(7))]
    optimizer = create_optimizer(params, "adan", lr=1e-2)
    for _ in range(2):
        for p in params:
            p.grad = torch.randn_like(p)
        optimizer.step()
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    for twin, p in zip(twins, params):
        twin.data.copy_(p.detach())
    loaded = create_optimizer(twins, "adan", lr=1e-2)
    saved = torch.load(buffer, weights_only=True)
    loaded.load_state_dict(saved)
    large_states = {k: v for k, v in loaded.state[twins[0]].items() if v.shape == LARGE}
    assert len(large_states) == 4  # Adan's moments, previous gradient and squared moment
    for key, value in large_states.items():
        assert value.data_ptr() % PAGE == 1216, key
        torch.testing.assert_close(value, optimizer.state[params[0]][key], rtol=0, atol=0)
    assert saved["state"][0]["exp_avg"].data_ptr() % PAGE != 1216  # elsewhere as loaded: the placement moved it
    for _ in range(2):
        grads = [torch.randn_like(p) for p in params]
        for p, t, g in zip(params, twins, grads):
            p.grad, t.grad = g, g.clone()
        optimizer.step()
        loaded.step()
    for p, t in zip(params, twins):
        torch.testing.assert_close(p.detach(), t.detach(), rtol=0, atol=0)


def test_the_state_is_made_beside_its_parameter_whatever_the_default_device():
    """Under another default device (``torch.device(...)`` as a context), a CPU parameter's state is still a CPU
    tensor at the parameter's page offset."""
    p = torch.nn.Parameter(at_offset(LARGE, 1216))
    with torch.device("meta"):
        state = zeros_state(p)
    assert state.device == p.device and state.data_ptr() % PAGE == 1216 and not state.any()
