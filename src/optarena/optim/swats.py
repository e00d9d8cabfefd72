"""SWATS (Keskar & Socher, "Improving Generalization Performance by Switching from Adam to SGD", 2017).

Adam until a projection test says that an SGD step of one scalar rate would do the same, then SGD with
momentum at that rate. Algorithm 1 of the paper, per step k::

    Adam phase
        m ← β1·m + (1 − β1)·g                   a ← β2·a + (1 − β2)·g²
        p_k = −lr · √(1 − β2^k)/(1 − β1^k) · m / (√a + ε)          ε on the unnormalised √a
        θ ← θ + p_k
        if p_kᵀg_k ≠ 0:
            γ_k = p_kᵀp_k / (−p_kᵀg_k)          the SGD rate whose step projects onto p_k
            λ_k = β2·λ_{k−1} + (1 − β2)·γ_k
            switch when k > 1 and |λ_k/(1 − β2^k) − γ_k| < tolerance; then Λ = λ_k/(1 − β2^k)
    SGD phase
        v ← β1·v + g                            v starts at 0 at the switch
        θ ← θ − (1 − β1)·Λ·v

The projection runs over one *unit*: all parameters together (``granularity='global'``, the
paper), each param group, or each tensor. The projections are per-tensor dot products summed over
the unit; the switch is a data-dependent decision, so it lives in :meth:`SWATS.step`, not in the
elementwise kernels. After the switch ``exp_avg`` holds the SGD buffer v (Adam's m is no longer
needed), so SWATS keeps Adam's memory. Every choice is listed in ``docs/algorithms/swats.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from optarena.optim.base import ADAM_HYPERPARAMETERS, OptarenaOptimizer, ParamsT
from optarena.optim.functional import (
    foreach_add_scalar_,
    foreach_add_scaled_,
    foreach_addcmul_,
    full_tensor,
    group_by_device_and_dtype,
    is_zero,
    one_minus_pow,
    per_tensor,
    per_tensor_dot,
    scalar_value,
)
from optarena.optim.info import OptimizerInfo, OptimizerInput
from optarena.optim.transforms import apply_pipeline, pipeline
from optarena.optim.weight_decay import add_l2_multi, decay_multi_, weight_decay_, weight_decay_multi_
from optarena.validation import NON_NEGATIVE, Constraint, OneOf

GRANULARITIES: tuple[str, ...] = ("global", "group", "tensor")
"""Over what the projection test runs: all parameters (paper), each param group, or each tensor."""

PHASES: tuple[str, ...] = ("adam", "sgd", "mixed")
"""``'mixed'`` only summarises a group in ``'tensor'`` mode whose tensors are in both phases."""

# Per-unit bookkeeping: plain numbers or None, so state_dict() loads with weights_only=True. (No
# string in a tensor's state: torch's load_state_dict rebuilds iterables there and would mangle it.)
# A unit is in the SGD phase once swats_switch_step is set.
_UNIT_DEFAULTS: dict[str, Any] = dict(
    swats_lambda=0.0,  # λ_k, the running average of γ_k
    swats_sgd_lr=None,  # Λ, the SGD rate found at the switch
    swats_switch_step=None,  # k of the last Adam step
    swats_switch_lr=None,  # the group's lr at the switch (the SGD rate follows lr / this)
)


def swats_adam_single_tensor(
    param: Tensor,
    grad: Tensor,
    m_grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    *,
    step: float,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled: bool,
) -> tuple[Tensor, Tensor]:
    """Reference Adam-phase update of one tensor (Algorithm 1 lines 10–13).

    Returns ``(p_k, g_k)``: the Adam step just applied and the gradient it was computed from
    (with the L2 term), for the projection test.
    """
    mode = "decoupled" if decoupled else "l2"  # L2 on copies: p.grad is never written
    grad, m_grad = weight_decay_(param, grad, m_grad, lr=lr, weight_decay=weight_decay, mode=mode)
    exp_avg.mul_(beta1).add_(m_grad, alpha=1 - beta1)  # m_k
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # a_k
    step_size = lr * (1 - beta2**step) ** 0.5 / (1 - beta1**step)
    p = exp_avg / exp_avg_sq.sqrt().add_(eps)
    p.mul_(-step_size)  # p_k = −lr·√(1 − β2^k)/(1 − β1^k) · m_k/(√a_k + ε)
    param.add_(p)  # x_k = x_{k−1} + p_k
    return p, grad


def swats_adam_multi_tensor(
    params: list[Tensor],
    grads: list[Tensor],
    m_grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    *,
    steps: list[float],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled: bool,
) -> tuple[list[Tensor], list[Tensor]]:
    """foreach Adam phase; equals :func:`swats_adam_single_tensor` tensor by tensor."""
    mode = "decoupled" if decoupled else "l2"
    grads, m_grads = weight_decay_multi_(params, grads, m_grads, lr=lr, weight_decay=weight_decay, mode=mode)
    torch._foreach_mul_(exp_avgs, beta1)
    foreach_add_scaled_(exp_avgs, m_grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    foreach_addcmul_(exp_avg_sqs, grads, grads, [1 - beta2] * len(exp_avg_sqs))
    denom = torch._foreach_sqrt(exp_avg_sqs)
    foreach_add_scalar_(denom, eps)
    for exp_avg, d in zip(exp_avgs, denom):  # m / (√v + ε) in place of the denominator: no second buffer
        torch.div(exp_avg, d, out=d)
    p = denom
    torch._foreach_mul_(p, per_tensor([-(lr * (1 - beta2**t) ** 0.5 / (1 - beta1**t)) for t in steps]))
    torch._foreach_add_(params, p)
    return p, grads


def swats_sgd_single_tensor(
    param: Tensor,
    grad: Tensor,
    m_grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    *,
    step: float,
    sgd_lr: float,
    beta1: float,
    weight_decay: float,
    decoupled: bool,
) -> None:
    """Reference SGD-phase update of one tensor (Algorithm 1 lines 5–8); ``exp_avg`` holds v.

    ``exp_avg_sq`` is unused (kept so both phases take the same state).
    """
    mode = "decoupled" if decoupled else "l2"  # decoupled at the SGD rate Λ: θ ← θ(1 − Λ·λ)
    m_grad, _ = weight_decay_(param, m_grad, m_grad, lr=sgd_lr, weight_decay=weight_decay, mode=mode)
    exp_avg.mul_(beta1).add_(m_grad)  # v_k = β1·v_{k−1} + g_k
    param.sub_(exp_avg * ((1 - beta1) * sgd_lr))  # x_k = x_{k−1} − (1 − β1)·Λ·v_k


def swats_sgd_multi_tensor(
    params: list[Tensor],
    grads: list[Tensor],
    m_grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    *,
    steps: list[float],
    sgd_lrs: list[float],
    beta1: float,
    weight_decay: float,
    decoupled: bool,
) -> None:
    """foreach SGD phase with one rate per tensor; equals :func:`swats_sgd_single_tensor`."""
    if decoupled and not is_zero(weight_decay):
        decay_multi_(params, [1 - r * weight_decay for r in sgd_lrs])  # θ ← θ(1 − Λ·λ), Λ per tensor
    elif not decoupled:
        m_grads, _ = add_l2_multi(m_grads, m_grads, params, weight_decay)
    torch._foreach_mul_(exp_avgs, beta1)
    torch._foreach_add_(exp_avgs, m_grads)
    torch._foreach_sub_(params, torch._foreach_mul(exp_avgs, per_tensor([(1 - beta1) * r for r in sgd_lrs])))


class SWATS(OptarenaOptimizer):
    """SWATS: Adam, then SGD with momentum at the rate the projection test found.

    Args:
        params: parameters or param groups.
        lr: the Adam-phase learning rate α (default 1e-3, Algorithm 1).
        betas: (β1, β2) (default (0.9, 0.999), Algorithm 1). β1 is also the SGD momentum (with
            dampening 1 − β1) and β2 the decay of the running average λ of γ.
        eps: added to the *unnormalised* √a in the Adam step (default 1e-9, Algorithm 1's ε as
            recalled by the research note; torch's Adam and ``pytorch-swats`` use 1e-8).
        weight_decay: λ_wd (default 0, as ``pytorch-swats``; the paper has none).
        weight_decay_mode: ``'l2'`` (g + λ_wd·θ, on a copy; default) or ``'decoupled'``
            (θ(1 − rate·λ_wd) with the phase's rate, as kozistr's ``weight_decouple``).
        granularity: ``'global'`` (one test over all parameters, the paper's Algorithm 1; default),
            ``'group'`` (one per param group) or ``'tensor'`` (one per tensor, as ``pytorch-swats``
            estimates).
        switch_tol: absolute tolerance of the switch test (default 1e-9, Algorithm 1's ε).
        switch_rtol: tolerance relative to |γ_k|, added to ``switch_tol`` (default 0: the paper's
            absolute test). ``switch_tol=1e-8, switch_rtol=1e-6`` is ``pytorch-swats``'s
            ``allclose`` test; ``switch_rtol=eps`` is kozistr's.
        options: the engine's keywords (``foreach``, ``maximize``, ``agr``, ``agr_stop_step``,
            ``agr_official_edge_cases``, ``nonfinite``), see :class:`~optarena.optim.base.OptarenaOptimizer`.
            With AGR, ``grad`` (every moment) is the
            g of the projection and ``m_grad`` feeds m and the SGD buffer v.

    The switch is exposed per group (and saved by ``state_dict()``): ``group['swats_phase']``
    (``'adam'``/``'sgd'``; ``'mixed'`` in ``'tensor'`` mode), ``group['swats_sgd_lr']`` (Λ),
    ``group['swats_switch_step']`` (k of the last Adam step), ``group['swats_switch_lr']`` (lr at the
    switch). In ``'tensor'`` mode the last three are in ``optimizer.state[p]`` instead, and a tensor is
    in the SGD phase once its ``swats_switch_step`` is set. After the switch the SGD rate is
    ``Λ · lr / lr_at_switch``, so an lr schedule keeps acting on the SGD phase.
    """

    hyperparameters: ClassVar[dict[str, Constraint]] = {
        **ADAM_HYPERPARAMETERS,
        "weight_decay_mode": OneOf(("l2", "decoupled")),
        "granularity": OneOf(GRANULARITIES),
        "switch_tol": NON_NEGATIVE,
        "switch_rtol": NON_NEGATIVE,
        "swats_phase": OneOf(PHASES),
    }
    state_names = ("exp_avg", "exp_avg_sq")
    not_compilable = (
        "its switch test reads two dot products per tensor on the host after every Adam step, and each tensor "
        "(or group) changes phase at a data-dependent step"
    )
    single_tensor_kernel = staticmethod(swats_adam_single_tensor)
    multi_tensor_kernel = staticmethod(swats_adam_multi_tensor)
    sgd_single_tensor_kernel: Callable[..., None] = staticmethod(swats_sgd_single_tensor)
    sgd_multi_tensor_kernel: Callable[..., None] = staticmethod(swats_sgd_multi_tensor)

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-9,
        weight_decay: float = 0.0,
        *,
        weight_decay_mode: str = "l2",
        granularity: str = "global",
        switch_tol: float = 1e-9,
        switch_rtol: float = 0.0,
        **options: Any,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            weight_decay_mode=weight_decay_mode,
            granularity=granularity,
            switch_tol=switch_tol,
            switch_rtol=switch_rtol,
        )
        super().__init__(params, defaults, **options)

    # -- hyperparameters -----------------------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group in the Adam phase (its switch bookkeeping lives in the group dict)."""
        param_group.setdefault("swats_step", 0)
        param_group.setdefault("swats_phase", "adam")  # for logging; 'mixed' in 'tensor' mode
        for key, value in _UNIT_DEFAULTS.items():
            param_group.setdefault(key, value)
        super().add_param_group(param_group)

    def _kernel_hyperparameters(self, group: dict[str, Any]) -> dict[str, Any]:
        beta1, beta2 = group["betas"]
        return dict(
            lr=scalar_value(group["lr"]),
            beta1=scalar_value(beta1),
            beta2=scalar_value(beta2),
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            decoupled=group["weight_decay_mode"] == "decoupled",
        )

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state = super()._init_state(p, group)
        if group["granularity"] == "tensor":
            state.update(_UNIT_DEFAULTS)
        return state

    # -- the switch ------------------------------------------------------------------------------

    def _global_groups(self) -> list[dict[str, Any]]:
        return [g for g in self.param_groups if g["granularity"] == "global"]

    def _sync_global(self) -> None:
        """Copy the global unit (kept in the first 'global' group) to every other 'global' group."""
        groups = self._global_groups()
        if not groups:
            return
        beta2s = {scalar_value(g["betas"][1]) for g in groups}
        if len(beta2s) > 1:
            raise ValueError(
                "Invalid betas: granularity='global' averages one γ over every such group, so they need "
                f"one β2; got {sorted(beta2s)}"
            )
        record = groups[0]
        for group in groups[1:]:
            for key in ("swats_phase", "swats_lambda", "swats_step", "swats_sgd_lr", "swats_switch_step"):
                group[key] = record[key]
        for group in groups:  # a group added after the switch starts SGD at its current lr
            if _in_sgd(group) and group["swats_switch_lr"] is None:
                group["swats_switch_lr"] = scalar_value(group["lr"])

    @staticmethod
    def _sgd_rate(unit: dict[str, Any], lr: float) -> float:
        """Λ · lr / lr_at_switch: an lr schedule keeps scaling the SGD phase."""
        lr_at_switch = unit["swats_switch_lr"]
        if not lr_at_switch:  # the group had lr 0 at the switch: nothing to scale, it stays still
            return 0.0
        return unit["swats_sgd_lr"] * (lr / lr_at_switch)

    def _advance(self, unit: dict[str, Any], pp: float, pg: float, k: float, group: dict[str, Any]) -> float | None:
        """Algorithm 1 lines 14–23 for one unit: update λ; return Λ when the unit switches."""
        if pg == 0:  # λ_k = λ_{k−1}
            return None
        beta2 = scalar_value(group["betas"][1])
        gamma = pp / -pg
        lam = beta2 * unit["swats_lambda"] + (1 - beta2) * gamma
        unit["swats_lambda"] = lam
        corrected = lam / one_minus_pow(beta2, k)
        tolerance = group["switch_tol"] + group["switch_rtol"] * abs(gamma)
        # Λ > 0: a negative rate would ascend (pytorch-swats and kozistr check it too).
        if k > 1 and corrected > 0 and abs(corrected - gamma) < tolerance:
            return corrected
        return None

    def _switch_tensor(self, state: dict[str, Any], sgd_lr: float, k: float, lr: float) -> None:
        """Enter the SGD phase for one tensor: record Λ, k and lr, and start v (in ``exp_avg``) at 0."""
        state.update(swats_sgd_lr=sgd_lr, swats_switch_step=int(k), swats_switch_lr=lr)
        state["exp_avg"].zero_()

    def _switch_groups(self, groups: list[dict[str, Any]], sgd_lr: float, k: float) -> None:
        """Enter the SGD phase for every tensor of ``groups`` (one unit)."""
        for group in groups:
            group.update(
                swats_phase="sgd",
                swats_sgd_lr=sgd_lr,
                swats_switch_step=int(k),
                swats_switch_lr=scalar_value(group["lr"]),
            )
            for p in group["params"]:
                if len(self.state[p]) > 0:
                    self.state[p]["exp_avg"].zero_()

    # -- the step --------------------------------------------------------------------------------

    def _apply_step(self, **kwargs: Any) -> None:
        """One SWATS step over every group: the updates in each unit's phase, then the switch tests."""
        self._before_step()
        self._sync_global()
        records: list[tuple[Any, ...]] = []
        global_groups = self._global_groups()
        global_took_part = False
        for group in self.param_groups:
            took_part = self._step_group(group, records)
            if took_part and group["granularity"] == "global":
                global_took_part = True
            elif took_part:
                group["swats_step"] += 1
        if global_took_part:
            global_groups[0]["swats_step"] += 1
        # The switch tests run after every update: 'global' needs the projections of all groups.
        self._decide(records, global_groups)
        self._sync_global()
        self._summarise_tensor_groups()
        self._after_step()

    def _units(self, group: dict[str, Any], live: list[Tensor]) -> list[dict[str, Any]]:
        """The dict holding each live tensor's phase: its state ('tensor' mode) or its group."""
        if group["granularity"] == "tensor":
            units = [self.state[p] for p in live]
            for unit in units:  # a state made under another granularity
                for key, value in _UNIT_DEFAULTS.items():
                    unit.setdefault(key, value)
            return units
        return [group] * len(live)

    def _step_group(self, group: dict[str, Any], records: list[tuple[Any, ...]]) -> bool:
        """Update one group's tensors in their phases; append (group, p, k, pᵀp, pᵀg) per Adam step."""
        live = [p for p in group["params"] if p.grad is not None]  # the order of _gather
        params, grads, states, steps = self._gather(group)
        if not params:
            return False
        for s in steps:
            s += 1
        step_values = [s.item() for s in steps]
        foreach = self._use_foreach(group)
        grads, m_grads = apply_pipeline(pipeline(group), grads, step_values, foreach=foreach)
        units = self._units(group, live)
        hyper = self._kernel_hyperparameters(group)
        lr = hyper["lr"]
        sgd_hyper = dict(beta1=hyper["beta1"], weight_decay=hyper["weight_decay"], decoupled=hyper["decoupled"])
        cls = type(self)

        def batches(sgd: bool) -> list[tuple[list[int], tuple[list[Any], ...]]]:
            chosen = [i for i, u in enumerate(units) if _in_sgd(u) == sgd]
            out = []
            for c in group_by_device_and_dtype(_pick(params, chosen)):
                idx = _pick(chosen, c)
                out.append((idx, tuple(_pick(lst, idx) for lst in (params, grads, m_grads, *states))))
            return out

        for idx, args in batches(sgd=False):
            if foreach:
                ps, gs = cls.multi_tensor_kernel(*args, steps=_pick(step_values, idx), **hyper)
            else:
                pairs = [
                    cls.single_tensor_kernel(*[a[j] for a in args], step=step_values[i], **hyper)
                    for j, i in enumerate(idx)
                ]
                ps, gs = [pair[0] for pair in pairs], [pair[1] for pair in pairs]
            # p_kᵀp_k and p_kᵀg_k per tensor, through the library's reduction helper.
            for i, pp, pg in zip(idx, per_tensor_dot(ps, ps), per_tensor_dot(ps, gs)):
                records.append((group, live[i], step_values[i], pp, pg))

        for idx, args in batches(sgd=True):
            rates = [self._sgd_rate(units[i], lr) for i in idx]
            if foreach:
                cls.sgd_multi_tensor_kernel(*args, steps=_pick(step_values, idx), sgd_lrs=rates, **sgd_hyper)
            else:
                for j, i in enumerate(idx):
                    cls.sgd_single_tensor_kernel(
                        *[a[j] for a in args], step=step_values[i], sgd_lr=rates[j], **sgd_hyper
                    )
        return True

    def _decide(self, records: list[tuple[Any, ...]], global_groups: list[dict[str, Any]]) -> None:
        """Run the projection test of every unit that took an Adam step (after all the updates)."""
        if not records:
            return
        values = _floats([r[3] for r in records] + [r[4] for r in records])
        dots = list(zip(values[: len(records)], values[len(records) :]))
        group_sums: dict[int, list[float]] = {}  # 'group' mode: id(group) -> [Σ pᵀp, Σ pᵀg]
        global_sum = [0.0, 0.0]
        for (group, p, k, _, _), (pp, pg) in zip(records, dots):
            mode = group["granularity"]
            if mode == "tensor":
                sgd_lr = self._advance(self.state[p], pp, pg, k, group)
                if sgd_lr is not None:
                    self._switch_tensor(self.state[p], sgd_lr, k, scalar_value(group["lr"]))
                continue
            acc = global_sum if mode == "global" else group_sums.setdefault(id(group), [0.0, 0.0])
            acc[0] += pp
            acc[1] += pg
        for group in self.param_groups:
            if id(group) in group_sums:
                sgd_lr = self._advance(group, *group_sums[id(group)], group["swats_step"], group)
                if sgd_lr is not None:
                    self._switch_groups([group], sgd_lr, group["swats_step"])
        if any(r[0]["granularity"] == "global" for r in records):
            record = global_groups[0]
            sgd_lr = self._advance(record, *global_sum, record["swats_step"], record)
            if sgd_lr is not None:
                self._switch_groups(global_groups, sgd_lr, record["swats_step"])

    def _summarise_tensor_groups(self) -> None:
        """A 'tensor'-mode group's phase: 'adam', 'sgd', or 'mixed' while its tensors disagree."""
        for group in self.param_groups:
            if group["granularity"] != "tensor":
                continue
            phases = {_in_sgd(self.state[p]) for p in group["params"] if len(self.state[p]) > 0}
            group["swats_phase"] = "mixed" if len(phases) > 1 else ("sgd" if phases == {True} else "adam")


def _in_sgd(unit: dict[str, Any]) -> bool:
    return unit.get("swats_switch_step") is not None


def _pick(values: list[Any], idx: list[int]) -> list[Any]:
    return [values[i] for i in idx]


def _floats(scalars: list[Tensor]) -> list[float]:
    """0-d tensors as Python floats, with one device-to-host copy per device."""
    out: list[float] = [0.0] * len(scalars)
    by_device: dict[torch.device, list[int]] = {}
    for i, s in enumerate(scalars):
        by_device.setdefault(s.device, []).append(i)
    for idx in by_device.values():
        values = full_tensor(torch.stack([scalars[i].to(torch.float64) for i in idx])).tolist()
        for i, v in zip(idx, values):
            out[i] = v
    return out


REGISTRY_ENTRIES = [
    OptimizerInfo(
        "swats",
        SWATS,
        "SWATS: Adam until a projection test fixes an SGD rate, then SGD with momentum",
        supports_agr=True,
        paper="Keskar & Socher, Improving Generalization Performance by Switching from Adam to SGD, arXiv:1712.07628",
        code="none from the authors; de facto github.com/Mrpatekful/swats (PyPI pytorch-swats, buggy SGD phase)",
        notes="granularity='global' (paper) | 'group' | 'tensor'; switch_tol absolute 1e-9 (+ switch_rtol)",
        test_inputs=(
            OptimizerInput("global", {"granularity": "global"}, sharded=True),
            OptimizerInput("group", {"granularity": "group"}, sharded=True),
            OptimizerInput("tensor", {"granularity": "tensor"}),
            OptimizerInput("global-switch", {"switch_tol": 1e3}),
            OptimizerInput("group-switch-l2", {"granularity": "group", "switch_tol": 1e3, "weight_decay": 1e-2}),
            OptimizerInput("tensor-switch-rtol", {"granularity": "tensor", "switch_tol": 0.0, "switch_rtol": 0.5}),
            OptimizerInput(
                "decoupled-switch", {"weight_decay": 1e-2, "weight_decay_mode": "decoupled", "switch_tol": 1e3}
            ),
            OptimizerInput("agr_paper-switch", {"agr": "paper", "switch_tol": 1e3}),
        ),
    )
]
