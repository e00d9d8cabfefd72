"""Named optimizer variants: a registered optimizer with fixed options, a learning-rate schedule, or both.

Ablations and schedule comparisons are experiments over variants of one optimizer. An experiment
file declares them beside its list of optimizers and then lists them like any registered name::

    optimizers = ["sgdm", "sgdm_step", "sgdm_sgdr"]

    [variants.sgdm_step]
    optimizer = "sgdm"
    schedule = "step"                     # lr × 0.1 at 50% and 75% of the steps

    [variants.sgdm_sgdr]
    optimizer = "sgdm"
    schedule = "sgdr"
    schedule_options = { T_0 = 1, T_mult = 2 }

    [variants.adamw_agr_until_2]
    optimizer = "adamw_agr"
    options = { agr = "paper" }           # fixed: taken out of the search space
    agr_stop_epoch = 2                    # AGR off after epoch 2

    [variants.adaburst_sgdm_burst]
    optimizer = "adaburst"
    options = { variant = "sgdm_burst" }  # an ablation whose update is SGD's...
    lr_range = [1e-3, 1.0]                # ...is tuned over an SGD learning-rate range

A variant is tuned exactly as its optimizer is (``lr`` over the optimizer's range, or the variant's own
``lr_range``, plus the optimizer's knobs, less those the variant fixes) and stored under its own name.
Schedules are stepped once per batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, MultiStepLR

from optarena.optim import get_optimizer_info, list_optimizers
from optarena.optim.registry import declared_hyperparameters
from optarena.schedules import SGDR, AdamNXLR

VARIANT_KEYS = ("optimizer", "options", "schedule", "schedule_options", "agr_stop_epoch", "lr_range")


def _step_decay(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    *,
    milestones: tuple[float, ...] = (0.5, 0.75),
    gamma: float = 0.1,
) -> LRScheduler:
    """lr × ``gamma`` at each milestone, given as a fraction of the run (the classic 50%/75% step decay)."""
    if not milestones or any(not 0.0 < m < 1.0 for m in milestones) or list(milestones) != sorted(milestones):
        raise ValueError(f"Invalid milestones: {milestones!r}; expected increasing fractions of the run in (0, 1)")
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"Invalid gamma: {gamma!r}; expected a value in (0, 1]")
    return MultiStepLR(optimizer, [max(1, round(m * total_steps)) for m in milestones], gamma)


def _cosine(optimizer: Optimizer, total_steps: int, steps_per_epoch: int, *, eta_min: float = 0.0) -> LRScheduler:
    """One cosine from the tuned lr down to ``eta_min`` over the whole run."""
    if eta_min < 0:
        raise ValueError(f"Invalid eta_min: {eta_min!r}; expected a value >= 0")
    return CosineAnnealingLR(optimizer, total_steps, eta_min)


def _sgdr(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    *,
    T_0: float = 1.0,
    T_mult: float = 2.0,
    eta_min: float = 0.0,
    decay: float = 1.0,
) -> LRScheduler:
    """SGDR (Loshchilov & Hutter) with ``T_0`` in epochs, stepped per batch."""
    return SGDR(optimizer, T_0, T_mult, eta_min, decay=decay, steps_per_epoch=steps_per_epoch)


def _adamnx(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    *,
    decay_fraction: float = 0.6,
    min_ratio: float = 0.01,
    warmup_steps: int = 0,
) -> LRScheduler:
    """The AdamNX authors' schedule: linear decay to ``min_ratio``·lr at ``decay_fraction`` of the run."""
    return AdamNXLR(
        optimizer, total_steps, decay_fraction=decay_fraction, min_ratio=min_ratio, warmup_steps=warmup_steps
    )


ScheduleBuilder = Callable[..., LRScheduler]
SCHEDULES: dict[str, ScheduleBuilder] = {"step": _step_decay, "cosine": _cosine, "sgdr": _sgdr, "adamnx": _adamnx}


