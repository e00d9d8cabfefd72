"""torch.optim's own optimizers, registered as baselines with their fused and foreach paths."""

from __future__ import annotations

import torch

from optarena.optim.info import OptimizerInfo

REGISTRY_ENTRIES = [
    OptimizerInfo(
        "adamw",
        torch.optim.AdamW,
        "torch.optim.AdamW (baseline; fused and foreach paths)",
        supports_fused=True,
        paper="Loshchilov & Hutter, Decoupled Weight Decay Regularization, ICLR 2019",
        code="torch.optim",
    ),
    OptimizerInfo(
        "adam",
        torch.optim.Adam,
        "torch.optim.Adam (baseline; fused and foreach paths)",
        supports_fused=True,
        paper="Kingma & Ba, Adam, ICLR 2015",
        code="torch.optim",
    ),
    OptimizerInfo(
        "amsgrad",
        torch.optim.Adam,
        "torch.optim.Adam with amsgrad=True: the running maximum of v in the denominator (baseline)",
        defaults={"amsgrad": True},
        supports_fused=True,
        paper="Reddi, Kale & Kumar, On the Convergence of Adam and Beyond, ICLR 2018",
        code="torch.optim",
    ),
    OptimizerInfo(
        "rmsprop",
        torch.optim.RMSprop,
        "torch.optim.RMSprop (baseline)",
        paper="Tieleman & Hinton, Lecture 6.5 (Coursera), 2012",
        code="torch.optim",
    ),
    OptimizerInfo(
        "sgdm",
        torch.optim.SGD,
        "torch.optim.SGD with momentum 0.9, no dampening (baseline)",
        defaults={"momentum": 0.9},
        supports_sparse=True,
        supports_fused=True,
        code="torch.optim",
        lr_range=(1e-3, 1.0),
    ),
    OptimizerInfo(
        "radam",
        torch.optim.RAdam,
        "torch.optim.RAdam: rectified Adam (baseline)",
        paper="Liu et al., On the Variance of the Adaptive Learning Rate and Beyond, ICLR 2020",
        code="torch.optim",
    ),
    OptimizerInfo(
        "adafactor",
        torch.optim.Adafactor,
        "torch.optim.Adafactor: factored second moment, relative step (baseline)",
        supports_complex=False,
        paper="Shazeer & Stern, Adafactor, ICML 2018",
        code="torch.optim",
        notes="torch's deviations from the paper are listed in its docstring",
        lr_range=(1e-3, 1.0),
    ),
]
