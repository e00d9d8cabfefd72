"""What one NaN or infinite gradient value does to each registered optimizer under ``nonfinite='propagate'``.

``python tests/nonfinite_effects.py`` prints the table of ``docs/reliability.md`` (a test checks that
the page holds exactly this table). The experiment: two float64 parameters (a 3x4 matrix and a
5-vector), three finite steps, then one step whose gradient holds a single bad value at ``a[1, 2]``;
we record which parameter values and which state tensors are non-finite after that step, and whether
``a[1, 2]`` moved at all (Lion's ``sign(NaN) = 0`` freezes it while it stays finite).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from optarena.optim import create_optimizer, get_optimizer_info, list_optimizers

# Configurations beyond the registry's defaults whose spread differs (the global clip reads every gradient).
EXTRA_CONFIGURATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "adan (max_grad_norm=1)": ("adan", {"max_grad_norm": 1.0}),
}


def _state_tensors(optimizer: Any, p: torch.Tensor) -> list[torch.Tensor]:
    inner = getattr(optimizer, "optimizer", optimizer)
    return [t for t in inner.state.get(p, {}).values() if isinstance(t, torch.Tensor) and t.numel() > 1]


def effect(name: str, overrides: dict[str, Any], bad: float) -> str:
    """One line of the table: what the bad value reached after one step."""
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
    b = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    defaults = get_optimizer_info(name).test_defaults  # values for required keywords (Adaburst: total_steps)
    optimizer = create_optimizer([a, b], name, nonfinite="propagate", **{**defaults, **overrides})

    def step(poison: bool) -> None:
        optimizer.zero_grad()
        ((a**2).sum() + (b**3).sum()).backward()
        if poison:
            a.grad[1, 2] = bad
        optimizer.step()

    for _ in range(3):
        step(False)
    before = a.detach()[1, 2].item()
    step(True)
    bad_a = int((~torch.isfinite(a)).sum())
    bad_b = int((~torch.isfinite(b)).sum())
    state_bad = [any(not torch.isfinite(t).all() for t in _state_tensors(optimizer, p)) for p in (a, b)]
    if bad_a == 0 and bad_b == 0:
        reach = "no parameter"
        if a.detach()[1, 2].item() == before:
            reach += "; that coordinate did not move"
    elif bad_b:
        reach = "every parameter"
    elif bad_a == 1:
        reach = "that coordinate"
    elif bad_a == a.numel():
        reach = "that whole tensor"
    else:
        reach = f"{bad_a} of that tensor's {a.numel()} values"
    state = "every tensor's" if all(state_bad) else ("that tensor's" if state_bad[0] else "none")
    return f"{reach} | {state}"


def rows() -> list[tuple[str, str, str]]:
    """(configuration, effect of NaN, effect of +inf) for every registry entry and the extra configurations."""
    configurations: list[tuple[str, str, dict[str, Any]]] = [(n, n, {}) for n in list_optimizers()]
    configurations += [(label, n, kw) for label, (n, kw) in EXTRA_CONFIGURATIONS.items()]
    return [(label, effect(n, kw, math.nan), effect(n, kw, math.inf)) for label, n, kw in configurations]


def markdown_table(make_rows: Callable[[], list[tuple[str, str, str]]] = rows) -> str:
    lines = [
        "| optimizer | NaN: non-finite parameters | NaN: non-finite state | +inf: non-finite parameters "
        "| +inf: non-finite state |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| `{label}` | {nan} | {inf} |" for label, nan, inf in make_rows()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
