"""The eager step of a small CPU param group on one buffer per tensor role: horizontal fusion.

On a CPU, a ``torch._foreach_*`` op is a loop of per-tensor kernels, each with its own dispatch and iterator setup
(≈ 1.5 µs). On the models the arena trains (the Fashion-MNIST CNN: 6 tensors, 20k values) that fixed cost, times
10 ops times the tensors, is most of a step. This module runs an elementwise kernel once over all of a group's
values instead, as torch's fused optimizers do per tensor list:

* each state (``exp_avg``, ``exp_avg_sq``, ...) lives in one contiguous buffer, and ``optimizer.state[p][name]``
  is a view of its slice — state_dicts, checkpoints and user code see the same per-parameter tensors as before;
* each step copies the parameters and the (transformed) gradients into buffers of their own (one ``_foreach_copy_``
  each), runs the unchanged multi-tensor kernel on one-element lists, and copies the parameters back;
* the step counters are views of one buffer, as in every group (:mod:`optarena.optim.step_counters`).

That costs two to three extra passes over parameters and gradients, so it pays only while the group stays in a
core's cache and its tensors are small (:data:`FLAT_MAX_NUMEL`, :data:`FLAT_MAX_MEAN_NUMEL`). A group qualifies
when its optimizer's kernel is elementwise (``OptarenaOptimizer.elementwise_kernel``), every parameter has a
gradient, all share one step count, and every tensor is a contiguous, real, unsharded CPU tensor of one dtype;
otherwise the step takes the ``foreach`` path, which works on the same state views. If the state is replaced
(``load_state_dict``, a user's assignment), the buffers are rebuilt from it at the next step. Elementwise ops give
each value the same arithmetic whether it sits in one buffer or in many: the flat step equals the foreach step and
the reference loop (``tests/test_flat.py`` runs every registered optimizer with an elementwise kernel through all
three). The buffers for parameters and gradients are extra memory: 2 values per parameter (3 when a transform gives
the first moment a gradient of its own), and a kernel's temporaries span the whole group where the list path makes
them one tensor at a time: at most a few MiB by the limits above.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import is_
from typing import Any

import torch
from torch import Tensor
from torch.distributed.tensor import DTensor

#: The largest group (in values) stepped on flat buffers: 2^18 float32 values is 1 MiB a buffer, so the five to
#: six buffers of a step stay within a core's L2 cache; past that the extra copies cost memory bandwidth.
FLAT_MAX_NUMEL = 1 << 18
#: The largest mean tensor size (in values): past it the per-tensor overhead the flat step saves is a small share
#: of the step and the copies cost as much (on one thread, a 6-tensor group of 33k values a tensor stepped no faster
#: flat; compare the modes foreach and foreach-lists of benchmarks/step_time.py).
FLAT_MAX_MEAN_NUMEL = 1 << 14


class FlatGroup:
    """One param group's parameters, gradients and state on one buffer each (see the module docstring)."""

    def __init__(self, group: dict[str, Any], params: list[Tensor], states: list[list[Tensor | None]],
                 state: dict[Tensor, dict[str, Any]], keys: list[str | None]) -> None:  # fmt: skip
        """Move the group's state into buffers and point ``state[p][key]`` at views of them.

        ``keys`` names each state list's entry in ``state[p]`` (:func:`state_keys`); None: a list of Nones (a buffer
        the group does not use, as AMSGrad's off), passed to the kernel as such.
        """
        self.group = group
        self.params = list(params)
        self.shapes = tuple(tuple(p.shape) for p in params)
        self.dtype = params[0].dtype
        sizes = [p.numel() for p in params]
        self.param_flat, self.param_views = _buffer(params, sizes)
        self.grad_flat, self.grad_views = _buffer(params, sizes)
        self.m_grad: tuple[Tensor, list[Tensor]] | None = None  # made when a transform gives m its own gradient
        self.state_flat: list[Tensor | None] = []
        self.state_views: list[list[Tensor] | None] = []
        for key, tensors in zip(keys, states):
            if key is None:
                self.state_flat.append(None)
                self.state_views.append(None)
                continue
            flat = torch.cat([t.reshape(-1) for t in tensors])  # type: ignore[union-attr]
            views = [chunk.view_as(p) for chunk, p in zip(flat.split(sizes), params)]
            for p, view in zip(params, views):
                state[p][key] = view
            self.state_flat.append(flat)
            self.state_views.append(views)
        self.state = state
        self._scalars: tuple[Tensor, Any] | None = None

    def holds(self, group: dict[str, Any], params: list[Tensor], states: list[list[Tensor]]) -> bool:
        """Whether these are still the tensors the buffers were made for (the state not replaced since)."""
        if group is not self.group or len(params) != len(self.params) or not all(map(is_, params, self.params)):
            return False
        if any(p.dtype != self.dtype or not p.is_cpu for p in params) or len(states) != len(self.state_views):
            return False
        return all(
            all(t is None for t in tensors) if views is None else all(map(is_, tensors, views))
            for tensors, views in zip(states, self.state_views)
        )

    def scalars(self, values: list[float]) -> Tensor:
        """``values`` in a float64 tensor that this group keeps for them (a compiled step's hyperparameters and step
        count): writing through its numpy view costs a third of making a tensor each step."""
        if self._scalars is None or len(self._scalars[1]) != len(values):
            buffer = torch.empty(len(values), dtype=torch.float64)
            self._scalars = (buffer, buffer.numpy())
        self._scalars[1][:] = values
        return self._scalars[0]

    def load(self, grads: list[Tensor]) -> None:
        """Copy the parameters and ``grads`` into their buffers."""
        torch._foreach_copy_(self.param_views, self.params)
        torch._foreach_copy_(self.grad_views, grads)

    def store(self) -> None:
        """Copy the updated parameters back."""
        torch._foreach_copy_(self.params, self.param_views)

    def step(self, kernel: Callable[..., None], grads: list[Tensor], m_grads: list[Tensor], step: float,
             hyper: dict[str, Any]) -> None:  # fmt: skip
        """Run the multi-tensor ``kernel`` once over the whole group."""
        self.load(grads)
        flat_grads = [self.grad_flat]
        flat_m_grads = flat_grads  # the same list object: kernels skip work when the moments share a gradient
        if m_grads is not grads:
            if self.m_grad is None:
                self.m_grad = _buffer(self.params, [p.numel() for p in self.params])
            torch._foreach_copy_(self.m_grad[1], m_grads)
            flat_m_grads = [self.m_grad[0]]
        kernel([self.param_flat], flat_grads, flat_m_grads, *[[flat] for flat in self.state_flat], steps=[step],
               **hyper)  # fmt: skip
        self.store()


