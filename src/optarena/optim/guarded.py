"""What every registered optimizer does alike, torch's baselines included.

:class:`GuardedOptimizer` sits between ``torch.optim.Optimizer`` and every optimizer of the
registry (the engine's base class and the torch baselines) and gives them three things once:

* **Checked hyperparameters.** A class declares its keywords' constraints in ``hyperparameters``
  (see :mod:`optarena.validation`); every param group — the constructor's, ``add_param_group``'s
  and a loaded state_dict's — is checked against them before it is used.
* **A non-finite gradient policy**, ``nonfinite=``:

  - ``'propagate'`` (default, as torch): the step runs on whatever the gradients hold;
  - ``'skip'``: if any gradient holds a NaN or an infinity, the step is skipped — parameters,
    state, step counters and clocks untouched, as ``torch.amp.GradScaler`` skips — and counted in
    ``skipped_steps`` (saved in the state_dict);
  - ``'raise'``: :class:`NonFiniteGradientError`, with the parameters and state untouched.

  ``'skip'`` and ``'raise'`` read one number per device back to the host every step.
* **A step wrapper that costs nothing when idle.** torch wraps each optimizer class's ``step`` once, to run the
  step hooks inside a ``record_function`` that labels the step for the profiler; on a CPU that costs 13–17 µs a
  step (fused AdamW's step on a 20k-parameter CNN: 58 µs through it, 45 past it). Here torch's own wrapper runs only
  when it has work: a step hook registered (on the optimizer or globally) or the autograd profiler on
  (``torch.profiler``, ``emit_nvtx``, ``emit_itt``); otherwise the step is called directly.
* **State that knows whose it is.** ``state_dict()`` stamps every param group with the optimizer
  that saved it (``saved_by``); ``load_state_dict`` refuses a state saved by another optimizer, or
  by the same one with another state layout (AdaBound vs AMSBound, Adam vs AMSGrad), naming both.
  ``load_state_dict(state, convert=True)`` converts where the states mean the same thing (same
  ``state_format``): the saved tensors and hyperparameters are kept, keys only the target has are
  filled from its own groups, and a running-maximum buffer is added (from ``exp_avg_sq``) or dropped
  to match the target's layout.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.distributed.tensor import DTensor
from torch.optim import Optimizer
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

from optarena.optim.hooks import NO_HOOKS, LoopHooks
from optarena.optim.wrapper import WRAPPER_STATE_KEYS
from optarena.validation import Constraint, OneOf, check_declared

NONFINITE_POLICIES: tuple[str, ...] = ("propagate", "skip", "raise")
SAVED_BY = "saved_by"  # param-group key of a state_dict: the optimizer (and layout) that saved it
SKIPPED_STEPS = "skipped_steps"  # param-group key of a state_dict: steps skipped for non-finite gradients
_STAMPS = (SAVED_BY, SKIPPED_STEPS)
_FORMATS: dict[str, str] = {}  # state_owner -> state_format, filled as the classes are defined


class NonFiniteGradientError(FloatingPointError):
    """A gradient held NaN or infinity and the optimizer's policy is ``nonfinite='raise'``."""


def nonfinite_counts(tensors: list[Tensor]) -> list[int]:
    """The number of NaN and infinite elements of each tensor (sharded tensors: over all shards).

    One host read per device. Sparse tensors count their stored values; complex ones both parts.
    """
    counts: list[Tensor] = []
    for t in tensors:
        values = t.coalesce().values() if t.is_sparse else t
        values = torch.view_as_real(values) if values.is_complex() else values
        count = torch.logical_not(torch.isfinite(values)).sum()
        counts.append(count.full_tensor() if isinstance(count, DTensor) else count)
    out = [0] * len(counts)
    by_device: dict[torch.device, list[int]] = {}
    for i, c in enumerate(counts):
        by_device.setdefault(c.device, []).append(i)
    for idx in by_device.values():
        for i, value in zip(idx, torch.stack([counts[i] for i in idx]).tolist()):
            out[i] = int(value)
    return out


