"""optarena: faithful PyTorch optimizers and a fair arena to compare them."""

from optarena.optim import (
    AGR,
    ACProp,
    AdaBelief,
    Adaburst,
    AdamNX,
    AdamW,
    Adan,
    AdaX,
    Lion,
    Lookahead,
    OptimizerInfo,
    create_optimizer,
    get_optimizer_info,
    list_optimizers,
)
from optarena.schedules import SGDR, AdamNXLR, LRBurst

__version__ = "0.1.0"

__all__ = [
    "AGR",
    "SGDR",
    "ACProp",
    "AdaBelief",
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
    "__version__",
    "create_optimizer",
    "get_optimizer_info",
    "list_optimizers",
]
