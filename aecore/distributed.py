"""Process-group helpers for DDP under torchrun: join, who am I, all-reduce, broadcast, leave.

torchrun starts one process per device and tells each who it is through environment variables
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). `init` joins that group: NCCL on CUDA
(each process on cuda:LOCAL_RANK), gloo on the CPU. Without those variables nothing here starts a
group and every helper answers as for one process (rank 0 of 1, reductions are no-ops), so
single-process training is exactly what it was.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from aecore.device import pick_device
from aecore.errors import ConfigError

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """Whether this process was started by torchrun (or anything that sets its variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def launched_world_size() -> int:
    """How many processes torchrun started (WORLD_SIZE), known before `init` joins their group: 1
    without torchrun, or when WORLD_SIZE is not a count (`init` then fails on the launch itself)."""
    if not launched():
        return 1
    try:
        return max(1, int(os.environ["WORLD_SIZE"]))
    except ValueError:
        return 1


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    """This process's index on its node (its GPU under torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0: the one process that writes checkpoints, metrics and progress."""
    return rank() == 0


def backend() -> str | None:
    return str(dist.get_backend()) if is_initialized() else None


def init(device: str | None = None) -> str | None:
    """Join torchrun's process group; returns the device this process trains on.

    Without torchrun's variables: no group, `device` comes back unchanged. Under torchrun: CUDA (the
    default when present) means NCCL and cuda:LOCAL_RANK, `cpu` means gloo. Already joined: no-op.
    """
    if not launched():
        return device
    missing = [name for name in TORCHRUN_VARS if name not in os.environ]
    if missing:
        raise ConfigError(f"RANK and WORLD_SIZE are set but {', '.join(missing)} not; launch with torchrun")
    chosen = pick_device(device)
    if chosen.type == "cuda":
        if chosen.index is not None:
            raise ConfigError(f"--device {device} under torchrun: each process uses cuda:LOCAL_RANK; "
                              "pass --device cuda (or no --device)")
        count = torch.cuda.device_count()
        if local_rank() >= count:
            raise ConfigError(f"LOCAL_RANK {local_rank()} but this node has {count} CUDA device(s); "
                              f"use --nproc_per_node {count} or fewer")
        chosen = torch.device("cuda", local_rank())
        torch.cuda.set_device(chosen)
        name = "nccl"
    elif chosen.type == "cpu":
        name = "gloo"
    else:
        raise ConfigError(f"DDP runs on CUDA (NCCL) or on the CPU (gloo), not on {chosen.type}; "
                          "pass --device cuda or --device cpu")
    if is_initialized():
        return str(chosen)
    available = dist.is_available() and (dist.is_nccl_available() if name == "nccl" else dist.is_gloo_available())
    if not available:
        raise ConfigError(f"this PyTorch build has no {name} backend; DDP on {chosen.type} needs it")
    dist.init_process_group(name)  # env:// rendezvous from torchrun's MASTER_ADDR/PORT, RANK, WORLD_SIZE
    return str(chosen)


# How long `cleanup` sleeps (holding no GIL) before leaving, so gloo's worker threads can release
# the last collective's tensors (see there). Measured with tests/ddp_worker.py under torchrun on
# this 2-core machine: 0 aborts in 40 runs with it, 2 in 12 without.
GLOO_SETTLE_SECONDS = 0.05


def cleanup() -> None:
    """Leave the group (if any); safe to call twice.

    Once a DDP wrapper has been built, torch keeps references to the group, so destroying it does
    not stop gloo's worker threads. One of them may still be dropping the last collective's tensors,
    which takes the GIL; if the interpreter is already shutting down, Python ends that thread inside
    a C++ destructor and the process aborts ("terminate called without an active exception",
    exit -6) after its work is done. A short sleep gives those threads the GIL first. No barrier:
    cleanup also runs when this process failed alone, and a barrier would then wait for the others.
    """
    if is_initialized():
        time.sleep(GLOO_SETTLE_SECONDS)
        dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum over processes, in place; returns the tensor (unchanged in one process)."""
    if is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_bytes(data: bytes | None, device: torch.device | str, src: int = 0) -> bytes | None:
    """Rank `src`'s `data` (or None) on every rank, sent as a uint8 tensor on `device` (NCCL needs
    CUDA tensors): how a checkpoint read on rank 0 reaches nodes that cannot see its file."""
    if not is_initialized():
        return data
    size = torch.tensor([-1 if data is None else len(data)], dtype=torch.int64, device=device)
    dist.broadcast(size, src=src)
    if int(size) <= 0:
        return None if int(size) < 0 else b""
    if rank() == src:
        payload = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device)
    else:
        payload = torch.empty(int(size), dtype=torch.uint8, device=device)
    dist.broadcast(payload, src=src)
    return bytes(payload.cpu().numpy()) if rank() != src else data


def first_disagreeing_rank(value: Any) -> int | None:
    """The lowest rank whose `value` differs from rank 0's, or None when all agree (a sanity check
    that every process loaded the same data with the same recipe)."""
    if not is_initialized():
        return None
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return next((r for r, v in enumerate(values) if v != values[0]), None)


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """[lo, hi) of `rank`'s contiguous share of n items; shares differ in size by at most one."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)
