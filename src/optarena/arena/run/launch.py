"""One run across processes: N local processes on this machine, or the processes ``torchrun`` started.

Every rank joins one process group (gloo on CPU; NCCL with one GPU per rank on CUDA) and runs the
same function; the runner then shares each batch among the ranks (docs/distributed.md).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager

RankTarget = Callable[[int, int], object]  # called as target(rank, world size) in every process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_rank() -> tuple[int, int] | None:
    """(rank, world size) when ``torchrun`` started this process (it sets RANK, WORLD_SIZE, MASTER_*), else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ["RANK"]), world) if world > 1 else None


def spawn(target: RankTarget, nproc: int) -> None:
    """Run ``target(rank, nproc)`` in ``nproc`` new local processes that meet on a free local port.

    ``target`` is pickled into each process: a module-level function (or a ``functools.partial`` of one).
    """
    import torch.multiprocessing as mp

    mp.spawn(_rank_main, args=(nproc, free_port(), target), nprocs=nproc, join=True)


def _rank_main(rank: int, world: int, port: int, target: RankTarget) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    target(rank, world)


@contextmanager
def process_group(device: str, rank: int, world: int) -> Iterator[str]:
    """Be rank ``rank`` of ``world`` while the block runs; yields this rank's device (its own GPU on CUDA)."""
    import torch
    import torch.distributed as dist

    cuda = device.startswith("cuda")
    if cuda:  # one GPU per rank
        device = f"cuda:{rank % torch.cuda.device_count()}"
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    try:
        yield device
        dist.barrier()  # every rank done before teardown: a rank leaving early can block the others in it
    finally:
        dist.destroy_process_group()
