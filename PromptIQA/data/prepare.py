"""Datasets ready for training or evaluation: label files read and checked, image stores opened, splits made."""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..utils.distributed import DistContext, all_gather_objects, barrier
from .cache import BadImage, DirectImages, cache_root, open_images
from .dataset_info import DatasetEntry, check_datasets, load_dataset_info
from .demo import demo_dataset_info
from .image import ImageError
from .loader import SplitDataset
from .records import Record


def read_datasets(names: list[str], dataset_info: str | Path, demo: bool = False) -> dict[str, list[Record]]:
    """The pre-flight check: every requested dataset read, all problems reported together."""
    info = load_dataset_info(dataset_info)
    if demo:
        for name, entry in demo_dataset_info().items():
            info[name] = DatasetEntry(name, entry["root"], reader=entry["reader"], source="built-in demo")
    return check_datasets(names, info)


def image_cache_dir(cache_dir: str | None) -> Path | None:
    """`none` turns the cache off; the default lives under $PROMPTIQA_CACHE (or ~/.cache/promptiqa)."""
    if cache_dir == "none":
        return None
    return Path(cache_dir) if cache_dir else cache_root() / "images"


def find_unreadable(store: DirectImages, threads: int, ctx: DistContext) -> list[BadImage]:
    """Decode every image of an uncached store once (each process a share) and list those that fail."""

    def check(index: int) -> BadImage | None:
        try:
            store[index]
        except ImageError as error:
            return BadImage(index, store.paths[index], str(error).removeprefix(f"{store.paths[index]}: "))
        return None

    with ThreadPoolExecutor(threads) as pool:
        mine = [b for b in pool.map(check, range(ctx.rank, len(store), ctx.world_size)) if b is not None]
    return sorted((b for found in all_gather_objects(mine, ctx) for b in found), key=lambda b: b.index)


def open_datasets(
    records: dict[str, list[Record]], img_size: int, seed: int, ctx: DistContext, *, cache_dir: str | None = None,
    workers: int = 4, on_bad_image: str = "fail", log: Callable[[str], None] | None = None,
) -> list[SplitDataset]:
    """Split each dataset and open its image store; one process per node builds missing caches first.

    `cache_dir` is a folder, None for the default one, or "none" for no cache; `workers` threads decode.

    Unreadable images stop here (`--on-bad-image fail`, with the cache) or are left out and counted
    (`skip`; without the cache every image is decoded once to find them).
    """
    cache_folder = image_cache_dir(cache_dir)
    threads = max(workers, 1)

    def open_stores() -> list:
        return [
            open_images([r.path for r in recs], img_size, cache_folder, threads, on_bad_image, ctx.is_main)
            for recs in records.values()
        ]

    if ctx.local_rank != 0:
        barrier(ctx)
    stores = open_stores()
    if ctx.local_rank == 0:
        barrier(ctx)
    datasets = []
    for (name, recs), store in zip(records.items(), stores):
        bad = store.bad
        if cache_folder is None and on_bad_image == "skip":
            bad = find_unreadable(store, threads, ctx)
        if bad and log is not None:
            log(f"{name}: skipping {len(bad)} unreadable image(s), e.g. {bad[0].path} ({bad[0].reason})")
        datasets.append(SplitDataset.from_records(name, recs, store, seed, bad))
    return datasets

