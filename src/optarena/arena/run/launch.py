"""One run across processes: N local processes on this machine, or the processes ``torchrun`` started.

Every rank joins one process group (gloo on CPU; NCCL with one GPU per rank on CUDA) and runs the
same function; the runner then shares each batch among the ranks (docs/distributed.md).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

RankTarget = Callable[[int, int], object]  # called as target(rank, world size) in every process

# Where spawn()'s processes meet: a file that torch's FileStore shares among them. A free port found beforehand
# (bind to port 0, close, pass it on) can be taken by another process before rank 0 listens on it; a fresh file in
# a private directory cannot.
RENDEZVOUS_ENV = "OPTARENA_RENDEZVOUS_FILE"


def torchrun_rank() -> tuple[int, int] | None:
    """(rank, world size) when ``torchrun`` started this process (it sets RANK, WORLD_SIZE, MASTER_*), else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ["RANK"]), world) if world > 1 else None


def spawn(target: RankTarget, nproc: int) -> None:
    """Run ``target(rank, nproc)`` in ``nproc`` new local processes that meet through a file in a new private
    directory (removed afterwards).

    ``target`` is pickled into each process: a module-level function (or a ``functools.partial`` of one).
    """
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="optarena-rendezvous-") as directory:
        store = str(Path(directory) / "store")
        mp.spawn(_rank_main, args=(nproc, store, target), nprocs=nproc, join=True)


def _rank_main(rank: int, world: int, store: str, target: RankTarget) -> None:
    os.environ[RENDEZVOUS_ENV] = store
    target(rank, world)


def init_method() -> str:
    """How this process finds the others: spawn()'s file, else torchrun's environment (``MASTER_ADDR``, ...)."""
    store = os.environ.get(RENDEZVOUS_ENV)
    return "env://" if store is None else Path(store).as_uri()


@contextmanager
def process_group(device: str, rank: int, world: int) -> Iterator[str]:
    """Be rank ``rank`` of ``world`` while the block runs; yields this rank's device (its own GPU on CUDA)."""
    import torch
    import torch.distributed as dist

    cuda = device.startswith("cuda")
    if cuda:  # one GPU per rank
        device = f"cuda:{rank % torch.cuda.device_count()}"
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", init_method=init_method(), rank=rank, world_size=world)
    try:
        yield device
        dist.barrier()  # every rank done before teardown: a rank leaving early can block the others in it
    finally:
        dist.destroy_process_group()
