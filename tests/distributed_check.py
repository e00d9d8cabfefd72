"""Distributed checks in N gloo processes on CPU, run by tests/test_distributed.py (``--check``):

* ``optimizers``: every registered optimizer on DTensor shards; rank 0 writes the gathered results;
* ``fsdp``: FSDP2 training with a DCP checkpoint (``--phase save`` / ``load``, ``--checkpoint DIR``);
* ``ddp``: every registered optimizer under DDP;
* ``burst``: the burst trigger with a different metric on each rank;
* ``nonfinite``: a NaN in one rank's shard of a gradient: every rank skips (or raises) together.

``optimizers`` (``--world 3 --out results.pt``): each rank shards the same float64 parameters along
dim 0 (``Shard(0)``, as FSDP2 does: a 7-row tensor splits 3/3/1 over three ranks), feeds the same
full gradients, sharded, and steps. Rank 0 saves every optimizer's gathered parameters and state;
the test compares them with one process.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Shard, distribute_tensor, init_device_mesh

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optarena.arena.run import launch
from tests.distributed_cases import CASES, STEPS, full_gradients, full_parameters, run_steps
from tests.helpers import build

DTYPE = getattr(torch, os.environ.get("OPTARENA_DTYPE", "float64"))
STEPS_RUN = int(os.environ.get("OPTARENA_STEPS", STEPS))


@contextmanager
def process_group(rank: int, world: int) -> Iterator[None]:
    """This process as ``rank`` of a gloo group on this machine, for the block; the ranks meet as those of
    ``optarena run --nproc`` do (:func:`optarena.arena.run.launch.init_method`)."""
    dist.init_process_group("gloo", init_method=launch.init_method(), rank=rank, world_size=world)
    try:
        yield
    finally:
        dist.destroy_process_group()


def to_local_full(value: object) -> object:
    if isinstance(value, DTensor):
        return value.full_tensor()
    return value


def worker(rank: int, world: int, out: str) -> None:
    with process_group(rank, world):
        torch.set_num_threads(1)
        mesh = init_device_mesh("cpu", (world,))
        results: dict[str, object] = {}
        for case_id, name, kwargs in CASES:
            params = [torch.nn.Parameter(distribute_tensor(p, mesh, [Shard(0)])) for p in full_parameters(DTYPE)]

            def set_grads(step: int, params: list[torch.Tensor] = params) -> None:
                for p, g in zip(params, full_gradients(step, DTYPE)):
                    p.grad = distribute_tensor(g, mesh, [Shard(0)])

            try:
                opt = run_steps(name, kwargs, params, set_grads, steps=STEPS_RUN)
                gathered = [p.detach().full_tensor() for p in params]
                state = [
                    {k: to_local_full(v) for k, v in opt.state[p].items()} if p in opt.state else {} for p in params
                ]
                results[case_id] = {"params": gathered, "state": state}
            except Exception as error:
                results[case_id] = {"error": f"{type(error).__name__}: {error}"}
        if rank == 0:
            torch.save({"steps": STEPS, "results": results}, out)


def burst_worker(rank: int, world: int, out: str) -> None:
    """Each rank reports its own metric; every rank must burst at the same epochs."""
    import optarena

    with process_group(rank, world):
        # Rank r's accuracy rises for rank 0 and falls for the others: locally, rank 0 never plateaus.
        local = [0.5 + (0.05 * epoch if rank == 0 else -0.05 * epoch) for epoch in range(6)]
        decisions = {}
        for reduce in ("mean", "max", "none"):
            p = torch.nn.Parameter(torch.zeros(3))
            opt = optarena.Adaburst(
                [p], burst_trigger="metric_plateau", burst_patience=0, burst_T_max=4, burst_metric_reduce=reduce
            )
            bursts = [opt.epoch_end(m) for m in local]
            sched_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
            sched = optarena.LRBurst(sched_opt, T_max=4, patience=0, metric_reduce=reduce)
            sched_bursts = [sched.step(m) for m in local]
            decisions[reduce] = {
                "adaburst": bursts,
                "burst_lr": opt.param_groups[0]["burst_lr"],
                "lrburst": sched_bursts,
                "lr": sched_opt.param_groups[0]["lr"],
            }
        torch.save(decisions, f"{out}.rank{rank}")


def fsdp_worker(rank: int, world: int, out: str) -> None:
    """FSDP2 training of a small MLP: 3 steps, a DCP checkpoint, 3 more steps (``--phase save``), or
    load the checkpoint written by another world size and run the last 3 steps (``--phase load``)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.fsdp import fully_shard

    from tests.distributed_cases import FSDP_CASES, fsdp_batch, fsdp_model, make_fsdp_optimizer

    phase, checkpoint_root = os.environ["OPTARENA_PHASE"], Path(os.environ["OPTARENA_CHECKPOINT"])
    with process_group(rank, world):
        torch.set_num_threads(1)
        mesh = init_device_mesh("cpu", (world,))
        results: dict[str, object] = {}
        for case_id, name, kwargs in FSDP_CASES:
            try:
                model = fsdp_model()
                for layer in model:
                    if any(True for _ in layer.parameters()):
                        fully_shard(layer, mesh=mesh)
                fully_shard(model, mesh=mesh)
                opt = make_fsdp_optimizer(model, name, kwargs)

                def train(steps: range, model: torch.nn.Module = model, opt: object = opt) -> None:
                    for step in steps:
                        x, y = fsdp_batch(step)
                        rows = x.shape[0] // world
                        xs, ys = x[rank * rows : (rank + 1) * rows], y[rank * rows : (rank + 1) * rows]
                        opt.zero_grad()
                        torch.nn.functional.mse_loss(model(xs), ys).backward()
                        opt.step()

                checkpoint = checkpoint_root / case_id
                if phase == "save":
                    train(range(3))
                    model_sd, optim_sd = get_state_dict(model, opt)
                    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(checkpoint))
                else:
                    model_sd, optim_sd = get_state_dict(model, opt)
                    state = {"model": model_sd, "optim": optim_sd}
                    dcp.load(state, checkpoint_id=str(checkpoint))
                    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
                train(range(3, 6))
                results[case_id] = {"params": [p.detach().full_tensor() for p in model.parameters()]}
            except Exception as error:
                results[case_id] = {"error": f"{type(error).__name__}: {error}"}
        if rank == 0:
            torch.save(results, out)


