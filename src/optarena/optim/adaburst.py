"""Adaburst (Lin et al., "Learning rate burst for superior SGDM and AdamW integration", JIFS 2024; seed 000).

The AdamW and SGD-momentum updates summed over one shared, *undamped* first moment, with the
SGD-momentum rate driven by the learning-rate burst (Algorithm 4)::

    θ ← θ(1 − lr·λ)                                       decoupled weight decay (line 9)
    m ← β1·m + g                                          shared first moment (line 11)
    v ← β2·v + g²
    A = (m / W1) / (√(v / W2) + ε)                        AdamW's direction (lines 12–15, lost; see below)
    S = m                                                 SGD-momentum direction (line 17)
    lr1 = lr,   lr2 = lr · φ                              φ = Lrburst() (line 16)
    θ ← θ − lr1·A − lr2·S                                 (line 18)

``moments='normalized'`` (default) divides each undamped sum by its total weight,
``W = (1 − β^t)/(1 − β)``, which makes ``m/W1`` and ``v/W2`` exactly Adam's m̂ and v̂: A is AdamW's own
direction, and ``burst_max=0`` (with AdamW's ε) is ``torch.optim.AdamW``. ``moments='undamped'`` is the
unofficial sketch's reading, ``W = 1 − β^t`` (Adam's bias correction applied to undamped sums), which
makes A ``√(1 − β2)/(1 − β1) ≈ 0.316`` times AdamW's direction. S = m is ``torch.optim.SGD``'s momentum
buffer (momentum β1, no dampening) either way.

φ anneals along a cosine from ``burst_max`` to ``burst_min`` over the run (``total_steps``) and the
annealing restarts from the peak, over the steps left, when training stalls. The default trigger needs
no patience: the per-step training loss (the closure's, or :meth:`Adaburst.observe`) shows no
significant downward trend over a window. ``burst_trigger='metric_plateau'`` is the paper's: the
training accuracy, passed to :meth:`Adaburst.epoch_end`, has not improved for ``burst_patience`` epochs.
The state is AdamW's: ``step``, ``exp_avg`` (m), ``exp_avg_sq`` (v). No official code exists; every open
choice, and why, is in ``docs/algorithms/adaburst.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from optarena.burst import METRIC_REDUCTIONS, CosineBurst, LossTrendDetector, PlateauDetector, Trigger
from optarena.optim.base import ADAM_HYPERPARAMETERS, OptarenaOptimizer, ParamsT
from optarena.optim.functional import (
    foreach_add_scalar_,
    foreach_add_scaled_,
    foreach_addcdiv_,
    foreach_div_scalars_,
    is_zero,
    scalar_value,
)
from optarena.optim.hooks import LoopContext, LoopHooks
from optarena.optim.info import OptimizerErrorInput, OptimizerInfo, OptimizerInput
from optarena.optim.lookahead import LOOKAHEAD_CODE, LOOKAHEAD_PAPER
from optarena.optim.weight_decay import decay_, decay_factor, decay_multi_
from optarena.validation import NON_NEGATIVE, Constraint, Flag, Integer, OneOf, check_declared, check_range

VARIANTS = ("adaburst", "adamw_sgdm", "sgdm_burst", "adamw_burst")
"""``adaburst``: the full method. The paper's Table 6 ablations: ``adamw_sgdm`` (both updates,
no burst: φ = ``burst_lr`` stays at ``burst_max`` unless an external scheduler drives it),
``sgdm_burst`` (lr1 = 0: SGD momentum with the burst), ``adamw_burst`` (lr2 = 0, and the burst
drives AdamW's rate: lr1 = lr·φ). Weight decay follows the rate each applies (lr1, or lr2 when lr1 is 0):
an ablation whose rate has annealed to 0 stands still."""
MOMENTS = ("normalized", "undamped")
TRIGGERS = ("loss_trend", "metric_plateau", "none")


def moment_weight(beta: float, step: float, moments: str) -> float:
    """What A divides the undamped sum ``Σ β^(t−i)·x_i`` by: its total weight ``(1 − β^t)/(1 − β)``
    (``'normalized'``: Adam's bias-corrected average), or ``1 − β^t`` (``'undamped'``)."""
    correction = 1 - beta**step
    return correction / (1 - beta) if moments == "normalized" else correction


def adaburst_single_tensor(
    param: Tensor,
    grad: Tensor,
    m_grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    *,
    step: float,
    lr1: float,
    lr2: float,
    beta1: float,
    beta2: float,
    eps: float,
    decay: float | None,
    moments: str = "normalized",
) -> None:
    """Reference Adaburst update of one tensor, line by line as Algorithm 4."""
    decay_(param, decay)  # θ ← θ(1 − rate·λ)
    exp_avg.mul_(beta1).add_(m_grad)  # m ← β1·m + g
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad)  # v ← β2·v + g²
    if not is_zero(lr1):  # θ ← θ − lr1·A,  A = (m/W1) / (√(v/W2) + ε)
        weight1 = moment_weight(beta1, step, moments)
        weight2 = moment_weight(beta2, step, moments)
        denom = (exp_avg_sq.sqrt() / weight2**0.5).add_(eps)
        param.addcdiv_(exp_avg, denom, value=-lr1 / weight1)
    if not is_zero(lr2):  # θ ← θ − lr2·S,  S = m
        param.add_(exp_avg, alpha=-lr2)


def adaburst_multi_tensor(
    params: list[Tensor],
    grads: list[Tensor],
    m_grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    *,
    steps: list[float],
    lr1: float,
    lr2: float,
    beta1: float,
    beta2: float,
    eps: float,
    decay: float | None,
    moments: str = "normalized",
) -> None:
    """foreach Adaburst; equals :func:`adaburst_single_tensor` tensor by tensor."""
    decay_multi_(params, decay)
    torch._foreach_mul_(exp_avgs, beta1)
    torch._foreach_add_(exp_avgs, m_grads)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads)
    if not is_zero(lr1):
        denom = torch._foreach_sqrt(exp_avg_sqs)
        foreach_div_scalars_(denom, [moment_weight(beta2, t, moments) ** 0.5 for t in steps])
        foreach_add_scalar_(denom, eps)
        foreach_addcdiv_(params, exp_avgs, denom, [-lr1 / moment_weight(beta1, t, moments) for t in steps])
    if not is_zero(lr2):
        foreach_add_scaled_(params, exp_avgs, -lr2)