@dataclass(frozen=True)
class OptimizerSpec:
    """What the arena trains under one name: a registered optimizer, fixed options and a schedule."""

    name: str
    optimizer: str
    options: dict[str, Any] = field(default_factory=dict)
    schedule: str | None = None
    schedule_options: dict[str, Any] = field(default_factory=dict)
    agr_stop_epoch: int | None = None
    lr_range: tuple[float, float] | None = None  # None: the registered optimizer's

    def tuned_lr_range(self) -> tuple[float, float]:
        """The range ``lr`` is tuned over, log-uniform: the variant's own, else the optimizer's."""
        return self.lr_range if self.lr_range is not None else get_optimizer_info(self.optimizer).lr_range

    def describe(self) -> str:
        """What the variant fixes, e.g. ``adamnx; beta2_decay=adam; schedule adamnx`` (``—`` for none)."""
        if (self.name, self.options, self.schedule, self.agr_stop_epoch) == (self.optimizer, {}, None, None):
            return "—"
        parts = [self.optimizer, *(f"{k}={v}" for k, v in self.options.items())]
        if self.schedule is not None:
            extra = ", ".join(
                f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.schedule_options.items()
            )
            parts.append(f"schedule {self.schedule}" + (f" ({extra})" if extra else ""))
        if self.agr_stop_epoch is not None:
            parts.append(f"AGR until epoch {self.agr_stop_epoch}")
        return "; ".join(parts)

    def search_space(self) -> dict[str, tuple[Any, ...]]:
        """The optimizer's knobs that this variant leaves to tuning."""
        return {k: v for k, v in get_optimizer_info(self.optimizer).search_space.items() if k not in self.options}

    def build_schedule(self, optimizer: Optimizer, total_steps: int, steps_per_epoch: int) -> LRScheduler | None:
        if self.schedule is None:
            return None
        return SCHEDULES[self.schedule](optimizer, total_steps, steps_per_epoch, **self.schedule_options)

    def options_for(self, steps_per_epoch: int) -> dict[str, Any]:
        """The fixed constructor options, with ``agr_stop_epoch`` turned into AGR's step count."""
        options = dict(self.options)
        if self.agr_stop_epoch is not None:
            options["agr_stop_step"] = self.agr_stop_epoch * steps_per_epoch
        return options


def _keywords(function: Callable[..., Any], skip: int) -> list[str]:
    return list(inspect.signature(function).parameters)[skip:]


