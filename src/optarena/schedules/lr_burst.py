"""LRBurst: the learning-rate burst as a ``torch.optim.lr_scheduler.LRScheduler``.

Cosine annealing from the group's initial value (``eta_max``) to ``eta_min`` over ``T_max``
ticks, restarted when a monitored metric stops improving for ``patience`` epochs (mode,
threshold, cooldown as ``ReduceLROnPlateau``), optionally cyclic. It drives any param-group
key: ``'lr'`` of any optimizer (default), or e.g. ``'burst_lr'`` of an Adaburst whose built-in
burst is off (``variant='adamw_sgdm'``).

Two ways to count ``T_max``:

* in epochs — once per epoch: ``scheduler.step(train_accuracy)``;
* in steps — every batch: ``scheduler.step()``; once per epoch: ``scheduler.observe(train_accuracy)``.
"""

from __future__ import annotations

from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from optarena.burst import CosineBurst, PlateauDetector


class LRBurst(LRScheduler):
    """Cosine annealing restarted on a plateau of a monitored metric.

    Args:
        optimizer: the optimizer whose groups are driven.
        T_max: length of one annealing, in calls of :meth:`step` (>= 1).
        eta_min: floor of the annealing (a number or one per group; default 0).
        mode: ``'max'`` (an accuracy, default) or ``'min'`` (a loss).
        patience: epochs without improvement before a restart (default 5).
        threshold, threshold_mode, cooldown: as ``ReduceLROnPlateau``.
        metric_reduce: under ``torch.distributed``, how the ranks' metrics are agreed before the
            plateau test: 'mean' (default), 'max', 'min', or 'none' (each rank acts on its own).
        cyclic: also restart every ``T_max`` ticks (warm restarts).
        start_in_burst: begin at the peak (default) or wait at ``eta_min`` for a trigger.
        key: the param-group key driven (default ``'lr'``); its value when the scheduler is
            built is the peak ``eta_max``, kept in the group as ``'initial_<key>'``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        T_max: int,
        eta_min: float | list[float] = 0.0,
        *,
        mode: str = "max",
        patience: int = 5,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        metric_reduce: str = "mean",
        cyclic: bool = False,
        start_in_burst: bool = True,
        key: str = "lr",
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        for i, group in enumerate(optimizer.param_groups):
            if key not in group:
                raise ValueError(f"Invalid key: {key!r} is not a hyperparameter of param group {i}")
        if key in getattr(optimizer, "self_scheduled_keys", ()):
            raise ValueError(
                f"Invalid key: {type(optimizer).__name__} schedules {key!r} itself and would overwrite this "
                "scheduler's values (for Adaburst, use variant='adamw_sgdm' to hand burst_lr to a scheduler)"
            )
        n = len(optimizer.param_groups)
        eta_mins = list(eta_min) if isinstance(eta_min, (list, tuple)) else [eta_min] * n
        if len(eta_mins) != n:
            raise ValueError(f"Invalid eta_min: expected {n} values (one per param group), got {len(eta_mins)}")
        self.optimizer = optimizer
        self.key = key
        self.base_lrs = [
            float(group.setdefault(f"initial_{key}", float(group[key]))) for group in optimizer.param_groups
        ]
        for i, (low, high) in enumerate(zip(eta_mins, self.base_lrs)):
            if not 0.0 <= float(low) <= high:
                raise ValueError(
                    f"Invalid eta_min[{i}]: {low!r}; expected a value in [0, {high:g}] (the group's {key})"
                )
        self.eta_mins = [float(v) for v in eta_mins]
        self.burst = CosineBurst(
            T_max,
            cyclic=cyclic,
            start_in_burst=start_in_burst,
            plateau=PlateauDetector(mode, patience, threshold, threshold_mode, cooldown, metric_reduce),  # type: ignore[arg-type]
        )
        self.last_epoch = 0
        self._step_count = 1
        self._write()

    def get_lr(self) -> list[float]:  # type: ignore[override]
        """The values for the current position of the clock, one per group."""
        return [self.burst.value(low, high) for low, high in zip(self.eta_mins, self.base_lrs)]

    def _write(self) -> None:
        values = self.get_lr()
        for group, value in zip(self.optimizer.param_groups, values):
            current = group[self.key]
            if hasattr(current, "fill_"):
                current.fill_(value)  # keep a tensor hyperparameter a tensor (no recompiles)
            else:
                group[self.key] = value
        self._last_lr = values

    def observe(self, metric: float) -> bool:
        """Report the monitored metric (once per epoch); restarts and returns True on a plateau."""
        burst = self.burst.observe(float(metric))
        if burst:
            self._write()
        return burst

    def step(self, metric: float | None = None) -> bool:  # type: ignore[override]
        """One tick; with ``metric``, first checks the plateau (a restart replaces the tick).

        Returns True when this call restarted a burst.
        """
        self._step_count += 1
        self.last_epoch += 1
        burst = metric is not None and self.burst.observe(float(metric))
        if not burst:
            self.burst.advance()
        self._write()
        return burst

    @property
    def num_bursts(self) -> int:
        """Restarts caused by the trigger so far."""
        return self.burst.num_bursts

    def state_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "base_lrs": list(self.base_lrs),
            "eta_mins": list(self.eta_mins),
            "last_epoch": self.last_epoch,
            "_step_count": self._step_count,
            "T_max": self.burst.T_max,
            "cyclic": self.burst.cyclic,
            "burst": self.burst.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict["key"] != self.key or state_dict["T_max"] != self.burst.T_max:
            raise ValueError(
                f"Invalid state_dict: it drives {state_dict['key']!r} with T_max={state_dict['T_max']}, "
                f"this scheduler drives {self.key!r} with T_max={self.burst.T_max}"
            )
        self.base_lrs = [float(v) for v in state_dict["base_lrs"]]
        self.eta_mins = [float(v) for v in state_dict["eta_mins"]]
        self.last_epoch = int(state_dict["last_epoch"])
        self._step_count = int(state_dict["_step_count"])
        self.burst.cyclic = bool(state_dict["cyclic"])
        self.burst.load_state_dict(state_dict["burst"])
        self._write()  # the groups get the resumed values whatever order things were loaded in
