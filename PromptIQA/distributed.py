"""Process groups for one process, `mp.spawn` (one process per GPU, MoCo style) or torchrun.

Without CUDA the same launch modes run CPU processes over gloo, so DDP is testable anywhere.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import UserError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(
    local_index: int,
    procs_per_node: int,
    node_rank: int,
    world_size: int,
    device: torch.device,
    dist_url: str,
    backend: str | None,
    timeout_s: float,
) -> DistContext:
    """Join the process group (if more than one process) and pick this process's device.

    Spawned processes: rank = node_rank * procs_per_node + local_index (MoCo). Under torchrun the
    launcher's RANK / WORLD_SIZE / LOCAL_RANK and env:// are used instead.
    """
    if launched_by_torchrun():
        rank, world_size, local_index = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
        dist_url = "env://"
    else:
        rank = node_rank * procs_per_node + local_index
    if device.type == "cuda":
        index = device.index if world_size == 1 and device.index is not None else local_index
        if index >= torch.cuda.device_count():
            raise UserError(f"process {rank} needs GPU {index} but only {torch.cuda.device_count()} are visible")
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)
    elif world_size > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // procs_per_node))  # CPU processes share the cores
    if world_size > 1:
        backend = backend or ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(
            backend, init_method=dist_url, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s)
        )
    return DistContext(rank, world_size, device)


def all_gather_objects(obj, ctx: DistContext) -> list:
    """Every process's `obj`, in rank order, on every process."""
    if not ctx.distributed:
        return [obj]
    gathered = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def sync_buffers(model: torch.nn.Module, ctx: DistContext) -> None:
    """Give every process rank 0's buffers (BatchNorm statistics).

    DDP broadcasts buffers at the start of each forward, so after the last step each process holds
    the statistics of its own last batch; evaluating with those would disagree with the checkpoint.
    """
    if ctx.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def cleanup(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
