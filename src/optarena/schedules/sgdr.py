"""SGDR: cosine annealing with warm restarts (Loshchilov & Hutter, ICLR 2017), as a closed form.

    η = η_min + ½(η_max^i − η_min)(1 + cos(π·T_cur / T_i)),    T_i = T_0·T_mult^i,   η_max^i = η_max·decay^i

``T_cur`` is the time since the last restart, *fractional*: with ``steps_per_epoch`` set, each
``step()`` (one batch) advances it by ``1/steps_per_epoch`` epochs, as the paper and the authors'
code anneal per batch with restarts on epoch boundaries. Unlike torch's
``CosineAnnealingWarmRestarts`` it takes any real ``T_0 > 0`` and ``T_mult ≥ 1``, an optional
linear warm-up, a per-cycle decay of the peak, and it resumes exactly from its ``state_dict``:
every value is computed from the step count alone.
"""

from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from optarena.validation import check_range


def sgdr_position(t: float, T_0: float, T_mult: float) -> tuple[int, float, float]:
    """(cycle index i, T_cur, T_i) at time ``t ≥ 0`` since the first cycle began."""
    cycle, start, length = 0, 0.0, T_0
    # Cycles are few (they grow geometrically, or t/T_0 of them when T_mult = 1): walk them.
    if T_mult == 1.0:
        cycle = int(t // T_0)
        return cycle, t - cycle * T_0, T_0
    while t >= start + length:
        start += length
        length *= T_mult
        cycle += 1
    return cycle, t - start, length


class SGDR(LRScheduler):
    """Cosine annealing with warm restarts.

    Args:
        optimizer: the optimizer whose ``lr`` is scheduled; each group's initial lr is its η_max.
        T_0: length of the first cycle (> 0), in epochs if ``steps_per_epoch`` is given, else in
            calls of :meth:`step`.
        T_mult: growth factor of the cycle length, any real ≥ 1 (default 1).
        eta_min: the floor η_min (default 0).
        decay: the peak of cycle i is η_max·decay^i, decay in (0, 1] (default 1: no decay).
        warmup: length of a linear warm-up before the first cycle, in the same unit as ``T_0``
            (default 0).
        warmup_start: the lr the warm-up starts from (default ``eta_min``).
        steps_per_epoch: batches per epoch; ``step()`` is then called once per batch and
            progresses by a fraction of an epoch (default None: one unit per ``step()``).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        T_0: float,
        T_mult: float = 1.0,
        eta_min: float = 0.0,
        *,
        decay: float = 1.0,
        warmup: float = 0.0,
        warmup_start: float | None = None,
        steps_per_epoch: int | None = None,
        last_epoch: int = -1,
    ) -> None:
        check_range("T_0", T_0, 0.0, low_open=True)
        check_range("T_mult", T_mult, 1.0)
        check_range("eta_min", eta_min, 0.0)
        check_range("decay", decay, 0.0, 1.0, low_open=True)
        check_range("warmup", warmup, 0.0)
        if warmup_start is not None:
            check_range("warmup_start", warmup_start, 0.0)
        if steps_per_epoch is not None and (
            isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) or steps_per_epoch < 1
        ):
            raise ValueError(f"Invalid steps_per_epoch: {steps_per_epoch!r}; expected None or an integer >= 1")
        for i, group in enumerate(optimizer.param_groups):
            peak = float(group.get("initial_lr", group["lr"]))
            if peak < eta_min:
                raise ValueError(f"Invalid eta_min: {eta_min!r}; expected a value in [0, {peak:g}] (group {i}'s lr)")
        self.T_0 = float(T_0)
        self.T_mult = float(T_mult)
        self.eta_min = float(eta_min)
        self.decay = float(decay)
        self.warmup = float(warmup)
        self.warmup_start = self.eta_min if warmup_start is None else float(warmup_start)
        self.steps_per_epoch = steps_per_epoch
        super().__init__(optimizer, last_epoch)

    def time(self) -> float:
        """Elapsed time, in the unit of ``T_0``, after ``last_epoch`` calls of :meth:`step`."""
        return self.last_epoch / self.steps_per_epoch if self.steps_per_epoch else float(self.last_epoch)

    def cycle(self) -> int:
        """The current cycle (0-based; -1 during the warm-up)."""
        t = self.time()
        if t < self.warmup:
            return -1
        return sgdr_position(t - self.warmup, self.T_0, self.T_mult)[0]

    def lr_at(self, base_lr: float) -> float:
        t = self.time()
        if t < self.warmup:
            return self.warmup_start + (base_lr - self.warmup_start) * t / self.warmup
        i, t_cur, t_i = sgdr_position(t - self.warmup, self.T_0, self.T_mult)
        peak = base_lr * self.decay**i
        return self.eta_min + 0.5 * (peak - self.eta_min) * (1.0 + math.cos(math.pi * t_cur / t_i))

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return [self.lr_at(float(base)) for base in self.base_lrs]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        # the groups get the resumed rates whatever order things were loaded in
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            if hasattr(group["lr"], "fill_"):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        self._last_lr = self.get_lr()
