"""Process groups for one process, `mp.spawn` (one process per GPU, MoCo style) or torchrun.

Without CUDA the same launch modes run CPU processes over gloo, so DDP is testable anywhere. Every
mode is described by one `Topology` (nodes, processes per node, world size, backend), which runs
record in args.json and in their checkpoints.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    local_rank: int = 0  # index of this process on its node

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


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
