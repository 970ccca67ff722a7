"""Process groups for one process, `mp.spawn` (one process per GPU, MoCo style) or torchrun.

Without CUDA the same launch modes run CPU processes over gloo, so DDP is testable anywhere. Every
mode is described by one `Topology` (nodes, processes per node, world size, backend), which runs
record in args.json and in their checkpoints.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

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


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def join_torchrun(device: torch.device, timeout: timedelta = timedelta(hours=2)) -> tuple[DistContext, dist.Store | None]:
    """This process's place in a torchrun job (one process without torchrun), with the process group
    joined (nccl on GPUs, gloo on CPUs) and a key-value store shared by the job's processes.

    Each process takes GPU LOCAL_RANK; CPU processes share the cores. The store's keys are kept apart
    per torchrun restart, so counters start from zero when torchrun restarts the job.
    """
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return DistContext(device=device), None
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", 1))))
    store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=world, timeout=timeout))
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return DistContext(rank, world, device, local), dist.PrefixStore(f"promptiqa/restart{restart}/", store)


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
