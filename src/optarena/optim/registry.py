"""The optimizer registry: one :class:`OptimizerInfo` per name, and ``create_optimizer``.

Every module of ``optarena.optim`` that defines ``REGISTRY_ENTRIES`` (a list of
:class:`OptimizerInfo`) is registered when this module is imported. Being registered is all it
takes for the invariant suite (``tests/test_invariants.py``) to check an optimizer.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import nn
from torch.optim import Optimizer

from optarena.optim.base import OptarenaOptimizer
from optarena.optim.compiled import COMPILE_GRAPHS, compile_step
from optarena.optim.info import OptimizerInfo
from optarena.optim.lookahead import Lookahead
from optarena.optim.transform_wrapper import AGR, GradientTransforms
from optarena.optim.transforms import NO_TRANSFORMS, TRANSFORM_OPTIONS
from optarena.validation import Constraint, check_bool, check_declared

_REGISTRY: dict[str, OptimizerInfo] = {}


def register(info: OptimizerInfo) -> OptimizerInfo:
    """Add ``info`` to the registry (names are lowercase and unique)."""
    if info.name != info.name.lower():
        raise ValueError(f"Invalid name: {info.name!r}; registry names are lowercase")
    if info.name in _REGISTRY:
        raise ValueError(f"Invalid name: {info.name!r} is already registered")
    _REGISTRY[info.name] = info
    return info


def list_optimizers() -> list[str]:
    """Registered optimizer names, sorted."""
    return sorted(_REGISTRY)


def get_optimizer_info(name: str) -> OptimizerInfo:
    """The registry entry of ``name``; a ``ValueError`` listing the valid names otherwise."""
    key = name.lower() if isinstance(name, str) else name
    if key not in _REGISTRY:
        raise ValueError(f"Unknown optimizer {name!r}; valid names: {', '.join(list_optimizers())}")
    return _REGISTRY[key]


def declared_hyperparameters(name: str) -> dict[str, Constraint]:
    """Every keyword ``create_optimizer(model, name, ...)`` takes and checks, with its constraint."""
    info = get_optimizer_info(name)
    keywords = info.hyperparameter_defaults()
    declared = {k: c for k, c in info.cls.declared_hyperparameters().items() if k in keywords}
    if not issubclass(info.cls, OptarenaOptimizer):  # the transforms come from the wrapper
        declared.update(TRANSFORM_OPTIONS)
    if info.defaults.get("lookahead"):
        declared.update({f"lookahead_{key}": c for key, c in Lookahead.hyperparameters.items()})
    return declared


def param_groups_for(model: nn.Module, *, decay_1d: bool = False) -> list[dict[str, Any]]:
    """Trainable parameters of ``model`` split into decayed and non-decayed groups.

    Biases and normalization weights — every parameter with at most one dimension — get no
    weight decay unless ``decay_1d`` is True (the convention of timm and most training code).
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if decay_1d or p.ndim > 1 else no_decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if not groups:
        raise ValueError("Invalid model: it has no trainable parameters")
    return groups


