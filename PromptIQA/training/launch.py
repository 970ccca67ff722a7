"""How a training run is launched: one process, `mp.spawn` or torchrun, described by one Topology."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..utils.distributed import DistContext, launched_by_torchrun
from ..utils.errors import UserError
from .config import LaunchConfig

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

