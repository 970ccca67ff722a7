"""Checkpoints by name from the Hugging Face Hub: `hf:OWNER/REPO[/FILE]`.

The file (default `best_model.pth.tar`, the published one lives in `Zevin2023/PromptIQA`) is
downloaded once into huggingface_hub's cache (`HF_HUB_CACHE`), then read from there; with
`HF_HUB_OFFLINE=1` only the cache is used. `huggingface_hub` is imported only for such names.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError

HF_PREFIX = "hf:"
PUBLISHED_REPO = "Zevin2023/PromptIQA"
PUBLISHED_FILE = "best_model.pth.tar"


def how_to_get_checkpoint(folder: Path) -> str:
    """What to do when the default checkpoint file is missing."""
    return (f"Get the published weights with --checkpoint {HF_PREFIX}{PUBLISHED_REPO} (downloaded once), "
            f"or download {PUBLISHED_FILE} from https://huggingface.co/{PUBLISHED_REPO} into {folder}/, "
            "or train a small demo model with `python train.py --demo` and pass --checkpoint runs/demo/best.pth.tar.")


def parse_hf_name(name: str) -> tuple[str, str]:
    """`hf:OWNER/REPO[/FILE]` -> (repo id, file name inside the repository).

    Every part must be a plain name: no empty, `.` or `..` parts and no backslashes, so a name can
    never point outside the repository (huggingface_hub would refuse such names with a bare ValueError).
    """
    rest = name[len(HF_PREFIX):]
    parts = rest.strip("/").split("/")
    if "\\" in rest or len(parts) < 2 or not all(parts) or any(part in (".", "..") for part in parts):
        raise UserError(f"{name}: not a Hugging Face checkpoint name; expected {HF_PREFIX}OWNER/REPO or "
                        f"{HF_PREFIX}OWNER/REPO/FILE with plain names (no empty, '.' or '..' parts, no backslashes), "
                        f"e.g. {HF_PREFIX}{PUBLISHED_REPO}")
    return "/".join(parts[:2]), "/".join(parts[2:]) or PUBLISHED_FILE


def download_from_hub(repo_id: str, filenames: tuple[str, ...], name: str, also: str = "") -> Path:
    """The cached path of the first of `filenames` that `repo_id` holds, downloaded once.

    UserError naming `name`, why, and how to fix it (`also`: another way to provide the file).
    """
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import EntryNotFoundError, HFValidationError, LocalEntryNotFoundError
    except ImportError:
        raise UserError(f"{name}: needs the huggingface_hub package; pip install huggingface_hub") from None
    for filename in filenames:
        try:
            return Path(hf_hub_download(repo_id, filename))
        except EntryNotFoundError as error:  # the repository has no such file: try the next name
            if isinstance(error, LocalEntryNotFoundError) or filename == filenames[-1]:
                failure = error
                break
        except (HFValidationError, OSError) as error:  # hub errors are OSErrors or these
            failure = error
            break
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    where = ("HF_HUB_OFFLINE is set and the file is not in the local cache; unset it once to download"
             if offline else "check the name, your network connection, and access rights to the repository")
    reason = str(failure).strip().splitlines()[0] if str(failure).strip() else type(failure).__name__
    fix = f"{where}; or {also}" if also else where
    raise UserError(f"{name}: cannot get {filename} from {repo_id} ({reason}); {fix}") from failure


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A local checkpoint path as it is; an `hf:` name as the path of the cached (downloaded) file."""
    name = os.fspath(path)
    if not name.startswith(HF_PREFIX):
        return Path(path)
    repo_id, filename = parse_hf_name(name)
    return download_from_hub(repo_id, (filename,), name)
