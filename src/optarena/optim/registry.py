"""The optimizer registry: one :class:`OptimizerInfo` per name, and ``create_optimizer``.

Registering an optimizer is all it takes for the invariant suite (``tests/test_invariants.py``)
to check it.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from optarena.optim.adaburst import Adaburst
from optarena.optim.adamnx import AdamNX
from optarena.optim.adamw import AdamW
from optarena.optim.adax import AdaX
from optarena.optim.agr import AGR
from optarena.optim.base import OptarenaOptimizer


@dataclass(frozen=True)
class OptimizerInfo:
    """What the library knows about one registered optimizer.

    ``defaults`` are keyword arguments ``create_optimizer`` passes before the user's own
    (e.g. ``momentum=0.9`` for ``sgdm``). ``zero_grad_moves`` names the by-design exceptions
    to "a zero gradient with no weight decay moves nothing", with the reason.
    """

    name: str
    cls: type[Optimizer]
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)
    supports_complex: bool = True
    supports_sparse: bool = False
    supports_foreach: bool = True
    supports_fused: bool = False
    supports_maximize: bool = True
    supports_agr: bool = False
    paper: str = ""
    code: str = ""
    notes: str = ""
    zero_grad_moves: str = ""

    def hyperparameter_defaults(self) -> dict[str, Any]:
        """Every constructor default, with the registry's overrides applied."""
        sig = inspect.signature(self.cls.__init__)
        out = {
            name: p.default
            for name, p in sig.parameters.items()
            if name not in ("self", "params") and p.default is not inspect.Parameter.empty
        }
        out.update(self.defaults)
        return out


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
    **hyperparameters: Any,
) -> Optimizer:
    """Build the registered optimizer ``name``.

    Given an ``nn.Module``, 1-D parameters (biases, norm weights) get no weight decay unless
    ``decay_1d=True``; given parameters or param groups, they are passed through unchanged.
    Every other keyword (``lr``, ``foreach``, ...) goes to the optimizer. ``agr='code'`` on an
    optimizer not built on the engine (the torch baselines) wraps it in :class:`~optarena.optim.agr.AGR`.
    """
    info = get_optimizer_info(name)
    kwargs = {**info.defaults, **hyperparameters}
    wrap_agr = None
    if not issubclass(info.cls, OptarenaOptimizer) and kwargs.get("agr") is not None:
        agr_keys = ("agr", "agr_stop_step", "agr_official_edge_cases")
        wrap_agr = {key: kwargs.pop(key) for key in agr_keys if key in kwargs}
        if wrap_agr["agr"] != "code":
            raise ValueError(
                f"Invalid agr: {wrap_agr['agr']!r}; {name} is not built on the optarena engine, "
                "so only agr='code' (AGR in front of the whole optimizer) is available"
            )
    if isinstance(model_or_params, nn.Module):
        weight_decay = kwargs.get("weight_decay", info.hyperparameter_defaults().get("weight_decay", 0.0))
        if weight_decay:
            params: Any = param_groups_for(model_or_params, decay_1d=decay_1d)
        else:
            params = [p for p in model_or_params.parameters() if p.requires_grad]
    else:
        params = model_or_params
    optimizer = info.cls(params, **kwargs)
    if wrap_agr is not None:
        return AGR(
            optimizer,
            stop_step=wrap_agr.get("agr_stop_step"),
            official_edge_cases=wrap_agr.get("agr_official_edge_cases", False),
        )
    return optimizer


# --- the registered optimizers -----------------------------------------------------------------

_ADABURST_PAPER = "Lin et al., Learning rate burst for superior SGDM and AdamW integration, JIFS 2024"
_ADAMNX_PAPER = "Zhu, Xiao, Min, AdamNX, arXiv:2511.13465"
_AGR_PAPER = "Jiang et al., Adaptive Gradient Regularization, arXiv:2407.16944"

register(
    OptimizerInfo(
        "adaburst",
        Adaburst,
        "AdamW + SGD momentum on one shared moment, SGD rate driven by the learning-rate burst",
        supports_agr=True,
        paper=_ADABURST_PAPER,
        code="none published",
        notes="lr2 = lr*phi; call epoch_end(train_accuracy) once per epoch for the plateau trigger",
    )
)
register(
    OptimizerInfo(
        "adamnx",
        AdamNX,
        "Adam whose second-moment decay tends to 1 (becomes momentum SGD late in training)",
        supports_agr=True,
        paper=_ADAMNX_PAPER,
        code="github.com/mengzhu0308/AdamNX",
        notes="defaults are the authors' code: betas (0.9, 0.99), eps 1e-8, weight_decay 0.01",
    )
)
register(
    OptimizerInfo(
        "adax",
        AdaX,
        "AdaX: exponential long-term memory of squared gradients (AdamNX's relative)",
        supports_agr=True,
        paper="Li et al., AdaX: Adaptive Gradient Descent with Exponential Long Term Memory, 2020",
        code="github.com/switchablenorms/AdaX",
        notes="L2 weight decay by default; decoupled=True is AdaXW",
    )
)
register(
    OptimizerInfo(
        "adamw_agr",
        AdamW,
        "AdamW with adaptive gradient regularization (AGR)",
        defaults={"agr": "code"},
        supports_agr=True,
        paper=_AGR_PAPER,
        code="github.com/hjiang24/AGR-method (branch master)",
        notes="agr='code' (every moment sees the regularized gradient) by default; 'paper': first moment only",
    )
)
register(
    OptimizerInfo(
        "adamw",
        torch.optim.AdamW,
        "torch.optim.AdamW (baseline; fused and foreach paths)",
        supports_fused=True,
        paper="Loshchilov & Hutter, Decoupled Weight Decay Regularization, ICLR 2019",
        code="torch.optim",
    )
)
register(
    OptimizerInfo(
        "adam",
        torch.optim.Adam,
        "torch.optim.Adam (baseline; fused and foreach paths)",
        supports_fused=True,
        paper="Kingma & Ba, Adam, ICLR 2015",
        code="torch.optim",
    )
)
register(
    OptimizerInfo(
        "sgdm",
        torch.optim.SGD,
        "torch.optim.SGD with momentum 0.9, no dampening (baseline)",
        defaults={"momentum": 0.9},
        supports_sparse=True,
        supports_fused=True,
        code="torch.optim",
    )
)
register(
    OptimizerInfo(
        "radam",
        torch.optim.RAdam,
        "torch.optim.RAdam: rectified Adam (baseline)",
        paper="Liu et al., On the Variance of the Adaptive Learning Rate and Beyond, ICLR 2020",
        code="torch.optim",
    )
)
register(
    OptimizerInfo(
        "adafactor",
        torch.optim.Adafactor,
        "torch.optim.Adafactor: factored second moment, relative step (baseline)",
        supports_complex=False,
        paper="Shazeer & Stern, Adafactor, ICML 2018",
        code="torch.optim",
        notes="torch's deviations from the paper are listed in its docstring",
    )
)
