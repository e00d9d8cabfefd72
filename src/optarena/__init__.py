"""optarena: faithful PyTorch optimizers and a fair arena to compare them."""

from optarena.optim import (
    AGR,
    SWATS,
    ACProp,
    AdaBelief,
    AdaBound,
    Adaburst,
    AdamNX,
    AdamW,
    Adan,
    AdaX,
    Lion,
    Lookahead,
    OptimizerInfo,
    SophiaG,
    compile_step,
    create_optimizer,
    get_optimizer_info,
    list_optimizers,
)
from optarena.schedules import SGDR, AdamNXLR, LRBurst
from optarena.version import __version__

__all__ = [
    "AGR",
    "SGDR",
    "SWATS",
    "ACProp",
    "AdaBelief",
    "AdaBound",
    "AdaX",
    "Adaburst",
    "AdamNX",
    "AdamNXLR",
    "AdamW",
    "Adan",
    "LRBurst",
    "Lion",
    "Lookahead",
    "OptimizerInfo",
    "SophiaG",
    "__version__",
    "compile_step",
    "create_optimizer",
    "get_optimizer_info",
    "list_optimizers",
]