def qualifies(group_params: list[Tensor], params: list[Tensor], grads: list[Tensor],
              states: list[list[Tensor | None]], *, any_size: bool = False) -> bool:  # fmt: skip
    """Whether a group can be stepped on flat buffers (checked when the buffers are made).

    ``params`` are the gathered ones: every one of ``group_params``, themselves (a complex parameter is gathered as
    a real view, another object), or the group does not qualify. ``any_size``: ignore the size limits.
    """
    if len(params) != len(group_params) or any(a is not b for a, b in zip(params, group_params)):
        return False
    total = sum(p.numel() for p in params)
    if not any_size and (total > FLAT_MAX_NUMEL or total > FLAT_MAX_MEAN_NUMEL * len(params)):
        return False
    states = [tensors for tensors in states if any(t is not None for t in tensors)]
    dtype = params[0].dtype
    for i, p in enumerate(params):
        if (
            not p.is_cpu
            or p.dtype != dtype
            or p.is_complex()
            or isinstance(p, DTensor)
            or not p.is_contiguous()
            or isinstance(grads[i], DTensor)
            or any(s[i].shape != p.shape or s[i].dtype != dtype or isinstance(s[i], DTensor) for s in states)
        ):
            return False
    return True


def state_keys(params: list[Tensor], states: list[list[Tensor | None]],
               state: dict[Tensor, dict[str, Any]]) -> list[str | None] | None:  # fmt: skip
    """The key of each state list in ``state[p]`` (None for a list of Nones), or None if a list is not one key's
    tensors (found by identity: the gathered lists hold the state's own tensors)."""
    keys: list[str | None] = []
    for tensors in states:
        if all(t is None for t in tensors):
            keys.append(None)
            continue
        first = state[params[0]]
        key = next((k for k, v in first.items() if v is tensors[0]), None)
        if key is None or any(state[p].get(key) is not t for p, t in zip(params, tensors)):
            return None
        keys.append(key)
    return keys


def _buffer(params: list[Tensor], sizes: list[int]) -> tuple[Tensor, list[Tensor]]:
    flat = torch.empty(sum(sizes), dtype=params[0].dtype, device=params[0].device)
    return flat, [chunk.view_as(p) for chunk, p in zip(flat.split(sizes), params)]
