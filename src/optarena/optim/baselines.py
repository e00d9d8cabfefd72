"""torch.optim's own optimizers, registered as baselines with their fused and foreach paths.

Each is torch's class itself, subclassed only to add what every registered optimizer has
(:class:`~optarena.optim.guarded.GuardedOptimizer`): every hyperparameter checked in the constructor
and in ``add_param_group`` (torch checks some ranges in the constructor only, and lets ``inf`` through),
the ``nonfinite`` gradient policy, and a state_dict that knows whose it is. The update is torch's,
unchanged: ``isinstance(opt, torch.optim.AdamW)`` holds, and the tests compare against torch directly.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from torch.optim import Optimizer

from optarena.optim.guarded import GuardedOptimizer
from optarena.optim.info import OptimizerInfo, OptimizerInput
from optarena.optim.lookahead import LOOKAHEAD_CODE, LOOKAHEAD_PAPER
from optarena.validation import NON_NEGATIVE, UNIT_INTERVAL, Constraint, Flag, Items, Real, betas

# Keywords every torch baseline shares; torch's __setstate__ fills them in for files of older releases.
_TORCH_FLAGS: dict[str, Constraint] = {
    "foreach": Flag(optional=True),
    "maximize": Flag(),
    "capturable": Flag(),
    "differentiable": Flag(),
    "fused": Flag(optional=True),
}


class TorchBaseline(GuardedOptimizer):
    """Mixin for a torch optimizer: ``class AdamW(TorchBaseline, torch.optim.AdamW)``; adds ``nonfinite``."""

    backfilled_keys: ClassVar[frozenset[str]] = frozenset(
        {*_TORCH_FLAGS, "amsgrad", "decoupled_weight_decay", "nesterov", "centered"}
    )

    def __init__(self, params: Any, *args: Any, nonfinite: str = "propagate", **kwargs: Any) -> None:
        self._set_nonfinite_policy(nonfinite)
        # Our checks first: torch's constructor checks some ranges with messages of its own, and lets inf through.
        torch_init = next(vars(k)["__init__"] for k in type(self).__mro__[2:] if "__init__" in vars(k))
        bound = inspect.signature(torch_init).bind(self, params, *args, **kwargs)
        bound.apply_defaults()
        self._validate_group(dict(bound.arguments))
        super().__init__(params, *args, **kwargs)


def _baseline(torch_class: type[Optimizer], hyperparameters: dict[str, Constraint], **extra: Any) -> type:
    """``torch_class`` with the guard, named as torch names it (its stamp is ``torch.optim.<name>``)."""
    namespace = {
        "__doc__": f"``torch.optim.{torch_class.__name__}`` with checked hyperparameters, the ``nonfinite`` "
        "policy and owned state (see :mod:`optarena.optim.baselines`).",
        "__module__": __name__,
        "hyperparameters": {**_TORCH_FLAGS, **hyperparameters},
        "state_owner": f"torch.optim.{torch_class.__name__}",
        **extra,
    }
    return type(torch_class.__name__, (TorchBaseline, torch_class), namespace)


_AMSGRAD = {"amsgrad": ("exp_avg_sq", "max_exp_avg_sq")}
_ADAM = {"lr": NON_NEGATIVE, "betas": betas(2), "eps": NON_NEGATIVE, "weight_decay": NON_NEGATIVE, "amsgrad": Flag()}
AdamW = _baseline(torch.optim.AdamW, _ADAM, state_format="adam", layout_buffers=_AMSGRAD)
Adam = _baseline(
    torch.optim.Adam,
    {**_ADAM, "decoupled_weight_decay": Flag()},
    state_format="adam",
    layout_buffers=_AMSGRAD,
)
SGD = _baseline(
    torch.optim.SGD,
    {
        "lr": NON_NEGATIVE,
        "momentum": NON_NEGATIVE,
        "dampening": UNIT_INTERVAL,
        "weight_decay": NON_NEGATIVE,
        "nesterov": Flag(),
    },
)
RMSprop = _baseline(
    torch.optim.RMSprop,
    {
        "lr": NON_NEGATIVE,
        "alpha": UNIT_INTERVAL,
        "eps": NON_NEGATIVE,
        "weight_decay": NON_NEGATIVE,
        "momentum": NON_NEGATIVE,
        "centered": Flag(),
    },
)
RAdam = _baseline(
    torch.optim.RAdam,
    {
        "lr": NON_NEGATIVE,
        "betas": betas(2),
        "eps": NON_NEGATIVE,
        "weight_decay": NON_NEGATIVE,
        "decoupled_weight_decay": Flag(),
    },
)
Adafactor = _baseline(
    torch.optim.Adafactor,
    {
        "lr": NON_NEGATIVE,
        "beta2_decay": Real(high=0.0),
        "eps": Items((Real(0.0, optional=True), NON_NEGATIVE)),
        "d": Real(1.0),
        "weight_decay": NON_NEGATIVE,
    },
)
Adagrad = _baseline(
    torch.optim.Adagrad,
    {
        "lr": NON_NEGATIVE,
        "lr_decay": NON_NEGATIVE,
        "weight_decay": NON_NEGATIVE,
        "initial_accumulator_value": NON_NEGATIVE,
        "eps": NON_NEGATIVE,
    },
)

REGISTRY_ENTRIES = [
    OptimizerInfo(
        "adamw",
        AdamW,
        "torch.optim.AdamW (baseline; fused and foreach paths)",
        supports_fused=True,
        paper="Loshchilov & Hutter, Decoupled Weight Decay Regularization, ICLR 2019",
        code="torch.optim",
    ),
    OptimizerInfo(
        "adam",
        Adam,
        "torch.optim.Adam (baseline; fused and foreach paths)",
        supports_fused=True,
        paper="Kingma & Ba, Adam, ICLR 2015",
        code="torch.optim",
    ),
    OptimizerInfo(
        "amsgrad",
        Adam,
        "torch.optim.Adam with amsgrad=True: the running maximum of v in the denominator (baseline)",
        defaults={"amsgrad": True},
        supports_fused=True,
        paper="Reddi, Kale & Kumar, On the Convergence of Adam and Beyond, ICLR 2018",
        code="torch.optim",
    ),
    OptimizerInfo(
        "rmsprop",
        RMSprop,
        "torch.optim.RMSprop (baseline)",
        paper="Tieleman & Hinton, Lecture 6.5 (Coursera), 2012",
        code="torch.optim",
    ),
    OptimizerInfo(
        "sgdm",
        SGD,
        "torch.optim.SGD with momentum 0.9, no dampening (baseline)",
        defaults={"momentum": 0.9},
        supports_sparse=True,
        supports_fused=True,
        code="torch.optim",
        lr_range=(1e-3, 1.0),
        test_inputs=(
            OptimizerInput("agr_wrapper", {"agr": "code"}, sharded=True),
            OptimizerInput(
                "transforms_wrapper", {"clip_norm": 1.0, "centralize": "weights", "normalize": "std"}, sharded=True
            ),
            OptimizerInput("lookahead_reset", {"lookahead": True, "lookahead_pullback": "reset", "lookahead_k": 2}),
        ),
    ),
    OptimizerInfo(
        "radam",
        RAdam,
        "torch.optim.RAdam: rectified Adam (baseline)",
        paper="Liu et al., On the Variance of the Adaptive Learning Rate and Beyond, ICLR 2020",
        code="torch.optim",
    ),
    OptimizerInfo(
        "adafactor",
        Adafactor,
        "torch.optim.Adafactor: factored second moment, relative step (baseline)",
        supports_complex=False,
        paper="Shazeer & Stern, Adafactor, ICML 2018",
        code="torch.optim",
        notes="torch's deviations from the paper are listed in its docstring",
        lr_range=(1e-3, 1.0),
        no_empty_params="torch.optim.Adafactor (2.13) divides by numel(): ZeroDivisionError on a 0-size tensor",
    ),
    OptimizerInfo(
        "adagrad",
        Adagrad,
        "torch.optim.Adagrad: per-coordinate rates from the sum of all past squared gradients (baseline)",
        supports_sparse=True,  # torch's single-tensor path (foreach falls back to it for sparse gradients)
        supports_fused=True,  # CPU only in torch 2.13
        paper="Duchi, Hazan & Singer, Adaptive Subgradient Methods for Online Learning and Stochastic "
        "Optimization, JMLR 2011",
        code="torch.optim",
        notes="torch's defaults: accumulator starts at 0 (Keras/TF: 0.1), eps 1e-10 outside the root",
        lr_range=(1e-3, 1.0),
        search_space={"initial_accumulator_value": ("choice", (0.0, 0.1))},
        test_inputs=(OptimizerInput("decayed", {"lr_decay": 1e-2, "initial_accumulator_value": 0.1}),),
    ),
    OptimizerInfo(
        "lookahead_adamw",
        AdamW,
        "Lookahead (k=5, alpha=0.5) around torch.optim.AdamW",
        defaults={"lookahead": True},
        paper=LOOKAHEAD_PAPER,
        code=LOOKAHEAD_CODE,
        search_space={"lookahead_alpha": ("float", 0.3, 0.9)},
    ),
    OptimizerInfo(
        "lookahead_sgdm",
        SGD,
        "Lookahead (k=5, alpha=0.5) around SGD with momentum 0.9",
        defaults={"lookahead": True, "momentum": 0.9},
        supports_sparse=True,
        supports_fused=True,
        paper=LOOKAHEAD_PAPER,
        code=LOOKAHEAD_CODE,
        lr_range=(1e-3, 1.0),
        search_space={"lookahead_alpha": ("float", 0.3, 0.9)},
    ),
]
