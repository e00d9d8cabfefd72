"""The learning-rate burst, written once: a plateau trigger and a restartable cosine clock.

A neutral module: the optimizers (``optarena.optim``) and the schedules (``optarena.schedules``) both
use it, and it imports neither.

Adaburst (seed 000, Algorithm 3 "Lrburst") anneals a rate along a cosine and *restarts* the
annealing when a monitored metric — training accuracy in the paper — stops improving. Both
:class:`~optarena.schedules.lr_burst.LRBurst` (a scheduler for any optimizer) and
:class:`~optarena.optim.adaburst.Adaburst` (its built-in burst) use the two classes here.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from optarena.validation import check_choice, check_int, check_range

PlateauMode = Literal["min", "max"]
ThresholdMode = Literal["rel", "abs"]
MetricReduce = Literal["mean", "max", "min", "none"]
METRIC_REDUCTIONS: tuple[str, ...] = ("mean", "max", "min", "none")


def agreed_metric(value: float, reduce: MetricReduce = "mean") -> float:
    """The metric every rank acts on.

    Under ``torch.distributed`` (initialized, more than one rank) each rank passes its own local
    value and all get the ``reduce`` of them (one ``all_reduce`` in float64), so the plateau test
    fires on every rank at once; with one process, or ``reduce='none'``, the value itself.
    """
    import torch
    import torch.distributed as dist

    if reduce == "none" or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([value], dtype=torch.float64, device=device)
    op = {"mean": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[reduce]
    dist.all_reduce(t, op=op)
    if reduce == "mean":
        t /= dist.get_world_size()
    return t.item()


class PlateauDetector:
    """Decides when a metric has stopped improving, with ``ReduceLROnPlateau``'s semantics.

    A value improves on the best so far when it beats it by ``threshold`` (relative or
    absolute). After more than ``patience`` consecutive epochs without improvement the
    detector fires, resets its count and ignores the next ``cooldown`` epochs. Across
    ``torch.distributed`` ranks the metric is first agreed (``reduce``: 'mean' by default).
    """

    def __init__(
        self,
        mode: PlateauMode = "max",
        patience: int = 5,
        threshold: float = 1e-4,
        threshold_mode: ThresholdMode = "rel",
        cooldown: int = 0,
        reduce: MetricReduce = "mean",
    ) -> None:
        check_choice("reduce", reduce, METRIC_REDUCTIONS)
        check_choice("mode", mode, ("min", "max"))
        check_choice("threshold_mode", threshold_mode, ("rel", "abs"))
        check_int("patience", patience, 0)
        check_int("cooldown", cooldown, 0)
        check_range("threshold", threshold, 0.0)
        self.mode = mode
        self.patience = patience
        self.threshold = float(threshold)
        self.threshold_mode = threshold_mode
        self.cooldown = cooldown
        self.reduce = reduce
        self.best = -math.inf if mode == "max" else math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def is_better(self, value: float) -> bool:
        if self.mode == "max":
            if self.threshold_mode == "rel":
                return value > self.best * (1.0 + self.threshold)
            return value > self.best + self.threshold
        if self.threshold_mode == "rel":
            return value < self.best * (1.0 - self.threshold)
        return value < self.best - self.threshold

    def update(self, value: float) -> bool:
        """Record one epoch's metric; True when the plateau condition fires.

        Under ``torch.distributed`` every rank must call this; each passes its local value and all act
        on the agreed one (:func:`agreed_metric` with ``reduce``).
        """
        value = float(value)
        if math.isnan(value):
            raise ValueError("Invalid metric: nan")
        value = agreed_metric(value, self.reduce)
        if self.is_better(value):
            self.best = value
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs during cooldown do not count
        if self.num_bad_epochs > self.patience:
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "num_bad_epochs": self.num_bad_epochs,
            "cooldown_counter": self.cooldown_counter,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.num_bad_epochs = int(state["num_bad_epochs"])
        self.cooldown_counter = int(state["cooldown_counter"])


class CosineBurst:
    """A cosine clock from 1 down to 0 over ``T_max`` ticks, restartable at any time.

    ``factor()`` is ``½(1 + cos(π·T_cur/T_max))`` while ``T_cur < T_max``; after that it is 0
    (``cyclic=False``: wait at the floor for the next trigger) or the clock wraps to 0
    (``cyclic=True``: periodic warm restarts, as the only public sketch of Adaburst does).
    ``start_in_burst=False`` starts the clock at the floor, so only a trigger starts a burst.
    """

    def __init__(
        self,
        T_max: int,
        *,
        cyclic: bool = False,
        start_in_burst: bool = True,
        plateau: PlateauDetector | None = None,
    ) -> None:
        check_int("T_max", T_max, 1)
        self.T_max = T_max
        self.cyclic = bool(cyclic)
        self.plateau = plateau if plateau is not None else PlateauDetector()
        self.T_cur = 0 if start_in_burst else T_max
        self.num_bursts = 0  # restarts caused by the trigger

    def factor(self) -> float:
        if self.T_cur >= self.T_max:
            return 0.0
        return 0.5 * (1.0 + math.cos(math.pi * self.T_cur / self.T_max))

    def value(self, low: float, high: float) -> float:
        """The annealed value between ``low`` (floor) and ``high`` (peak)."""
        return low + (high - low) * self.factor()

    def advance(self) -> None:
        """One tick of the clock."""
        self.T_cur += 1
        if self.cyclic and self.T_cur >= self.T_max:
            self.T_cur = 0
        elif self.T_cur > self.T_max:
            self.T_cur = self.T_max  # idle at the floor; keeps the state bounded

    def restart(self) -> None:
        self.T_cur = 0
        self.num_bursts += 1

    def observe(self, metric: float) -> bool:
        """Feed the monitored metric; restarts the burst and returns True on a plateau."""
        if self.plateau.update(metric):
            self.restart()
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"T_cur": self.T_cur, "num_bursts": self.num_bursts, "plateau": self.plateau.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.T_cur = int(state["T_cur"])
        self.num_bursts = int(state["num_bursts"])
        self.plateau.load_state_dict(state["plateau"])