class GuardedOptimizer(Optimizer):
    """Checked hyperparameters, the non-finite gradient policy and owned state (see the module docstring).

    A subclass declares ``hyperparameters`` (merged along the class hierarchy), may extend
    :meth:`_validate_group` with checks between keywords, and names its state with ``state_owner``
    (the stamp), ``state_format`` (what its per-parameter state means, for ``convert=True``) and
    ``identity_keys`` (group keys that make it another optimizer of the registry: AGR's mode, AMSGrad)
    with ``layout_buffers`` (the flags among them that add a buffer to the state).
    """

    hyperparameters: ClassVar[dict[str, Constraint]] = {"nonfinite": OneOf(NONFINITE_POLICIES)}
    state_owner: ClassVar[str] = ""
    state_format: ClassVar[str] = ""
    #: Group flags that add a running-maximum buffer to the per-parameter state: flag -> (source, buffer).
    layout_buffers: ClassVar[dict[str, tuple[str, str]]] = {}
    #: Group keys that tell registry entries of one class apart (``adan`` vs ``adan_agr``); part of the stamp.
    identity_keys: ClassVar[tuple[str, ...]] = ()
    #: Group keys a state_dict may lack because the class fills them when it loads (torch's ``__setstate__``).
    backfilled_keys: ClassVar[frozenset[str]] = frozenset()
    #: What a training loop must do for this optimizer besides zero_grad/backward/step (see optarena.optim.hooks).
    loop_hooks: ClassVar[LoopHooks] = NO_HOOKS
    nonfinite: str = "propagate"
    skipped_steps: int = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.state_owner:
            _FORMATS.setdefault(cls.state_owner, cls.state_format or cls.state_owner)

    @classmethod
    def declared_hyperparameters(cls) -> dict[str, Constraint]:
        """Every declared keyword's constraint, the class's own over its bases'."""
        out: dict[str, Constraint] = {}
        for klass in reversed(cls.__mro__):
            out.update(vars(klass).get("hyperparameters", {}))
        return out

    def __getstate__(self) -> dict[str, Any]:
        # torch's keeps only defaults, state and param_groups: a deepcopy or pickle would reset the policy.
        return {**super().__getstate__(), "nonfinite": self.nonfinite, "skipped_steps": self.skipped_steps}

    def _set_nonfinite_policy(self, nonfinite: str) -> None:
        OneOf(NONFINITE_POLICIES).check("nonfinite", nonfinite)
        self.nonfinite = nonfinite
        self.skipped_steps = 0

    # -- hyperparameters -------------------------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Check the group's hyperparameters (defaults filled in) before adding it."""
        if isinstance(param_group, dict):
            self._validate_group({**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}})
        super().add_param_group(param_group)

    def _validate_group(self, group: dict[str, Any]) -> None:
        """Raise ``ValueError`` naming the first bad hyperparameter of ``group``; extend for cross-key rules."""
        check_declared(group, self.declared_hyperparameters())

    # -- the step ----------------------------------------------------------------------------------

    @staticmethod
    def profile_hook_step(func: Callable[..., Any]) -> Callable[..., Any]:
        """The wrapper torch puts around the class's ``step`` (see the module docstring): torch's own, entered only
        when a step hook or the profiler is there to see it."""
        hooked = Optimizer.profile_hook_step(func)

        @functools.wraps(func)
        def step(self: Optimizer, *args: Any, **kwargs: Any) -> Any:
            if (
                self._optimizer_step_pre_hooks
                or self._optimizer_step_post_hooks
                or _global_optimizer_pre_hooks
                or _global_optimizer_post_hooks
                or torch._C._autograd._profiler_enabled()
            ):
                return hooked(self, *args, **kwargs)
            return func(self, *args, **kwargs)

        return step

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        """One step; returns the closure's loss when one is given. Applies the ``nonfinite`` policy first."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.gradients_admitted():
            self._apply_step(**kwargs)
        return loss

    def gradients_admitted(self) -> bool:
        """Apply the policy to the gradients now in ``p.grad``: True to step, False to skip (counted).

        Raises :class:`NonFiniteGradientError` under ``nonfinite='raise'``. Wrappers call it on the
        optimizer they drive, before transforming its gradients.
        """
        if self.nonfinite == "propagate" or hasattr(self, "found_inf"):  # a GradScaler drives a fused step
            return True
        located = [(gi, pi, p) for gi, group in enumerate(self.param_groups) for pi, p in enumerate(group["params"])]
        located = [(gi, pi, p) for gi, pi, p in located if p.grad is not None]
        counts = nonfinite_counts([p.grad for _, _, p in located])
        bad = [(loc, c) for loc, c in zip(located, counts) if c]
        if not bad:
            return True
        if self.nonfinite == "skip":
            self.skipped_steps += 1
            return False
        (gi, pi, p), _ = bad[0]
        raise NonFiniteGradientError(
            f"{type(self).__name__}: non-finite gradient: {sum(c for _, c in bad)} NaN/inf value(s) in "
            f"{len(bad)} of {len(located)} gradient(s), the first in param group {gi}, parameter {pi} "
            f"(shape {tuple(p.shape)}); nothing was updated. nonfinite='raise' (use 'skip' to skip such steps)"
        )

    def _apply_step(self, **kwargs: Any) -> None:
        """The update itself; here, the next class's ``step`` (torch's own, for a baseline)."""
        mro = type(self).__mro__
        for klass in mro[mro.index(GuardedOptimizer) + 1 :]:
            if "step" in vars(klass):
                fn = vars(klass)["step"]
                # torch wraps a class's step with its hooks on first use; ours already ran them once.
                fn = fn.__wrapped__ if getattr(fn, "hooked", False) else fn
                fn(self, **kwargs)
                return
        raise TypeError(f"{type(self).__name__} has no step to apply")  # pragma: no cover - class misuse

    # -- checkpoints -------------------------------------------------------------------------------

    def _saved_by(self, group: dict[str, Any]) -> str:
        """The stamp of one group: the owner, plus the layout flags that are on."""
        keys = (*self.identity_keys, *self.layout_buffers)
        marks = [key if group.get(key) is True else f"{key}={group[key]}" for key in keys if group.get(key)]
        return self.state_owner + "".join(f"+{mark}" for mark in marks)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["param_groups"] = [
            {**saved, SAVED_BY: self._saved_by(group), SKIPPED_STEPS: self.skipped_steps}
            for saved, group in zip(state["param_groups"], self.param_groups)
        ]
        return state

    def load_state_dict(self, state_dict: dict[str, Any], *, convert: bool = False) -> None:
        """Load a state saved by this optimizer (or, with ``convert=True``, by one whose state means the same).

        Raises ``ValueError`` naming the saver and this optimizer when they differ.
        """
        if not isinstance(state_dict, dict) or not isinstance(state_dict.get("param_groups"), list):
            raise ValueError("Invalid state_dict: expected a dict with 'state' and 'param_groups'")
        state_dict = dict(state_dict)
        saved_groups = [dict(group) for group in state_dict["param_groups"]]
        if len(saved_groups) != len(self.param_groups):
            # Another optimizer's state is named as such, whatever its number of groups (Muon splits its own).
            saved_stamps = {group.get(SAVED_BY) for group in saved_groups}
            foreign = sorted(s for s in saved_stamps if s and self._owner_of(s) != self.state_owner)
            whose = f" for {self._describe()}: param group(s) saved by {', '.join(foreign)};" if foreign else ":"
            raise ValueError(
                f"Invalid state_dict{whose} it has {len(saved_groups)} param group(s), {type(self).__name__} has "
                f"{len(self.param_groups)}"
            )
        for group in saved_groups:
            self._backfill(group)
        stamps = [group.pop(SAVED_BY, None) for group in saved_groups]
        skipped = [group.pop(SKIPPED_STEPS, None) for group in saved_groups]
        problem = self._foreign(stamps, saved_groups)
        if problem is not None:
            if not convert:
                raise ValueError(
                    f"Invalid state_dict for {self._describe()}: {problem}. Load it into the optimizer that saved "
                    "it, or pass convert=True where the two keep the same state"
                )
            owners = {self._owner_of(s) for s in stamps if s is not None}
            if owners and owners != {self.state_owner} and not self._same_format(owners):
                raise ValueError(
                    f"Cannot convert a state_dict of {', '.join(sorted(owners))} into {self._describe()}: "
                    "their per-parameter states mean different things"
                )
            saved_groups, state_dict["state"] = self._converted(saved_groups, state_dict.get("state", {}))
        for i, group in enumerate(saved_groups):
            try:
                self._validate_group(group)
            except ValueError as error:
                raise ValueError(f"Invalid state_dict: param group {i}: {error}") from None
        state_dict["param_groups"] = saved_groups
        super().load_state_dict(state_dict)
        self.skipped_steps = next((int(s) for s in skipped if s is not None), 0)

    def _backfill(self, group: dict[str, Any]) -> None:
        """Give a saved group the keys it lacks because it was written before they existed (none here)."""

    def _describe(self) -> str:
        stamps = sorted({self._saved_by(g) for g in self.param_groups})
        return ", ".join(stamps) or type(self).__name__

    @staticmethod
    def _owner_of(stamp: str) -> str:
        return stamp.split("+")[0]

    def _same_format(self, owners: set[str]) -> bool:
        formats = {_FORMATS.get(owner, owner) for owner in owners}
        return formats == {_FORMATS.get(self.state_owner, self.state_owner)}

    def _foreign(self, stamps: list[str | None], saved_groups: list[dict[str, Any]]) -> str | None:
        """Why the saved groups are not this optimizer's own (None when they are)."""
        for i, (stamp, saved, ours) in enumerate(zip(stamps, saved_groups, self.param_groups)):
            if stamp is not None and stamp != self._saved_by(ours):
                return f"param group {i} was saved by {stamp}, this group is {self._saved_by(ours)}"
            wrappers = sorted(WRAPPER_STATE_KEYS & set(saved))
            if wrappers:
                return f"param group {i} holds the state of a {', '.join(wrappers)} wrapper around the optimizer"
            missing = sorted(set(ours) - set(saved) - {"params"} - self.backfilled_keys)
            if missing:
                return f"param group {i} lacks keys this optimizer needs ({', '.join(missing)})"
        return None

    def _converted(
        self, saved_groups: list[dict[str, Any]], state: dict[Any, Any]
    ) -> tuple[list[dict[str, Any]], dict[Any, Any]]:
        """The saved groups and state rewritten for this optimizer's keys and layout (``convert=True``)."""
        groups, state = [], dict(state)
        for saved, ours in zip(saved_groups, self.param_groups):
            group = {k: v for k, v in saved.items() if k in ours}
            group.update({k: v for k, v in ours.items() if k not in saved and k != "params"})
            for key in self.identity_keys:  # the target's identity wins (e.g. its AGR mode)
                group[key] = ours[key]
            for flag, (source, buffer) in self.layout_buffers.items():
                group[flag] = ours[flag]  # and its layout
                for key in saved["params"]:
                    entry = state.get(key)
                    if entry is None:
                        continue
                    entry = {k: v for k, v in entry.items() if not (isinstance(k, str) and "." in k)}
                    if group[flag] and buffer not in entry and source in entry:
                        entry[buffer] = entry[source].clone()
                    elif not group[flag]:
                        entry.pop(buffer, None)
                    state[key] = entry
            groups.append(group)
        for key, entry in state.items():  # a wrapper's per-parameter keys ("lookahead.slow") are dropped
            state[key] = {k: v for k, v in entry.items() if not (isinstance(k, str) and "." in k)}
        return groups, state