def create_optimizer(
    model_or_params: nn.Module | Iterable[Any],
    name: str,
    *,
    decay_1d: bool = False,
    compile: bool | str = False,
    **hyperparameters: Any,
) -> Optimizer:
    """Build the registered optimizer ``name``.

    Given an ``nn.Module``, 1-D parameters (biases, norm weights) get no weight decay unless
    ``decay_1d=True``; given parameters or param groups, they are passed through unchanged.
    ``lookahead=True`` wraps the optimizer in :class:`~optarena.optim.lookahead.Lookahead`
    (with ``lookahead_k=5``, ``lookahead_alpha=0.5``, ``lookahead_pullback='none'``). The gradient transforms'
    keywords (``clip_norm``, ``clip_value``, ``centralize``, ``normalize``, ``agr='code'`` and AGR's options) on an
    optimizer not built on the engine (the torch baselines) wrap it in
    :class:`~optarena.optim.transform_wrapper.GradientTransforms` (:class:`~optarena.optim.transform_wrapper.AGR`
    when AGR is the only one).
    ``compile=True`` runs the step through :func:`~optarena.optim.compiled.compile_step` (one graph for all of a
    step's tensors); ``compile='per_tensor'`` through its ``graphs='per_tensor'`` (a graph shared by every
    tensor's size: a compile time that does not grow with the model).
    Every other keyword (``lr``, ``foreach``, ...) goes to the optimizer.
    """
    info = get_optimizer_info(name)
    kwargs = {**info.defaults, **hyperparameters}
    lookahead = {
        key: kwargs.pop(f"lookahead_{key}") for key in ("k", "alpha", "pullback") if f"lookahead_{key}" in kwargs
    }
    use_lookahead = kwargs.pop("lookahead", False)
    for flag, value in (("lookahead", use_lookahead), ("decay_1d", decay_1d)):
        check_bool(flag, value)
    if not isinstance(compile, bool) and compile not in COMPILE_GRAPHS:
        raise ValueError(
            f"Invalid compile: {compile!r}; expected True, False or one of {', '.join(map(repr, COMPILE_GRAPHS))}"
        )
    if lookahead and not use_lookahead:
        raise ValueError(f"Invalid {', '.join('lookahead_' + k for k in lookahead)}: set lookahead=True to use them")
    for key, value in lookahead.items():  # named as the caller wrote them
        Lookahead.hyperparameters[key].check(f"lookahead_{key}", value)
    wrap: dict[str, Any] = {}
    if not issubclass(info.cls, OptarenaOptimizer):
        wrap = {key: kwargs.pop(key) for key in TRANSFORM_OPTIONS if key in kwargs}
        check_declared(wrap, TRANSFORM_OPTIONS)
        if wrap.get("agr") not in (None, "code"):
            raise ValueError(
                f"Invalid agr: {wrap['agr']!r}; {name} is not built on the optarena engine, "
                "so only agr='code' (AGR in front of the whole optimizer) is available"
            )
        wrap = {key: value for key, value in wrap.items() if value != NO_TRANSFORMS[key]}
        if wrap and wrap.get("agr") is None and any(key.startswith("agr_") for key in wrap):
            agr_keys = ", ".join(k for k in wrap if k.startswith("agr_"))
            raise ValueError(f"Invalid {agr_keys}: set agr='code' to use them")
    if isinstance(model_or_params, nn.Module):
        weight_decay = kwargs.get("weight_decay", info.hyperparameter_defaults().get("weight_decay", 0.0))
        if weight_decay:
            params: Any = param_groups_for(model_or_params, decay_1d=decay_1d)
        else:
            params = [p for p in model_or_params.parameters() if p.requires_grad]
    else:
        params = model_or_params
    optimizer = info.cls(params, **kwargs)
    if set(wrap) <= {"agr", "agr_stop_step", "agr_official_edge_cases", "agr_scope"} and "agr" in wrap:
        optimizer = AGR(
            optimizer,
            stop_step=wrap.get("agr_stop_step"),
            official_edge_cases=wrap.get("agr_official_edge_cases", False),
            scope=wrap.get("agr_scope", "weights"),
        )
    elif wrap:
        optimizer = GradientTransforms(optimizer, **wrap)
    if use_lookahead:
        optimizer = Lookahead(optimizer, **lookahead)
    if compile:
        compile_step(optimizer, graphs="whole" if compile is True else compile)
    return optimizer


def _register_modules() -> None:
    """Register the ``REGISTRY_ENTRIES`` of every module in ``optarena.optim``, in name order."""
    for module_info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
        module = importlib.import_module(f"optarena.optim.{module_info.name}")
        for info in getattr(module, "REGISTRY_ENTRIES", ()):
            register(info)


_register_modules()
