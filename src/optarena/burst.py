"""The learning-rate burst, written once: two triggers and a restartable cosine clock.

A neutral module: the optimizers (``optarena.optim``) and the schedules (``optarena.schedules``) both
use it, and it imports neither.

Adaburst (seed 000, Algorithm 3 "Lrburst") anneals a rate along a cosine and *restarts* the
annealing when training stalls. :class:`CosineBurst` is the clock; a trigger decides when to restart:

* :class:`PlateauDetector` — the paper's: a monitored metric (training accuracy) has not improved for
  more than ``patience`` epochs (``ReduceLROnPlateau``'s semantics);
* :class:`LossTrendDetector` — no patience to tune: the per-step training loss has stopped falling
  over a window (its robust Theil–Sen slope projects a fall below a fraction of the loss's scale).

:class:`~optarena.schedules.lr_burst.LRBurst` (a scheduler for any optimizer) and
:class:`~optarena.optim.adaburst.Adaburst` (its built-in burst) both use them.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Literal, Protocol

import numpy as np
from scipy import stats

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


class LossTrendDetector:
    """Decides when the training loss has stopped falling, from the last ``window`` per-step values.

    The fall over a window is the one its Theil–Sen slope projects (``scipy.stats.theilslopes``, the median
    of the pairwise slopes, robust to the outliers of minibatch losses). The window has stalled when that
    fall is below ``min_drop`` of the loss's *scale*: the median of the first full window of the run, kept
    for the whole run (and in ``state_dict``). A fixed scale makes the threshold an absolute rate, so a
    loss that keeps halving near zero is still falling and one that wanders on a plateau is not; a
    significance test does not do this (tried: late in training a real but slow fall is not significant
    within one window of noisy losses, so a Mann–Kendall trigger fired every window).

    After it fires the window empties, so the next test waits for ``window`` new values: the window is the
    only time scale, and the optimizer derives it from the run's length. A full window is tested every
    ``stride`` values (default a quarter of the window), which keeps the cost per step small. Under
    ``torch.distributed`` each value is first agreed across ranks (``reduce``), so every rank fires at the
    same step.
    """

    def __init__(
        self,
        window: int,
        min_drop: float = 1e-2,
        stride: int | None = None,
        reduce: MetricReduce = "mean",
    ) -> None:
        check_int("window", window, 3)
        check_range("min_drop", min_drop, 0.0)
        stride = max(1, window // 4) if stride is None else stride
        check_int("stride", stride, 1)
        check_choice("reduce", reduce, METRIC_REDUCTIONS)
        self.window = window
        self.min_drop = float(min_drop)
        self.stride = stride
        self.reduce = reduce
        self.values: deque[float] = deque(maxlen=window)
        self.seen = 0  # values since the window last emptied
        self.scale: float | None = None  # the median of the run's first full window

    def projected_drop(self) -> float:
        """The fall of the loss over one window that the Theil–Sen slope of the current window projects."""
        values = np.asarray(self.values)
        return -float(stats.theilslopes(values).slope) * len(values)

    def stalled(self) -> bool:
        """The projected fall is below ``min_drop`` of the scale (a plateau, a rise, or a crawl)."""
        if self.scale is None:
            self.scale = abs(float(np.median(np.asarray(self.values))))
        return self.projected_drop() < self.min_drop * self.scale

    def update(self, loss: float) -> bool:
        """Record one step's loss; True when the last ``window`` values have stopped falling."""
        loss = float(loss)
        if not math.isfinite(loss):
            raise ValueError(f"Invalid loss: {loss}; the burst trigger needs finite training losses")
        self.values.append(agreed_metric(loss, self.reduce))
        self.seen += 1
        if self.seen < self.window or (self.seen - self.window) % self.stride:
            return False
        if not self.stalled():
            return False
        self.values.clear()
        self.seen = 0
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"values": list(self.values), "seen": self.seen, "scale": self.scale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.values = deque((float(v) for v in state["values"]), maxlen=self.window)
        self.seen = int(state["seen"])
        scale = state.get("scale")  # absent in files saved before the scale existed: set at the next test
        self.scale = None if scale is None else float(scale)


class Trigger(Protocol):
    """What restarts a burst: :class:`PlateauDetector` or :class:`LossTrendDetector`."""

    def update(self, value: float) -> bool: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class CosineBurst:
    """A cosine clock from 1 down to 0, restartable at any time by its trigger.

    ``factor()`` is ``½(1 + cos(π·T_cur/length))`` while ``T_cur < length``; after that it is 0
    (``cyclic=False``: wait at the floor for the next trigger) or the clock wraps to 0
    (``cyclic=True``: periodic warm restarts, as the only public sketch of Adaburst does).
    ``length`` is ``T_max``; with a ``horizon`` (the run's length in ticks) a restart anneals over the
    ticks left instead, so the clock still reaches the floor when the run ends.
    ``start_in_burst=False`` starts the clock at the floor, so only a trigger starts a burst.
    """

    def __init__(
        self,
        T_max: int,
        *,
        cyclic: bool = False,
        start_in_burst: bool = True,
        plateau: Trigger | None = None,
        horizon: int | None = None,
    ) -> None:
        check_int("T_max", T_max, 1)
        check_int("horizon", horizon, 1, allow_none=True)
        self.T_max = T_max
        self.cyclic = bool(cyclic)
        self.plateau: Trigger = plateau if plateau is not None else PlateauDetector()
        self.horizon = horizon
        self.length = T_max
        self.T_cur = 0 if start_in_burst else T_max
        self.ticks = 0  # every tick so far
        self.num_bursts = 0  # restarts caused by the trigger

    def factor(self) -> float:
        if self.T_cur >= self.length:
            return 0.0
        return 0.5 * (1.0 + math.cos(math.pi * self.T_cur / self.length))

    def value(self, low: float, high: float) -> float:
        """The annealed value between ``low`` (floor) and ``high`` (peak)."""
        return low + (high - low) * self.factor()

    def advance(self) -> None:
        """One tick of the clock."""
        self.ticks += 1
        self.T_cur += 1
        if self.cyclic and self.T_cur >= self.length:
            self.T_cur = 0
        elif self.T_cur > self.length:
            self.T_cur = self.length  # idle at the floor; keeps the state bounded

    def restart(self) -> None:
        """Back to the peak; with a horizon, the annealing spans the ticks left (at least one)."""
        self.T_cur = 0
        self.num_bursts += 1
        if self.horizon is not None:
            self.length = max(1, min(self.T_max, self.horizon - self.ticks))

    def observe(self, value: float) -> bool:
        """Feed the trigger (a metric or a loss); restarts the burst and returns True when it fires."""
        if self.plateau.update(value):
            self.restart()
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {
            "T_cur": self.T_cur,
            "length": self.length,
            "ticks": self.ticks,
            "num_bursts": self.num_bursts,
            "plateau": self.plateau.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.T_cur = int(state["T_cur"])
        self.length = int(state.get("length", self.T_max))  # files written before restarts had a length
        self.ticks = int(state.get("ticks", 0))
        self.num_bursts = int(state["num_bursts"])
        self.plateau.load_state_dict(state["plateau"])
