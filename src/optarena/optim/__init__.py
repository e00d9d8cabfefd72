"""optarena optimizers: drop-in ``torch.optim.Optimizer`` classes and their registry."""

from optarena.optim.acprop import ACProp
from optarena.optim.adabelief import AdaBelief
from optarena.optim.adabound import AdaBound
from optarena.optim.adaburst import Adaburst
from optarena.optim.adamnx import AdamNX
from optarena.optim.adamw import AdamW
from optarena.optim.adan import Adan
from optarena.optim.adax import AdaX
from optarena.optim.agr import agr_multi_tensor, agr_single_tensor
from optarena.optim.base import OptarenaOptimizer
from optarena.optim.compiled import compile_step
from optarena.optim.guarded import NONFINITE_POLICIES, GuardedOptimizer, NonFiniteGradientError
from optarena.optim.lamb import Lamb
from optarena.optim.lion import Lion
from optarena.optim.lookahead import Lookahead
from optarena.optim.muon import MuonWithAuxAdamW, muon_param_groups
from optarena.optim.registry import (
    OptimizerInfo,
    create_optimizer,
    get_optimizer_info,
    list_optimizers,
    param_groups_for,
    register,
)
from optarena.optim.sophiag import SophiaG, sophiag_gnb_update
from optarena.optim.swats import SWATS
from optarena.optim.transform_wrapper import AGR, GradientTransforms
from optarena.optim.yogi import Yogi

__all__ = [
    "AGR",
    "NONFINITE_POLICIES",
    "SWATS",
    "ACProp",
    "AdaBelief",
    "AdaBound",
    "AdaX",
    "Adaburst",
    "AdamNX",
    "AdamW",
    "Adan",
    "GradientTransforms",
    "GuardedOptimizer",
    "Lamb",
    "Lion",
    "Lookahead",
    "MuonWithAuxAdamW",
    "NonFiniteGradientError",
    "OptarenaOptimizer",
    "OptimizerInfo",
    "SophiaG",
    "Yogi",
    "agr_multi_tensor",
    "agr_single_tensor",
    "compile_step",
    "create_optimizer",
    "get_optimizer_info",
    "list_optimizers",
    "muon_param_groups",
    "param_groups_for",
    "register",
    "sophiag_gnb_update",
]
