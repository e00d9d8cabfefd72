"""Synthetic 2-D test functions: where optimizers' paths can be drawn.

The "model" is one 2-D point; a step is one exact gradient evaluation (no data, no noise), an
epoch is ``STEPS_PER_EPOCH`` steps, and the metric is the function value (minimised).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from optarena.arena.tasks.base import Task, TaskSettings

STEPS_PER_EPOCH = 50


def rosenbrock(p: Tensor) -> Tensor:
    """(1 − x)² + 100(y − x²)²: a curved valley, minimum 0 at (1, 1)."""
    x, y = p[0], p[1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def rastrigin(p: Tensor) -> Tensor:
    """20 + Σ (p_i² − 10 cos 2πp_i): a grid of local minima, global minimum 0 at the origin."""
    return 20 + (p**2 - 10 * torch.cos(2 * math.pi * p)).sum()


_ANGLE = math.pi / 6
_ROTATION = torch.tensor([[math.cos(_ANGLE), -math.sin(_ANGLE)], [math.sin(_ANGLE), math.cos(_ANGLE)]])


def ill_conditioned(p: Tensor) -> Tensor:
    """½(u² + 1000·v²) in axes rotated by 30°: condition number 1000, minimum 0 at the origin."""
    u, v = _ROTATION.to(p) @ p
    return 0.5 * (u**2 + 1000 * v**2)


def saddle(p: Tensor) -> Tensor:
    """x² − y² + y⁴/4: a saddle at the origin between minima −1 at (0, ±√2)."""
    x, y = p[0], p[1]
    return x**2 - y**2 + y**4 / 4


@dataclass(frozen=True)
class Function:
    fn: Callable[[Tensor], Tensor]
    start: tuple[float, float]
    minimum: tuple[float, float]
    bounds: tuple[tuple[float, float], tuple[float, float]]  # the plotting window

    def grid(self, resolution: int = 160) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x, y and the function's value on a ``resolution`` x ``resolution`` grid over :attr:`bounds` (contours)."""
        (x0, x1), (y0, y1) = self.bounds
        xs, ys = np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution)
        grid_x, grid_y = np.meshgrid(xs, ys)
        points = torch.tensor(np.stack([grid_x.ravel(), grid_y.ravel()], axis=1), dtype=torch.float64)
        with torch.no_grad():
            try:
                values = torch.func.vmap(self.fn)(points)
            except Exception:  # a function vmap cannot batch: evaluate point by point
                values = torch.stack([self.fn(p) for p in points])
        return grid_x, grid_y, values.numpy().reshape(grid_x.shape)


FUNCTIONS: dict[str, Function] = {
    "rosenbrock": Function(rosenbrock, (-1.5, 2.0), (1.0, 1.0), ((-2.0, 2.0), (-1.0, 3.0))),
    "rastrigin": Function(rastrigin, (-2.3, 2.6), (0.0, 0.0), ((-3.0, 3.0), (-3.0, 3.0))),
    "ill_conditioned": Function(ill_conditioned, (3.0, 2.0), (0.0, 0.0), ((-4.0, 4.0), (-4.0, 4.0))),
    "saddle": Function(saddle, (1.0, 1e-3), (0.0, math.sqrt(2)), ((-1.5, 1.5), (-2.0, 2.0))),
}


class Point(nn.Module):
    def __init__(self, start: tuple[float, float]) -> None:
        super().__init__()
        self.xy = nn.Parameter(torch.tensor(start, dtype=torch.float64))


class FunctionProblem:
    """Minimise a 2-D function from its fixed start; every metric is the function value."""

    def __init__(self, function: Function, device: str) -> None:
        self.function = function
        self.model = Point(function.start).to(device)
        self.steps_per_epoch = STEPS_PER_EPOCH

    def batches(self, epoch: int) -> Iterator[None]:
        return iter([None] * self.steps_per_epoch)

    def loss(self, batch: None) -> Tensor:
        return self.function.fn(self.model.xy)

    @torch.no_grad()
    def evaluate(self, *, test: bool = True) -> dict[str, float]:
        value = self.function.fn(self.model.xy).item()
        row = {"train_loss": value, "train_metric": value, "val_metric": value}
        return {**row, "test_metric": value} if test else row


def _task(name: str, target: float, description: str) -> Task:
    def build(settings: TaskSettings) -> FunctionProblem:
        return FunctionProblem(FUNCTIONS[name], settings.device)

    return Task(name, description, build, metric="value", mode="min", target=target, epochs=10, kind="function")


TASKS = [
    _task("rosenbrock", 1e-3, "Rosenbrock's curved valley from (-1.5, 2); 2-D trajectory plot"),
    _task("rastrigin", 1e-2, "Rastrigin's grid of local minima from (-2.3, 2.6); 2-D trajectory plot"),
    _task("ill_conditioned", 1e-4, "rotated quadratic, condition number 1000; 2-D trajectory plot"),
    _task("saddle", -0.99, "escape the saddle of x^2 - y^2 + y^4/4 from (1, 0.001); 2-D trajectory plot"),
]
