"""The configuration of a training run: frozen dataclasses, every value checked when it is made.

`TrainConfig` groups the data, the network, the optimisation, how the network runs, how the
processes are launched and the run folder. It is built once (from the command line by
`commands.train.parse_config`, or from a dict with `from_dict` / `from_flat`) and never changed; a
value that could only fail later (after caching the images, or after a whole epoch) is refused at
construction with a UserError naming the command-line flag and the fix.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ..data.cache import BAD_IMAGE_CHOICES
from ..data.dataset_info import DEFAULT_DATASET_INFO
from ..models import ModelConfig
from ..utils.constants import DEFAULT_SEED, MIN_IMG_SIZE
from ..utils.device import PRECISION_CHOICES
from ..utils.errors import UserError

PUBLISHED_DATASETS = ("spaq", "csiq", "livec", "koniq10k", "kadid", "live")
BACKEND_CHOICES = ("nccl", "gloo")


def _check(ok: bool, flag: str, value: Any, fix: str) -> None:
    if not ok:
        raise UserError(f"{flag} {value}: {fix}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_whole_number(value: Any) -> bool:
    """An int of any sign (bool, an int subclass, is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_rate(value: Any, flag: str) -> None:
    _check(_is_number(value) and 0 <= value <= 1, flag, value, "a probability: give a number from 0 to 1")


def _build(cls: type, values: Mapping[str, Any], section: str) -> Any:
    """`cls(**values)`, refusing keys that are not its fields (a typo in a saved or hand-written dict)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        where = f"{section}." if section else ""
        raise UserError(f"configuration: unknown setting(s) {', '.join(where + k for k in unknown)}; "
                        f"known: {', '.join(sorted(known))}")
    return cls(**values)


@dataclass(frozen=True)
class DataConfig:
    """Which datasets, where their images are cached, how they are loaded and evaluated."""

    datasets: tuple[str, ...] = PUBLISHED_DATASETS
    dataset_info: str = str(DEFAULT_DATASET_INFO)
    demo: bool = False  # make the built-in demo datasets available under their names
    cache_dir: str | None = None  # None: $PROMPTIQA_CACHE/images; "none": no cache
    on_bad_image: str = "fail"
    workers: int = 4  # DataLoader workers per process
    eval_batch_size: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "datasets", tuple(self.datasets))
        _check(bool(self.datasets) and all(isinstance(d, str) and d for d in self.datasets), "--dataset",
               " ".join(map(str, self.datasets)), "name at least one dataset of --dataset-info")
        _check(self.on_bad_image in BAD_IMAGE_CHOICES, "--on-bad-image", self.on_bad_image,
               f"use one of {', '.join(BAD_IMAGE_CHOICES)}")
        _check(_is_whole_number(self.workers) and self.workers >= 0, "--workers", self.workers,
               "use 0 (load images in the training process) or more worker processes")
        _check(_is_whole_number(self.eval_batch_size) and self.eval_batch_size >= 1, "--eval-batch-size",
               self.eval_batch_size, "use 1 or more images per evaluation batch")


@dataclass(frozen=True)
class OptimConfig:
    """The published recipe: Adam, half-cosine learning rate, label augmentations per group."""

    epochs: int = 50
    batch_size: int = 44  # global: split into one group per process and step
    lr: float = 1e-5
    weight_decay: float = 1e-5
    random_scale_rate: float = 0.5
    random_flipping_rate: float = 0.1

    def __post_init__(self) -> None:
        _check(_is_whole_number(self.epochs) and self.epochs >= 1, "--epochs", self.epochs, "train for 1 epoch or more")
        _check(_is_whole_number(self.batch_size) and self.batch_size >= 2, "--batch_size", self.batch_size,
               "a group needs at least 2 images (each is scored against the others); use 2 or more")
        _check(_is_number(self.lr) and self.lr > 0, "--lr", self.lr, "give a finite learning rate above 0")
        _check(_is_number(self.weight_decay) and self.weight_decay >= 0, "--weight_decay", self.weight_decay,
               "give a finite weight decay of 0 or more")
        _check_rate(self.random_scale_rate, "--random_scale_rate")
        _check_rate(self.random_flipping_rate, "--random_flipping_rate")


@dataclass(frozen=True)
class ExecutionConfig:
    """Where and how the network runs; none of it changes what is learned in fp32."""

    device: str = "auto"  # auto | cpu | cuda | cuda:INDEX
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 elsewhere
    compile: bool = False
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        _check(isinstance(self.device, str) and bool(self.device), "--device", self.device,
               "use auto, cpu, cuda or cuda:INDEX")
        _check(self.precision in PRECISION_CHOICES, "--precision", self.precision,
               f"use one of {', '.join(PRECISION_CHOICES)}")


@dataclass(frozen=True)
class LaunchConfig:
    """How the processes are started (torchrun's own variables take precedence over these)."""

    multiprocessing_distributed: bool = False  # spawn one process per GPU (or --cpu-processes) per node
    nodes: int = 1
    node_rank: int = 0
    cpu_processes: int = 1  # processes per node when there is no CUDA
    dist_url: str = "tcp://127.0.0.1:23456"
    dist_backend: str | None = None  # None: nccl on CUDA, gloo on CPU
    dist_timeout: float = 1800.0  # seconds before a stuck collective fails

    def __post_init__(self) -> None:
        _check(_is_whole_number(self.nodes) and self.nodes >= 1, "--world-size", self.nodes,
               "give the number of nodes, 1 or more")
        _check(self.nodes == 1 or self.multiprocessing_distributed, "--world-size", self.nodes,
               "several nodes need --multiprocessing-distributed (or launch with torchrun)")
        _check(_is_whole_number(self.node_rank) and 0 <= self.node_rank < self.nodes, "--rank", self.node_rank,
               f"give this node's rank, from 0 to --world-size - 1 ({self.nodes - 1})")
        _check(_is_whole_number(self.cpu_processes) and self.cpu_processes >= 1, "--cpu-processes", self.cpu_processes,
               "give 1 or more processes per node")
        _check(self.dist_backend in (None, *BACKEND_CHOICES), "--dist-backend", self.dist_backend,
               f"use one of {', '.join(BACKEND_CHOICES)}")
        _check(_is_number(self.dist_timeout) and self.dist_timeout > 0, "--dist-timeout", self.dist_timeout,
               "give a number of seconds above 0")


@dataclass(frozen=True)
class RunConfig:
    """The run folder and how this invocation relates to a run already in it."""

    save_path: str = "runs/promptiqa"
    resume: str | None = None  # PATH of a last.pth.tar, or auto
    overwrite: bool = False  # start afresh in a folder that holds a run
    stop_after_epoch: int | None = None

    def __post_init__(self) -> None:
        _check(isinstance(self.save_path, str) and bool(self.save_path), "--save_path", repr(self.save_path),
               "name the run folder")
        _check(not (self.overwrite and self.resume), "--overwrite", "with --resume",
               "choose one: --resume continues the run in --save_path, --overwrite starts it afresh")
        _check(self.stop_after_epoch is None or (_is_whole_number(self.stop_after_epoch) and self.stop_after_epoch >= 1),
               "--stop-after-epoch", self.stop_after_epoch, "give a number of epochs, 1 or more")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run is given. `model.prompt_num` is the group size - 1
    (`with_world_size` derives it once the number of processes is known)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrained: str = "imagenet"  # imagenet | PATH | none
    optim: OptimConfig = field(default_factory=OptimConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    run: RunConfig = field(default_factory=RunConfig)
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        _check(isinstance(self.model.backbone, str) and bool(self.model.backbone), "--backbone",
               repr(self.model.backbone), "name a timm model")
        _check(_is_whole_number(self.model.img_size) and self.model.img_size >= MIN_IMG_SIZE, "--img-size",
               self.model.img_size, f"use {MIN_IMG_SIZE} pixels or more (the published size is 224)")
        _check(_is_whole_number(self.model.cnn_dim) and self.model.cnn_dim >= 1, "--cnn-dim", self.model.cnn_dim,
               "use a whole number of channels such as 192 or 384")
        _check(isinstance(self.pretrained, str) and bool(self.pretrained), "--pretrained", repr(self.pretrained),
               "use imagenet, a weights file or none")
        _check(_is_whole_number(self.seed) and 0 <= self.seed < 2**32, "--seed", self.seed,
               "use a whole number from 0 to 2**32 - 1")

    @property
    def end_epoch(self) -> int:
        """One past the last epoch this invocation runs (--stop-after-epoch ends a run early)."""
        return min(self.optim.epochs, self.run.stop_after_epoch or self.optim.epochs)

    def with_world_size(self, world_size: int) -> "TrainConfig":
        """This configuration for `world_size` processes: each takes a group of batch_size / world_size
        images per step, and each image of a group is scored against the other group size - 1."""
        batch = self.optim.batch_size
        if batch % world_size or batch // world_size < 2:
            raise UserError(
                f"--batch_size {batch} must split into equal groups of at least 2 images over {world_size} "
                f"process(es); use a multiple of {world_size} of at least {2 * world_size}"
            )
        return replace(self, model=replace(self.model, prompt_num=batch // world_size - 1))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any]) -> "TrainConfig":
        """Rebuild from `to_dict()` output (e.g. args.json); missing settings take their defaults."""
        values = {}
        for key, value in saved.items():
            section = _SECTIONS.get(key)
            if section is None:
                values[key] = value  # a top-level setting such as seed; _build refuses unknown keys
            elif section is ModelConfig:
                values[key] = ModelConfig.from_dict(value)
            else:
                values[key] = _build(section, value, key)
        return _build(cls, values, "")

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Build from dotted keys (`{"optim.lr": 1e-4, "seed": 3}`); settings not given take their defaults."""
        nested: dict[str, Any] = {}
        for key, value in values.items():
            section, _, name = key.rpartition(".")
            if section:
                nested.setdefault(section, {})[name] = value
            else:
                nested[name] = value
        return cls.from_dict(nested)


_SECTIONS: dict[str, type] = {
    "data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "execution": ExecutionConfig,
    "launch": LaunchConfig, "run": RunConfig,
}

# `--demo`: a run that finishes within ten minutes on a 2-core CPU, on the built-in demo quality
# dataset, from random weights (none can be fetched). A small CNN learns distortions from random
# weights far faster than a ViT, and projecting its levels to 192 channels keeps the MALs small.
# One requirement, flipped in three groups in ten: the direction that dominates lets the image
# features learn quality, the flipped groups make the prompts matter (docs/demo-results.md).
# Applied before the explicit flags, which win.
DEMO_PRESET: dict[str, Any] = {
    "data.datasets": ("demo_kadid",), "data.demo": True, "data.workers": 0,
    "model.backbone": "resnet10t", "model.img_size": 64, "model.cnn_dim": 192, "pretrained": "none",
    "optim.epochs": 9, "optim.batch_size": 12, "optim.lr": 1e-4, "optim.random_flipping_rate": 0.3,
    "execution.device": "cpu", "run.save_path": "runs/demo",
}
