"""OptimizerWrapper: the shared base of optimizers that wrap another (AGR in front, Lookahead around).

A wrapper *is* a ``torch.optim.Optimizer`` (so schedulers and checkpoint code accept it) that
shares the wrapped optimizer's ``param_groups``, ``state`` and ``defaults``: a scheduler that
sets ``lr`` on the wrapper sets it on the wrapped optimizer. Attributes the wrapper does not
have are looked up on the wrapped optimizer (e.g. Adaburst's ``epoch_end``). A subclass keeps
its own state in ``_wrapper_state()`` / ``_load_wrapper_state()``, saved under its own key of
``state_dict()``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer

#: Every wrapper's ``state_key``: a param group holding one was saved through that wrapper.
WRAPPER_STATE_KEYS: set[str] = set()


class OptimizerWrapper(Optimizer):
    """Base of optimizers that drive another optimizer (see the module docstring)."""

    state_key: str = "wrapper"
    #: An older name of ``state_key`` still read from param groups (a dict there, never a string).
    legacy_state_key: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        WRAPPER_STATE_KEYS.add(cls.state_key)

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"Invalid optimizer: {type(optimizer).__name__} is not a torch.optim.Optimizer")
        # torch.optim.Optimizer.__init__ is not called: the groups and state are the wrapped one's.
        self.optimizer = optimizer
        self.defaults = optimizer.defaults
        self._link_hooks()

    def _link_hooks(self) -> None:
        self._optimizer_step_pre_hooks = self.optimizer._optimizer_step_pre_hooks
        self._optimizer_step_post_hooks = self.optimizer._optimizer_step_post_hooks
        self._optimizer_state_dict_pre_hooks = self.optimizer._optimizer_state_dict_pre_hooks
        self._optimizer_state_dict_post_hooks = self.optimizer._optimizer_state_dict_post_hooks
        self._optimizer_load_state_dict_pre_hooks = self.optimizer._optimizer_load_state_dict_pre_hooks
        self._optimizer_load_state_dict_post_hooks = self.optimizer._optimizer_load_state_dict_post_hooks

    # -- shared with the wrapped optimizer ------------------------------------------------------

    @property  # type: ignore[override]
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @property  # type: ignore[override]
    def state(self) -> Any:
        return self.optimizer.state

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not found normally; guard the ones pickling probes first.
        if name == "optimizer" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_optimizer_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._link_hooks()

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self._repr_options().items())
        inner = "\n".join("    " + line for line in repr(self.optimizer).splitlines())
        return f"{type(self).__name__}({options},\n{inner}\n)"

    def _repr_options(self) -> dict[str, Any]:
        return {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)

    # -- checkpoints ------------------------------------------------------------------------------

    def _wrapper_state(self) -> dict[str, Any]:
        return {}

    def _load_wrapper_state(self, state: dict[str, Any]) -> None:
        """Restore what ``_wrapper_state`` saved (a subclass with state overrides both)."""

    # The wrapper's state travels inside the wrapped optimizer's state_dict: per-parameter tensors in
    # each parameter's entry of "state" and the rest in every param group, both under ``state_key``.
    # That is where torch.distributed.checkpoint's get_state_dict/set_state_dict look (they keep a
    # parameter's state and a group's keys, and reshard DTensors), and where it survives them.
    def state_dict(self) -> dict[str, Any]:
        state = self.optimizer.state_dict()
        own = self._wrapper_state()
        per_param = own.pop("per_param", {})
        entries = dict(state["state"])
        for index, tensors in per_param.items():
            entries[index] = {**entries.get(index, {}), **{f"{self.state_key}.{k}": v for k, v in tensors.items()}}
        state["state"] = entries
        state["param_groups"] = [{**group, self.state_key: own} for group in state["param_groups"]]
        return state

    def load_state_dict(self, state_dict: dict[str, Any], *, convert: bool = False) -> None:
        """Load a state this wrapper saved; ``convert=True`` also takes the bare optimizer's, starting afresh.

        A state saved without this wrapper is refused (``ValueError``) unless ``convert=True``, which
        loads it into the wrapped optimizer and restarts the wrapper's own state (:meth:`_reset_wrapper_state`).
        """
        if not isinstance(state_dict, dict) or not isinstance(state_dict.get("param_groups"), list):
            raise ValueError("Invalid state_dict: expected a dict with 'state' and 'param_groups'")
        state_dict = dict(state_dict)
        prefix = f"{self.state_key}."
        per_param: dict[int, dict[str, Any]] = {}
        entries = {}
        for index, entry in state_dict.get("state", {}).items():
            mine = {k[len(prefix) :]: v for k, v in entry.items() if isinstance(k, str) and k.startswith(prefix)}
            if mine:
                per_param[index] = mine
            rest = {k: v for k, v in entry.items() if k not in {prefix + m for m in mine}}
            if rest:
                entries[index] = rest
        state_dict["state"] = entries
        # A parameter's key is its index in the groups (torch) or its name (after DCP's set_state_dict):
        # either way, its position in the saved groups' "params" lists is the parameter's position.
        positions = {key: i for i, key in enumerate(k for g in state_dict["param_groups"] for k in g["params"])}
        per_param = {positions[key]: tensors for key, tensors in per_param.items()}
        groups = [dict(group) for group in state_dict["param_groups"]]
        owns = [group.pop(self.state_key, None) for group in groups]
        if self.legacy_state_key is not None:
            legacy = [group.pop(self.legacy_state_key) if isinstance(group.get(self.legacy_state_key), dict) else None
                      for group in groups]  # fmt: skip
            owns = [own if own is not None else old for own, old in zip(owns, legacy)]
        state_dict["param_groups"] = groups
        own = state_dict.pop(self.state_key, None) or next((o for o in owns if o is not None), None)
        if own is None and not convert:
            raise ValueError(
                f"Invalid state_dict for {type(self).__name__}: it holds no {self.state_key} state (it was saved "
                f"without the {type(self).__name__} wrapper); pass convert=True to load it and start "
                f"{type(self).__name__}'s own state afresh"
            )
        if convert and _takes_convert(self.optimizer):
            self.optimizer.load_state_dict(state_dict, convert=True)
        else:
            self.optimizer.load_state_dict(state_dict)
        if own is not None:
            self._load_wrapper_state({**own, "per_param": per_param})
        else:
            self._reset_wrapper_state()

    def _reset_wrapper_state(self) -> None:
        """Start the wrapper's own state afresh (after loading a bare optimizer's state with ``convert=True``)."""

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        return self.optimizer.step(closure=closure)  # by keyword, as a step hook sees a bare step()


def _takes_convert(optimizer: Optimizer) -> bool:
    """True for optarena's optimizers and wrappers, whose ``load_state_dict`` takes ``convert``."""
    return "convert" in inspect.signature(optimizer.load_state_dict).parameters
