"""A local huggingface_hub cache, laid out as huggingface_hub lays out a download, for offline tests."""
from __future__ import annotations

import shutil
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root: Path, repo_id: str, files: dict) -> None:
    """Lay out `files` (name -> source path) as huggingface_hub caches a download of `repo_id` at main:
    root/models--OWNER--NAME/snapshots/COMMIT/FILE, and refs/main naming COMMIT."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for name, source in files.items():
        target = repo / "snapshots" / COMMIT / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
