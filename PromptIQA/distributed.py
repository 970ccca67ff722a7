"""Process groups for one process, `mp.spawn` (one process per GPU, MoCo style) or torchrun.

Without CUDA the same launch modes run CPU processes over gloo, so DDP is testable anywhere. Every
mode is described by one `Topology` (nodes, processes per node, world size, backend), which runs
record in args.json and in their checkpoints.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from .config import LaunchConfig
from .errors import UserError

LAUNCHERS = ("single", "spawn", "torchrun")


@dataclass(frozen=True)
class Topology:
    """How many processes a run has and how they talk; the same fields whatever launched them."""

    launcher: str  # one of LAUNCHERS
    nodes: int
    procs_per_node: int
    backend: str | None  # None: one process, no process group

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node

    def to_dict(self) -> dict:
        return {**asdict(self), "world_size": self.world_size}


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


def resolve_topology(launch: LaunchConfig, device: torch.device) -> Topology:
    """torchrun's variables when it launched us; else `--multiprocessing-distributed` spawns one
    process per visible GPU (or `--cpu-processes` without CUDA) on each of `--world-size` nodes;
    else one process."""
    if launched_by_torchrun():
        world, local = int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_WORLD_SIZE"])
        if world % local:
            raise UserError(f"torchrun: WORLD_SIZE {world} is not a multiple of LOCAL_WORLD_SIZE {local}; "
                            "start the same number of processes on every node")
        launcher, nodes, procs = "torchrun", world // local, local
    elif launch.multiprocessing_distributed:
        procs = torch.cuda.device_count() if device.type == "cuda" else launch.cpu_processes
        launcher, nodes = "spawn", launch.nodes
    else:
        launcher, nodes, procs = "single", 1, 1
    backend = None
    if nodes * procs > 1:
        backend = launch.dist_backend or ("nccl" if device.type == "cuda" else "gloo")
    return Topology(launcher, nodes, procs, backend)


def owns_run_folder(topology: Topology, launch: LaunchConfig) -> bool:
    """Whether this launcher process will hold rank 0, the one process that writes the run folder."""
    if topology.launcher == "torchrun":
        return os.environ.get("RANK") == "0"
    return launch.node_rank == 0


def init_distributed(local_index: int, topology: Topology, launch: LaunchConfig, device: torch.device) -> DistContext:
    """Join the process group (if more than one process) and pick this process's device.

    Spawned processes: rank = node_rank * procs_per_node + local_index (MoCo). Under torchrun the
    launcher's RANK / LOCAL_RANK and env:// are used instead.
    """
    url = launch.dist_url
    if topology.launcher == "torchrun":
        rank, local_index, url = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), "env://"
    else:
        rank = launch.node_rank * topology.procs_per_node + local_index
    world_size = topology.world_size
    if device.type == "cuda":
        index = device.index if world_size == 1 and device.index is not None else local_index
        if index >= torch.cuda.device_count():
            raise UserError(f"process {rank} needs GPU {index} but only {torch.cuda.device_count()} are visible")
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)
    elif world_size > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // topology.procs_per_node))  # processes share the cores
    if world_size > 1:
        dist.init_process_group(
            topology.backend, init_method=url, rank=rank, world_size=world_size,
            timeout=timedelta(seconds=launch.dist_timeout),
        )
    return DistContext(rank, world_size, device, local_index)


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
