"""Compiled ≡ eager on a device: every compilable engine optimizer in float64, 20 steps with a moving lr.

Run from the repository root (on a GPU machine: ``PYTHONPATH=src python tests/device_check.py cuda``; optional
registry names after the device restrict the run). For each optimizer it prints the largest difference of the
parameters and moment states between the eager foreach step on the device and on the CPU, and between the compiled
step (whole graph, and ``graphs='per_tensor'``) and the eager step on the device; the compiled ones must be ≤ 1e-12.
On a GPU every step from the fourth on runs under ``torch.cuda.set_sync_debug_mode("error")``: a step that makes the
host wait for the device is an error (its traceback names the operation).
An optimizer whose compile fails is an error (the fallback's warning is raised). The exit status is the failure
count. tests/test_benchmark_smoke.py runs it on the CPU; benchmarks/results/cuda/ has its output on a GPU.
"""

from __future__ import annotations

import sys
import time
import traceback
import warnings

import torch
from torch import Tensor

from optarena.optim import OptarenaOptimizer
from optarena.optim.hooks import LoopContext
from optarena.optim.registry import create_optimizer, get_optimizer_info, list_optimizers

STEPS = 20
# A conv weight, vectors, a matrix, one value, and a size past one chunk of the four-part sums.
SHAPES = [(64, 3, 7, 7), (64,), (10, 512), (1,), (4097,)]
TOLERANCE = 1e-12
SYNC_FREE_FROM = 3


def compilable_names() -> list[str]:
    names = []
    for name in list_optimizers():
        info = get_optimizer_info(name)
        engine = issubclass(info.cls, OptarenaOptimizer) and not info.defaults.get("lookahead")
        if engine and info.cls.not_compilable is None:
            names.append(name)
    return names


def run(name: str, device: str, **kwargs: object) -> list[Tensor]:
    """Parameters and same-shaped states after STEPS steps; the data are made on the CPU, then moved."""
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=g, dtype=torch.float64).to(device).requires_grad_() for s in SHAPES]
    info = get_optimizer_info(name)
    opt = create_optimizer(params, name, **{**info.hooks.options(LoopContext(total_steps=STEPS)), **kwargs})
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-2, total_steps=STEPS, cycle_momentum=False)
    for k in range(STEPS):
        gk = torch.Generator().manual_seed(100 + k)
        for p in params:
            p.grad = (0.5 * p.detach().cpu() + torch.randn(p.shape, generator=gk, dtype=p.dtype)).to(device)
        # From the fourth step on (compiled by then), a step that waits for a GPU raises: a training loop's host
        # must be able to queue the next forward while the device still runs the step.
        watch = torch.device(device).type == "cuda" and k >= SYNC_FREE_FROM
        if watch:
            torch.cuda.set_sync_debug_mode("error")
        try:
            opt.step()
        finally:
            if watch:
                torch.cuda.set_sync_debug_mode("default")
        schedule.step()
    out = [p.detach().cpu() for p in params]
    for p in params:
        out += [t.detach().cpu() for t in opt.state[p].values() if isinstance(t, Tensor) and t.shape == p.shape]
    return out


def max_diff(a: list[Tensor], b: list[Tensor]) -> float:
    return max(((x - y).abs().max().item() if x.numel() else 0.0) for x, y in zip(a, b, strict=True))


def main(argv: list[str]) -> int:
    device = argv[0] if argv else "cuda"
    names = argv[1:] or compilable_names()
    failures = 0
    for name in names:
        start = time.time()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", RuntimeWarning)  # a compile that falls back to eager
                eager = run(name, device, foreach=True)
                on_cpu = run(name, "cpu", foreach=True)
                whole = run(name, device, compile=True)
                per_tensor = run(name, device, compile="per_tensor")
        except Exception:
            failures += 1
            print(f"{name:12s} ERROR", flush=True)
            traceback.print_exc(limit=-12)  # the innermost frames: where inductor failed
            continue
        d = (max_diff(eager, on_cpu), max_diff(whole, eager), max_diff(per_tensor, eager))
        ok = d[1] <= TOLERANCE and d[2] <= TOLERANCE
        failures += not ok
        print(
            f"{name:12s} dev-vs-cpu {d[0]:.1e} whole {d[1]:.1e} per_tensor {d[2]:.1e} {'ok' if ok else 'FAIL'} "
            f"{time.time() - start:.1f}s",
            flush=True,
        )
    print("failures:", failures)
    return failures


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
