"""A param group's step counters as views of one buffer: one ``add_`` and one ``tolist()`` a step.

Every parameter's state keeps its step count as ``state[p]["step"]``, a float32 0-d CPU tensor, as torch's own
optimizers do (state_dicts, checkpoints and user code read and write it there). Advancing 62 such tensors with
``torch._foreach_add_`` and reading each with ``.item()`` costs ≈ 10 µs a tensor on a CPU, a share of a ResNet-18
step that a compiled step notices. So the engine stacks a group's counters into one buffer and points each
``state[p]["step"]`` at its slice: the values and the state_dict are the same, a step adds 1 to the buffer once.

The buffer holds the tensors gathered in one step (those with a gradient). When the gathered counters are not its
views, in the same order (a parameter without a gradient this step, a state replaced by ``load_state_dict`` or by a
user), the engine remakes it from them, values included, or advances them one by one where they cannot share a
buffer (a counter on another device, of another dtype, or not 0-d).
"""

from __future__ import annotations

from operator import is_

import torch
from torch import Tensor


class StepCounters:
    """The step counters of some parameters, as views of one float32 buffer (see the module docstring)."""

    def __init__(self, states: list[dict[str, Tensor]]) -> None:
        """Stack the counters of ``states`` (each a parameter's state) and point each state's ``"step"`` at its view."""
        self.buffer = torch.stack([state["step"] for state in states])
        self.views = list(self.buffer.unbind(0))
        for state, view in zip(states, self.views):
            state["step"] = view

    @staticmethod
    def can_hold(steps: list[Tensor]) -> bool:
        """Whether these counters can share one buffer: float32 0-d CPU tensors (as ``_init_state`` makes them)."""
        return all(
            isinstance(t, Tensor) and t.dim() == 0 and t.dtype == torch.float32 and t.is_cpu and not t.requires_grad
            for t in steps
        )

    def counts(self, steps: list[Tensor]) -> bool:
        """Whether ``steps`` are this buffer's views, in order (then :meth:`advance` steps exactly them)."""
        return len(steps) == len(self.views) and all(map(is_, steps, self.views))

    def advance(self) -> list[float]:
        """Add one to every counter; their new values."""
        self.buffer.add_(1)
        return self.buffer.tolist()