def ddp_worker(rank: int, world: int, out: str) -> None:
    """Every registered optimizer on a DDP-wrapped MLP (replicated parameters, averaged gradients)."""
    from torch.nn.parallel import DistributedDataParallel

    from tests.distributed_cases import CASES, fsdp_batch, fsdp_model, make_fsdp_optimizer

    with process_group(rank, world):
        torch.set_num_threads(1)
        results: dict[str, object] = {}
        for case_id, name, kwargs in CASES:
            model = DistributedDataParallel(fsdp_model())
            opt = make_fsdp_optimizer(model.module, name, kwargs)
            for step in range(6):
                x, y = fsdp_batch(step)
                rows = x.shape[0] // world
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(
                    model(x[rank * rows : (rank + 1) * rows]), y[rank * rows : (rank + 1) * rows]
                )
                loss.backward()
                opt.step()
            results[case_id] = {"params": [p.detach().clone() for p in model.module.parameters()]}
        # The last DDP model's reducer must be gone, and every rank done, before the group is
        # destroyed: otherwise one rank can block in teardown for ever (seen on CI, torch 2.13).
        del model, opt
        if rank == 0:
            torch.save(results, out)
        dist.barrier()


def nonfinite_worker(rank: int, world: int, out: str) -> None:
    """A NaN in the last row of a Shard(0) gradient (on the last rank only): the policy acts on every rank."""
    import optarena

    with process_group(rank, world):
        mesh = init_device_mesh("cpu", (world,))
        outcome: dict[str, object] = {}
        for name in ("adamw", "adaburst", "lion"):
            full = torch.arange(12.0, dtype=torch.float64).reshape(6, 2)
            p = torch.nn.Parameter(distribute_tensor(full, mesh, [Shard(0)]))
            skipping = build([p], name, nonfinite="skip")
            grad = torch.ones(6, 2, dtype=torch.float64)
            grad[-1, -1] = float("nan")
            p.grad = distribute_tensor(grad, mesh, [Shard(0)])
            skipping.step()
            unchanged = torch.equal(p.detach().full_tensor(), full)
            raising = build([p], name, nonfinite="raise")
            try:
                raising.step()
                raised = False
            except optarena.optim.NonFiniteGradientError:
                raised = True
            outcome[name] = {"skipped": skipping.skipped_steps, "unchanged": unchanged, "raised": raised}
        torch.save(outcome, f"{out}.rank{rank}")


CHECKS = {
    "optimizers": worker,
    "burst": burst_worker,
    "fsdp": fsdp_worker,
    "ddp": ddp_worker,
    "nonfinite": nonfinite_worker,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--world", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--check", choices=sorted(CHECKS), default="optimizers")
    parser.add_argument("--phase", choices=("save", "load"), default="save", help="fsdp: save or load a checkpoint")
    parser.add_argument("--checkpoint", default="", help="fsdp: the checkpoint directory")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="optimizers: the dtype")
    parser.add_argument("--steps", type=int, default=STEPS, help="optimizers: steps to take")
    args = parser.parse_args()
    os.environ.update(
        OPTARENA_PHASE=args.phase,
        OPTARENA_CHECKPOINT=args.checkpoint,
        OPTARENA_DTYPE=args.dtype,
        OPTARENA_STEPS=str(args.steps),
    )
    launch.spawn(functools.partial(CHECKS[args.check], out=args.out), args.world)


if __name__ == "__main__":
    main()