def parse_variant(name: str, entry: Mapping[str, Any]) -> OptimizerSpec:
    """Check one ``[variants.NAME]`` table; every error names the variant and the key."""
    where = f"variant {name!r}"
    if not name or "/" in name:
        raise ValueError(f"Invalid {where}: expected a non-empty name without '/'")
    if name in list_optimizers():
        raise ValueError(f"Invalid {where}: the name is a registered optimizer's; choose another")
    if not isinstance(entry, Mapping):
        raise ValueError(f"Invalid {where}: expected a table with keys {', '.join(VARIANT_KEYS)}")
    unknown = sorted(set(entry) - set(VARIANT_KEYS))
    if unknown:
        raise ValueError(f"Invalid {where}: unknown key {unknown[0]!r}; valid keys: {', '.join(VARIANT_KEYS)}")
    base = entry.get("optimizer")
    if base not in list_optimizers():
        valid = ", ".join(list_optimizers())
        raise ValueError(f"Invalid {where}: optimizer {base!r} is not registered; valid names: {valid}")
    info = get_optimizer_info(base)
    options = dict(entry.get("options", {}))
    # The constructor's keywords, and what create_optimizer adds: Lookahead's, and the gradient transforms'
    # (the wrapper's keywords, for a torch baseline).
    known = set(info.hyperparameter_defaults()) | set(declared_hyperparameters(base))
    known |= {"lookahead_k", "lookahead_alpha", "lookahead_pullback"}
    for key in options:
        if key == "lr":
            raise ValueError(f"Invalid {where}: options may not fix lr; the protocol tunes it for every optimizer")
        if key not in known:
            valid = ", ".join(sorted(known))
            raise ValueError(f"Invalid {where}: {base} has no option {key!r}; valid options: {valid}")
    if isinstance(options.get("betas"), list):
        options["betas"] = tuple(options["betas"])  # TOML has arrays, the optimizers take tuples
    schedule = entry.get("schedule")
    schedule_options = dict(entry.get("schedule_options", {}))
    if schedule is None and schedule_options:
        raise ValueError(f"Invalid {where}: schedule_options without a schedule")
    if schedule is not None:
        if schedule not in SCHEDULES:
            raise ValueError(f"Invalid {where}: schedule {schedule!r}; valid schedules: {', '.join(SCHEDULES)}")
        allowed = _keywords(SCHEDULES[schedule], 3)
        for key in schedule_options:
            if key not in allowed:
                raise ValueError(
                    f"Invalid {where}: schedule {schedule!r} has no option {key!r}; valid options: {', '.join(allowed)}"
                )
        if isinstance(schedule_options.get("milestones"), list):
            schedule_options["milestones"] = tuple(schedule_options["milestones"])
    stop = entry.get("agr_stop_epoch")
    if stop is not None:
        if isinstance(stop, bool) or not isinstance(stop, int) or stop < 1:
            raise ValueError(f"Invalid {where}: agr_stop_epoch {stop!r}; expected an integer >= 1")
        if {**info.defaults, **options}.get("agr") is None:
            raise ValueError(f"Invalid {where}: agr_stop_epoch needs AGR on (options agr = 'code' or 'paper')")
        if "agr_stop_step" in options:
            raise ValueError(f"Invalid {where}: give agr_stop_epoch or options.agr_stop_step, not both")
    lr_range = entry.get("lr_range")
    if lr_range is not None:
        numbers = isinstance(lr_range, (list, tuple)) and len(lr_range) == 2
        if not numbers or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in lr_range):
            raise ValueError(f"Invalid {where}: lr_range {lr_range!r}; expected [low, high]")
        if not 0 < lr_range[0] < lr_range[1] < float("inf"):
            raise ValueError(f"Invalid {where}: lr_range {lr_range!r}; expected 0 < low < high, both finite")
        lr_range = (float(lr_range[0]), float(lr_range[1]))
    spec = OptimizerSpec(name, base, options, schedule, schedule_options, stop, lr_range)
    _check_buildable(spec, where)
    return spec


def _check_buildable(spec: OptimizerSpec, where: str) -> None:
    """Build the variant once on a throwaway parameter, so bad values fail when the experiment is read."""
    from optarena.optim import create_optimizer
    from optarena.optim.hooks import LoopContext

    param = torch.nn.Parameter(torch.zeros(2))
    lr = spec.tuned_lr_range()[0]
    # What the training loop supplies (e.g. Adaburst's total_steps), for a 100-step run.
    supplied = get_optimizer_info(spec.optimizer).hooks.options(LoopContext(steps_per_epoch=10, total_steps=100))
    try:
        options = {**supplied, **spec.options_for(steps_per_epoch=10)}
        optimizer = create_optimizer([param], spec.optimizer, lr=lr, **options)
        spec.build_schedule(optimizer, total_steps=100, steps_per_epoch=10)
    except (TypeError, ValueError) as error:
        raise ValueError(f"Invalid {where}: {error}") from error


def parse_variants(raw: Mapping[str, Any]) -> dict[str, OptimizerSpec]:
    return {name: parse_variant(name, entry) for name, entry in raw.items()}


def resolve(name: str, variants: Mapping[str, OptimizerSpec] | None = None) -> OptimizerSpec:
    """The spec of ``name``: a declared variant, or a registered optimizer as it is."""
    if variants and name in variants:
        return variants[name]
    get_optimizer_info(name)  # an unknown name fails here, listing the valid ones
    return OptimizerSpec(name, name)
