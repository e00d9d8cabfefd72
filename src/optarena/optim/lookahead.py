"""Lookahead (Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward, 1 step back", NeurIPS 2019).

Around any optimizer: the inner optimizer moves the fast weights θ for ``k`` steps, then::

    φ ← φ + α·(θ − φ)        the slow weights move a fraction α towards the fast ones
    θ ← φ                    and the fast weights restart from there

Faithful to the authors' code (``michaelrzhang/lookahead``) where it is right — slow weights
copied from the parameters at construction (φ₀ = θ₀), every parameter synced, one counter for the
optimizer — and fixed where it is not: the ``'pullback'`` momentum option there aliases its cached
buffer to the live one after the first sync, which makes every later pullback a no-op; here the
cache is a copy. The slow weights and the counter are saved in ``state_dict()`` (the authors' code
saves neither; timm creates φ lazily at the first sync, which skips the first pull-back).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim import Optimizer

from optarena.optim.wrapper import OptimizerWrapper
from optarena.validation import UNIT_INTERVAL, Constraint, Integer, OneOf, check_declared

PULLBACK_MODES = ("none", "reset", "pullback")
# The inner optimizer's momentum buffer, by the name its state uses (SGD's, then the Adam family's).
MOMENTUM_KEYS = ("momentum_buffer", "exp_avg")


class Lookahead(OptimizerWrapper):
    """Lookahead around ``optimizer``.

    Args:
        optimizer: the inner ("fast") optimizer; it owns the param groups.
        k: inner steps between synchronisations (default 5, the paper and the authors' code).
        alpha: slow-weight step size α in [0, 1] (default 0.5, the paper's common setting; the
            authors' code defaults to 0.8).
        pullback: what happens to the inner optimizer's momentum at a sync — ``'none'`` (keep it,
            default), ``'reset'`` (zero it) or ``'pullback'`` (interpolate it like the weights:
            ``buf ← α·buf + (1−α)·cached``, ``cached ← buf``). The momentum is the inner state's
            ``momentum_buffer`` (SGD) or ``exp_avg`` (the Adam family).

    Evaluate on the slow weights with ``with optimizer.slow_weights(): ...``.
    """

    state_key = "lookahead"
    hyperparameters: ClassVar[dict[str, Constraint]] = {
        "k": Integer(1),
        "alpha": UNIT_INTERVAL,
        "pullback": OneOf(PULLBACK_MODES),
    }

    def __init__(self, optimizer: Optimizer, k: int = 5, alpha: float = 0.5, pullback: str = "none") -> None:
        check_declared({"k": k, "alpha": alpha, "pullback": pullback}, self.hyperparameters)
        super().__init__(optimizer)
        self.k = k
        self.alpha = float(alpha)
        self.pullback = pullback
        self.steps_taken = 0
        self.slow: dict[Tensor, Tensor] = {}
        self.slow_momentum: dict[Tensor, Tensor] = {}
        for group in self.param_groups:
            self._init_slow(group["params"])

    def _init_slow(self, params: list[Tensor]) -> None:
        for p in params:
            self.slow[p] = p.detach().clone()
            if self.pullback == "pullback":
                self.slow_momentum[p] = torch.zeros_like(p)

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _repr_options(self) -> dict[str, Any]:
        return {"k": self.k, "alpha": self.alpha, "pullback": self.pullback}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._init_slow(self.param_groups[-1]["params"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        skipped = getattr(self.optimizer, "skipped_steps", 0)
        loss = self.optimizer.step(closure=closure)  # by keyword, as a step hook sees a bare step()
        if getattr(self.optimizer, "skipped_steps", 0) != skipped:
            return loss  # the inner optimizer skipped a non-finite step: so does the clock
        self.steps_taken += 1
        if self.steps_taken % self.k == 0:
            self.sync()
        return loss

    @torch.no_grad()
    def sync(self) -> None:
        """Pull the fast weights back: φ ← φ + α(θ − φ), θ ← φ (and the momentum, per ``pullback``)."""
        for p in self._params():
            slow = self.slow[p]
            slow.add_(p - slow, alpha=self.alpha)
            p.copy_(slow)
            if self.pullback == "none":
                continue
            buffer = self._momentum_buffer(p)
            if buffer is None:
                continue
            if self.pullback == "reset":
                buffer.zero_()
            else:
                cached = self.slow_momentum[p]
                buffer.mul_(self.alpha).add_(cached, alpha=1.0 - self.alpha)
                cached.copy_(buffer)  # a copy: the authors' aliasing made later pullbacks no-ops

    def _momentum_buffer(self, p: Tensor) -> Tensor | None:
        state = self.optimizer.state.get(p, {})
        for key in MOMENTUM_KEYS:
            if isinstance(state.get(key), Tensor):
                return state[key]
        return None

    @contextmanager
    def slow_weights(self) -> Iterator[None]:
        """Swap the slow weights into the parameters for the duration of the block (e.g. evaluation)."""
        params = self._params()
        backup = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p in params:
                p.copy_(self.slow[p])
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(params, backup):
                    p.copy_(b)

    # -- checkpoints ------------------------------------------------------------------------------

    def _wrapper_state(self) -> dict[str, Any]:
        """The step count, and per parameter (by its index in the groups) its slow weights."""
        per_param: dict[int, dict[str, Tensor]] = {}
        for i, p in enumerate(self._params()):
            per_param[i] = {"slow": self.slow[p].clone()}
            if self.pullback == "pullback":
                per_param[i]["slow_momentum"] = self.slow_momentum[p].clone()
        return {"steps_taken": self.steps_taken, "per_param": per_param}

    def _reset_wrapper_state(self) -> None:
        """Slow weights from the current parameters and the clock at 0, as at construction."""
        self.steps_taken = 0
        self._init_slow(self._params())

    def _load_wrapper_state(self, state: dict[str, Any]) -> None:
        params = self._params()
        per_param = state.get("per_param", {})
        if "slow" in state:  # a file written before the slow weights moved into the per-parameter state
            per_param = {i: {"slow": s} for i, s in enumerate(state["slow"])}
            for i, cached in enumerate(state.get("slow_momentum", [])):
                per_param[i]["slow_momentum"] = cached
        if sorted(per_param) != list(range(len(params))):
            raise ValueError(
                f"Invalid state_dict: it holds slow weights for {len(per_param)} parameters, "
                f"the optimizer has {len(params)}"
            )
        self.steps_taken = int(state["steps_taken"])
        for i, p in enumerate(params):
            self.slow[p] = per_param[i]["slow"].to(device=p.device, dtype=p.dtype).clone()
            if "slow_momentum" in per_param[i]:
                self.slow_momentum[p] = per_param[i]["slow_momentum"].to(device=p.device, dtype=p.dtype).clone()


# Cited by the registry entries that wrap an optimizer in Lookahead (baselines.py, adaburst.py).
LOOKAHEAD_PAPER = "Zhang, Lucas, Hinton, Ba, Lookahead Optimizer: k steps forward, 1 step back, NeurIPS 2019"
LOOKAHEAD_CODE = "github.com/michaelrzhang/lookahead (pullback fixed, slow weights saved)"