class Adaburst(OptarenaOptimizer):
    """Adaburst: AdamW + SGD momentum over one shared moment, with the learning-rate burst.

    Args:
        params: parameters or param groups.
        lr: the AdamW rate lr1, and the unit of the SGD-momentum rate lr2 = lr·φ (default 1e-3).
        betas: (β1, β2); β1 is also the SGD momentum (default (0.9, 0.999)).
        eps: added to √(v/W2) (default 1e-4, the paper's Algorithm 4; AdamW's is 1e-8).
        weight_decay: decoupled decay λ (default 1e-2, PyTorch's AdamW default, which the
            paper says its settings follow).
        total_steps: the run's length in optimizer steps: φ anneals over it (the cosine spans the
            run). Needed unless ``burst_T_max`` gives the annealing length.
        moments: how A reads the undamped sums: ``'normalized'`` (AdamW's direction, default) or
            ``'undamped'`` (the sketch's, 0.316× AdamW's); see the module docstring.
        weight_decay_mode: ``'decoupled'`` (θ(1 − lr·λ), default) or ``'unscaled'`` (θ(1 − λ),
            Algorithm 4 line 9 read literally).
        burst_max: φ at the start of a burst (default 1.0: lr2 peaks at lr, PyTorch's equal
            default rates for SGD and AdamW).
        burst_min: φ at the end of the annealing (default 0.0: "reducing the learning rate to
            zero through cosine annealing").
        burst_T_max: length of one annealing in ``burst_unit`` (default None: ``total_steps``, and a
            restart anneals over the steps left, so φ reaches ``burst_min`` when the run ends).
        burst_unit: ``'step'`` (the clock advances every ``step()``, default) or ``'epoch'``
            (it advances in :meth:`epoch_end`; ``burst_T_max`` is then needed, in epochs).
        burst_trigger: what restarts the annealing: ``'loss_trend'`` (default: the per-step training
            loss has stopped falling over ``burst_window`` steps; no patience to tune),
            ``'metric_plateau'`` (the paper's: the metric passed to :meth:`epoch_end` — training
            accuracy — has not improved for more than ``burst_patience`` epochs) or ``'none'``.
        burst_window: the loss-trend window in steps (default None: 15% of ``total_steps``, at least 50 and at
            most 2,000).
        burst_min_drop: the smallest fall of the loss over a window (by its Theil–Sen slope) that counts as
            falling, as a fraction of the loss's scale, the median of the run's first window (default 1e-2).
        burst_patience: ``'metric_plateau'``: epochs without improvement before a burst restarts
            (default 5; the paper's per-task Table 2 values are lost).
        burst_mode: ``'metric_plateau'``: ``'max'`` (accuracy, default) or ``'min'`` (a loss).
        burst_threshold, burst_threshold_mode, burst_cooldown: as in ``ReduceLROnPlateau``.
        burst_metric_reduce: under ``torch.distributed``, how the ranks' metrics (or losses) are agreed
            before the test: 'mean' (default), 'max', 'min', or 'none' (each rank acts on its own).
        burst_cyclic: also restart the annealing every ``burst_T_max`` units (default False).
        burst_start: start training inside a burst (default True, Algorithm 3 starts its clock
            at the peak); False waits at ``burst_min`` for the first trigger.
        relative_burst: lr2 = lr·φ (default, Algorithm 4 line 16); False makes lr2 = φ.
        variant: ``'adaburst'`` or a Table 6 ablation, see :data:`VARIANTS`.
        options: the engine's keywords (``foreach``, ``maximize``, ``agr``, ``agr_stop_step``,
            ``agr_official_edge_cases``, ``nonfinite``), see :class:`~optarena.optim.base.OptarenaOptimizer`.
    """

    hyperparameters: ClassVar[dict[str, Constraint]] = {
        **ADAM_HYPERPARAMETERS,
        "moments": OneOf(MOMENTS),
        "weight_decay_mode": OneOf(("decoupled", "unscaled")),
        "burst_max": NON_NEGATIVE,
        "burst_min": NON_NEGATIVE,
        "burst_lr": NON_NEGATIVE,
        "relative_burst": Flag(),
        "variant": OneOf(VARIANTS),
        # The burst clock's (one per optimizer, checked in the constructor):
        "total_steps": Integer(1, optional=True),
        "burst_T_max": Integer(1, optional=True),
        "burst_unit": OneOf(("step", "epoch")),
        "burst_trigger": OneOf(TRIGGERS),
        "burst_window": Integer(3, optional=True),
        "burst_min_drop": NON_NEGATIVE,
        "burst_patience": Integer(0),
        "burst_mode": OneOf(("min", "max")),
        "burst_threshold": NON_NEGATIVE,
        "burst_threshold_mode": OneOf(("rel", "abs")),
        "burst_cooldown": Integer(0),
        "burst_metric_reduce": OneOf(METRIC_REDUCTIONS),
        "burst_cyclic": Flag(),
        "burst_start": Flag(),
    }
    state_names = ("exp_avg", "exp_avg_sq")
    single_tensor_kernel = staticmethod(adaburst_single_tensor)
    multi_tensor_kernel = staticmethod(adaburst_multi_tensor)
    elementwise_kernel = True

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-4,
        weight_decay: float = 1e-2,
        *,
        total_steps: int | None = None,
        moments: str = "normalized",
        weight_decay_mode: str = "decoupled",
        burst_max: float = 1.0,
        burst_min: float = 0.0,
        burst_T_max: int | None = None,
        burst_unit: str = "step",
        burst_trigger: str = "loss_trend",
        burst_window: int | None = None,
        burst_min_drop: float = 1e-2,
        burst_patience: int = 5,
        burst_mode: str = "max",
        burst_threshold: float = 1e-4,
        burst_threshold_mode: str = "rel",
        burst_cooldown: int = 0,
        burst_metric_reduce: str = "mean",
        burst_cyclic: bool = False,
        burst_start: bool = True,
        relative_burst: bool = True,
        variant: str = "adaburst",
        **options: Any,
    ) -> None:
        clock = dict(
            total_steps=total_steps,
            burst_T_max=burst_T_max,
            burst_unit=burst_unit,
            burst_trigger=burst_trigger,
            burst_window=burst_window,
            burst_min_drop=burst_min_drop,
            burst_patience=burst_patience,
            burst_mode=burst_mode,
            burst_threshold=burst_threshold,
            burst_threshold_mode=burst_threshold_mode,
            burst_cooldown=burst_cooldown,
            burst_metric_reduce=burst_metric_reduce,
            burst_cyclic=burst_cyclic,
            burst_start=burst_start,
        )
        check_declared(clock, self.hyperparameters)
        if burst_T_max is None and (total_steps is None or burst_unit == "epoch"):
            raise ValueError(
                "Invalid total_steps: None; Adaburst anneals its SGD-momentum rate over the run: pass total_steps "
                "(the run's optimizer steps), or burst_T_max (the length of one annealing"
                + (", in epochs with burst_unit='epoch')" if burst_unit == "epoch" else ")")
            )
        horizon = total_steps if burst_unit == "step" else None
        T_max = burst_T_max if burst_T_max is not None else total_steps
        if burst_trigger == "loss_trend":
            steps = total_steps or (T_max if burst_unit == "step" else None)
            window = burst_window if burst_window is not None else max(50, min(2000, (steps or 500) * 15 // 100))
            trigger: Trigger = LossTrendDetector(
                window,
                burst_min_drop,
                reduce=burst_metric_reduce,  # type: ignore[arg-type]
            )
        else:
            trigger = PlateauDetector(
                mode=burst_mode,  # type: ignore[arg-type]
                patience=burst_patience,
                threshold=burst_threshold,
                threshold_mode=burst_threshold_mode,  # type: ignore[arg-type]
                cooldown=burst_cooldown,
                reduce=burst_metric_reduce,  # type: ignore[arg-type]
            )
        # The burst is one clock for the whole optimizer: the monitored loss or metric is global.
        self.burst = CosineBurst(
            T_max, cyclic=burst_cyclic, start_in_burst=burst_start, plateau=trigger, horizon=horizon
        )  # type: ignore[arg-type]
        self.burst_unit = burst_unit
        self.burst_trigger = burst_trigger
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            moments=moments,
            weight_decay_mode=weight_decay_mode,
            burst_max=burst_max,
            burst_min=burst_min,
            burst_lr=burst_max if burst_start or variant == "adamw_sgdm" else burst_min,
            relative_burst=relative_burst,
            variant=variant,
        )
        super().__init__(params, defaults, **options)

    def _backfill(self, group: dict[str, Any]) -> None:
        super()._backfill(group)
        group.setdefault("moments", "undamped")  # state_dicts saved before the option: the reading they ran

    def _validate_group(self, group: dict[str, Any]) -> None:
        super()._validate_group(group)
        check_range("burst_max", group["burst_max"], scalar_value(group["burst_min"]))

    # -- the burst -----------------------------------------------------------------------------

    @property
    def self_scheduled_keys(self) -> tuple[str, ...]:
        """Group keys this optimizer writes itself every step (an LRBurst must not drive them)."""
        return ("burst_lr",) if any(g["variant"] != "adamw_sgdm" for g in self.param_groups) else ()

    @property
    def burst_factor(self) -> float:
        """The cosine clock's position: 1 at the start of a burst, 0 at its floor."""
        return self.burst.factor()

    def _write_burst_lr(self) -> None:
        for group in self.param_groups:
            if group["variant"] != "adamw_sgdm":  # that ablation holds φ where it is
                group["burst_lr"] = self.burst.value(group["burst_min"], group["burst_max"])

    def observe(self, loss: float | Tensor) -> bool:
        """Feed one step's training loss to the loss-trend trigger; returns True when a burst restarts (never in the
        ``adamw_sgdm`` ablation, whose φ no restart moves).

        ``step(closure)`` does it with the closure's loss; a loop without a closure calls it once per step.
        With another ``burst_trigger`` it does nothing.
        """
        if self.burst_trigger != "loss_trend":
            return False
        burst = self.burst.observe(float(loss))
        if burst:
            self._write_burst_lr()
        return burst and self._burst_applies()

    def epoch_end(self, metric: float | None = None) -> bool:
        """Once per epoch; returns True when a burst restarts.

        The ``metric`` (training accuracy in the paper) feeds ``burst_trigger='metric_plateau'``. With
        ``burst_unit='epoch'`` this is also the tick of the annealing clock.
        """
        if metric is not None and not math.isfinite(float(metric)):
            raise ValueError(f"Invalid metric: {metric}; expected a finite number")
        burst = self.burst_trigger == "metric_plateau" and metric is not None and self.burst.observe(float(metric))
        if not burst and self.burst_unit == "epoch":
            self.burst.advance()
        self._write_burst_lr()
        return burst and self._burst_applies()

    def _burst_applies(self) -> bool:
        """Whether a restart changes anything: not in the no-burst ablation, which holds φ (a restart there is no
        burst event)."""
        return bool(self.self_scheduled_keys)

    def step(self, closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        """One step; the closure's loss, when there is one, also feeds the loss-trend trigger (the update itself runs
        under the base class's ``no_grad``)."""
        loss = super().step(closure, **kwargs)
        if loss is not None and math.isfinite(float(loss)):  # a skipped non-finite step is not observed
            self.observe(loss)
        return loss

    def _before_step(self) -> None:
        self._write_burst_lr()

    def _after_step(self) -> None:
        if self.burst_unit == "step":
            self.burst.advance()

    def _kernel_hyperparameters(self, group: dict[str, Any]) -> dict[str, Any]:
        beta1, beta2 = group["betas"]
        lr = scalar_value(group["lr"])
        phi = scalar_value(group["burst_lr"])
        burst_rate = lr * phi if group["relative_burst"] else phi
        variant = group["variant"]
        lr1 = {"sgdm_burst": 0.0, "adamw_burst": burst_rate}.get(variant, lr)
        lr2 = 0.0 if variant == "adamw_burst" else burst_rate
        # The decay follows the rate the update applies: an ablation whose rate is 0 stands still.
        decay_rate = lr1 if variant != "sgdm_burst" else lr2
        mode = "decoupled" if group["weight_decay_mode"] == "decoupled" else "unscaled"
        return dict(
            lr1=lr1,
            lr2=lr2,
            beta1=scalar_value(beta1),
            beta2=scalar_value(beta2),
            eps=group["eps"],
            decay=decay_factor(lr=decay_rate, weight_decay=group["weight_decay"], mode=mode),
            moments=group["moments"],
        )

    # -- checkpoints ---------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # torch's Optimizer pickles only defaults, state and groups; the burst clock is ours.
        clock = {"burst": self.burst, "burst_unit": self.burst_unit, "burst_trigger": self.burst_trigger}
        return {**super().__getstate__(), **clock}

    # The burst clock is optimizer-wide; it is saved inside every param group ("burst_clock") because
    # torch.distributed.checkpoint's get_state_dict/set_state_dict keep a group's keys but drop any
    # top-level key of an optimizer's state_dict.
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        clock = self.burst.state_dict()
        state["param_groups"] = [{**group, BURST_CLOCK: clock} for group in state["param_groups"]]
        return state

    def load_state_dict(self, state_dict: dict[str, Any], *, convert: bool = False) -> None:
        if not isinstance(state_dict, dict) or not isinstance(state_dict.get("param_groups"), list):
            raise ValueError("Invalid state_dict: expected a dict with 'state' and 'param_groups'")
        state_dict = dict(state_dict)
        groups = [dict(group) for group in state_dict["param_groups"]]
        clocks = [group.pop(BURST_CLOCK, None) for group in groups]
        state_dict["param_groups"] = groups
        clock = state_dict.pop("burst", None) or next((c for c in clocks if c is not None), None)  # or an older file's
        super().load_state_dict(state_dict, convert=convert)
        if clock is not None:
            self.burst.load_state_dict(clock)


BURST_CLOCK = "burst_clock"


class AdaburstHooks(LoopHooks):
    """The run's length (the cosine spans it); every step's training loss for the loss-trend trigger; once
    per epoch the training metric (the paper: accuracy, in the direction the loop says it improves) for the
    paper's trigger. A restart is the event ``'burst'``."""

    def options(self, context: LoopContext) -> dict[str, Any]:
        options: dict[str, Any] = {"burst_mode": context.metric_mode}
        if context.total_steps is not None:
            options["total_steps"] = context.total_steps
        return options

    def after_step(
        self,
        optimizer: Optimizer,
        model: nn.Module,
        inputs: Tensor,
        step: int,
        context: LoopContext,
        loss: Tensor | None = None,
    ) -> list[str]:
        if loss is None:
            return []
        return ["burst"] if optimizer.observe(loss) else []  # type: ignore[attr-defined]

    def after_epoch(self, optimizer: Optimizer, metrics: Mapping[str, float], context: LoopContext) -> list[str]:
        return ["burst"] if optimizer.epoch_end(metrics["train_metric"]) else []  # type: ignore[attr-defined]


Adaburst.loop_hooks = AdaburstHooks()

REGISTRY_ENTRIES = [
    OptimizerInfo(
        "adaburst",
        Adaburst,
        "AdamW + SGD momentum on one shared moment, SGD rate driven by the learning-rate burst",
        supports_agr=True,
        paper="Lin et al., Learning rate burst for superior SGDM and AdamW integration, JIFS 2024",
        code="none published",
        notes="lr2 = lr*phi; call epoch_end(train_accuracy) once per epoch for the plateau trigger",
        search_space={"burst_max": ("log", 0.1, 10.0)},
        test_defaults={"total_steps": 100},
        test_inputs=(
            OptimizerInput("adamw_sgdm", {"variant": "adamw_sgdm"}),
            OptimizerInput("sgdm_burst", {"variant": "sgdm_burst", "burst_T_max": 4}),
            OptimizerInput("adamw_burst", {"variant": "adamw_burst", "burst_T_max": 4, "burst_cyclic": True}),
            OptimizerInput(
                "unscaled-absolute",
                {"weight_decay_mode": "unscaled", "relative_burst": False},
                # the SGD rate is burst_lr itself and the decay is not scaled by lr: lr = 0 alone does not stop it
                still={"lr": 0.0, "burst_max": 0.0, "burst_lr": 0.0, "weight_decay": 0.0},
            ),
            OptimizerInput("agr_paper", {"agr": "paper"}),
            OptimizerInput("step_clock", {"burst_unit": "step", "burst_T_max": 4}, checkpointed=True),
        ),
        error_inputs=(
            OptimizerErrorInput(
                {"burst_min": 0.5, "burst_max": 0.1}, r"Invalid burst_max: 0\.1; expected a finite value in \[0\.5"
            ),
            OptimizerErrorInput(
                {"weight_decay_mode": "unscaled", "weight_decay": 1.5},
                r"Invalid weight_decay: 1\.5; expected a finite value in \[0, 1\]",
            ),
        ),
    ),
    OptimizerInfo(
        "lookahead_adaburst",
        Adaburst,
        "Lookahead around Adaburst (a Ranger-style combination)",
        defaults={"lookahead": True},
        supports_agr=True,
        paper=LOOKAHEAD_PAPER,
        code=LOOKAHEAD_CODE,
        notes="epoch_end(metric) reaches the inner Adaburst through the wrapper",
        search_space={"lookahead_alpha": ("float", 0.3, 0.9), "burst_max": ("log", 0.1, 10.0)},
        test_defaults={"total_steps": 100},
    ),
]
