"""Bounded, content-keyed caches: a small least-recently-used cache (at most `maxsize` entries, the
least recently used goes first) and the file digest that keys entries made from files."""
from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from typing import Generic, Hashable, TypeVar

Value = TypeVar("Value")


class LRUCache(Generic[Value]):
    """`get(key)` (None when absent) and `put(key, value)`; safe to share between threads."""

    def __init__(self, maxsize: int):
        if not (isinstance(maxsize, int) and maxsize >= 1):
            raise ValueError(f"maxsize must be a whole number of at least 1, got {maxsize!r}")
        self.maxsize = maxsize
        self._entries: OrderedDict[Hashable, Value] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Value | None:
        with self._lock:
            if key not in self._entries:
                return None
            self._entries.move_to_end(key)
            return self._entries[key]

    def put(self, key: Hashable, value: Value) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes: a cache key that changes with the content, not with the name or mtime."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
