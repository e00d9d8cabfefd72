"""AGR's relative change ‖AGR(g) − g‖/‖g‖ per layer type, measured on a task's model by the evidence command.

AGR (seed 003) replaces each gradient tensor g by g − (|g|/Σ|g|) ⊙ g. The coefficients |g_i|/Σ|g| sum to 1 over a
tensor, so on a tensor of many entries the change is small; how small is a property of the model's gradients,
measured here rather than asserted: the task's model is built for seed 1 (the first rerun's initial weights and
batch order), one gradient is taken on its first training batch, and optarena's reference AGR
(:func:`optarena.optim.agr.agr_single_tensor`) is applied to every parameter's gradient. The result is grouped
by layer type (the owning module's class and the parameter's name: ``Linear.weight``, ``LayerNorm.bias``).
The reruns record the same quantity over training (``RunResult.agr_change``, at the end of every epoch), which the
page shows beside this measurement at initialization.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from optarena.arena.run.runner import layer_kinds
from optarena.arena.spec.experiment import Experiment
from optarena.arena.tasks import get_task
from optarena.optim.agr import relative_change


@dataclass(frozen=True)
class LayerChange:
    kind: str  # "<module class>.<parameter name>"
    tensors: int
    smallest: int  # entries of the smallest and largest such tensor
    largest: int
    median: float  # median over the tensors of ‖AGR(g) − g‖/‖g‖
    maximum: float
    paper_scope: bool  # 2+ dimensions: AGR applies under the paper's agr_scope='weights'


def measure(experiment: Experiment, task: str, seed: int = 1) -> list[LayerChange]:
    """The relative change per layer type on ``task``'s model (built as ``experiment`` builds it) at seed ``seed``."""
    torch.manual_seed(seed)
    problem = get_task(task).build(replace(experiment.settings(task), seed=seed))
    model = problem.model
    model.zero_grad(set_to_none=True)
    batch = next(iter(problem.batches(0)))
    problem.loss(batch).backward()
    groups: dict[str, list[tuple[int, float, int]]] = {}
    for kind, params in layer_kinds(model).items():
        for param in params:
            if param.grad is not None:
                groups.setdefault(kind, []).append((param.numel(), relative_change(param.grad), param.dim()))
    model.zero_grad(set_to_none=True)
    return [
        LayerChange(
            kind,
            len(found),
            min(n for n, _, _ in found),
            max(n for n, _, _ in found),
            float(np.median([c for _, c, _ in found])),
            max(c for _, c, _ in found),
            all(d >= 2 for _, _, d in found),
        )
        for kind, found in sorted(groups.items())
    ]
