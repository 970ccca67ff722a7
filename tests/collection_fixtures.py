"""A generated image collection as users have them: nested folders, a list file, img2dataset tar
shards (with their .json/.txt members), a corrupt and an empty image; a tiny CNN checkpoint."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import torch
from conftest import write_image

from PromptIQA.models import ModelConfig, PromptIQA
from PromptIQA.models.checkpoint import save_checkpoint

SMALL_CNN = ModelConfig("resnet10t", 64, prompt_num=2, cnn_dim=32)
SHARD_SAMPLES = 3


def encoded(seed: int, extension: str, size: tuple[int, int] = (40, 56)) -> bytes:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    ok, data = cv2.imencode(extension, cv2.GaussianBlur(image, (5, 5), 0))
    assert ok
    return data.tobytes()


def write_shard(path: Path, shard: int, seed: int) -> list[str]:
    """A shard in img2dataset's layout: per sample KEY.jpg, KEY.json and KEY.txt; returns the keys."""
    keys = []
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for index in range(SHARD_SAMPLES):
            key = f"{shard:05d}{index:04d}"
            members = {
                f"{key}.jpg": encoded(seed + index, ".jpg"),
                f"{key}.json": json.dumps({"key": key, "caption": "a photo", "status": "success"}).encode(),
                f"{key}.txt": b"a photo",
            }
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            keys.append(key)
    return keys


def make_collection(root: Path) -> tuple[list[str], dict[str, list[str]]]:
    """Writes the collection under `root`; returns the command-line inputs and the expected ids in
    collection order (good and bad)."""
    photos = root / "photos"
    good = [write_image(photos / "a.jpg", 1), write_image(photos / "b.png", 2),
            write_image(photos / "sub" / "c.jpg", 3), write_image(photos / "sub" / "deeper" / "d.png", 4)]
    (photos / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG \xff\xd9")
    (photos / "empty.png").write_bytes(b"")
    (photos / "notes.txt").write_text("not an image")
    listed = [write_image(root / "extra" / "e1.jpg", 5), write_image(root / "extra" / "e2.png", 6)]
    (root / "lists").mkdir()
    (root / "lists" / "list.txt").write_text("# images kept elsewhere\n\n../extra/e1.jpg\n../extra/e2.png\n")
    shard_ids = []
    for shard in range(3):
        path = root / "shards" / f"{shard:05d}.tar"
        shard_ids += [f"{path}/{key}" for key in write_shard(path, shard, 100 + 10 * shard)]
    ordered = [str(photos / "a.jpg"), str(photos / "b.png"), str(photos / "corrupt.jpg"), str(photos / "empty.png"),
               str(photos / "sub" / "c.jpg"), str(photos / "sub" / "deeper" / "d.png")]
    ordered += shard_ids + [str(p) for p in listed]
    args = ["--images", str(photos), str(root / "shards" / "{00000..00002}.tar"), "--recursive",
            "--image-list", str(root / "lists" / "list.txt")]
    expected = {"ordered": ordered, "bad": [str(photos / "corrupt.jpg"), str(photos / "empty.png")],
                "good": [str(p) for p in good + listed] + shard_ids}
    return args, expected


def small_checkpoint(folder: Path) -> tuple[Path, Path]:
    """A tiny resnet10t checkpoint at 64 px and a prompts.json of three ISPs."""
    torch.manual_seed(0)
    model = PromptIQA(SMALL_CNN).eval()
    checkpoint = folder / "small.pth.tar"
    save_checkpoint({"model": model.state_dict(), "model_config": SMALL_CNN.to_dict(), "prompt_num": 2}, checkpoint)
    for i in range(3):
        write_image(folder / "isp" / f"p{i}.png", seed=50 + i)
    rows = [[f"isp/p{i}.png", 0.1 + 0.4 * i] for i in range(3)]
    (folder / "prompts.json").write_text(json.dumps({"isp": rows}))
    return checkpoint, folder / "prompts.json"
