"""Decoded-image cache: uint8 tensors in safetensors files under <home>/cache/.

Decoding tens of thousands of JPEGs takes seconds to minutes; the result is a few hundred MB of
uint8 that safetensors reads back at disk speed. A cache entry is keyed by what it was built from
(the source's path, size and mtime, plus the decode options), so editing or replacing the source
builds a new one. Writes are atomic (temp file + os.replace): a crash or a concurrent reader never
sees half a file. A cache file that fails to read is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable

from torch import Tensor

from aecore import paths

log = logging.getLogger("aecore.data")

FORMAT = "aecore-decoded-v1"


def cache_dir() -> Path:
    return paths.home_dir() / "cache"


def source_key(*parts: object) -> str:
    """A stable hex key from strings/numbers, e.g. source_key('cifar10', path, size, mtime_ns, 32)."""
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:24]


def file_stamp(path: Path) -> tuple[str, int, int]:
    """(resolved path, size, mtime_ns): changes whenever the file is replaced or edited."""
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def cache_path(name: str, key: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    return cache_dir() / f"{safe}-{key}.safetensors"


def load(path: Path, keys: list[str] | None = None) -> tuple[dict[str, Tensor], dict[str, str]] | None:
    """(tensors, metadata) from a cache file, or None when missing / unreadable / foreign."""
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                return None
            names = list(f.keys()) if keys is None else keys
            tensors = {k: f.get_tensor(k) for k in names}
        return tensors, meta
    except Exception as e:  # corrupt or truncated cache: rebuild it
        log.warning("ignoring unreadable cache file %s (%s); rebuilding it", path, e)
        return None


def save(path: Path, tensors: dict[str, Tensor], meta: dict[str, str]) -> None:
    """Write atomically; a failure to cache is logged, not raised (the data is still returned)."""
    from safetensors.torch import save_file

    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        os.close(fd)
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata={**meta, "format": FORMAT})
        os.chmod(tmp, 0o644)   # mkstemp makes it 0600; the cache is not secret
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        log.warning("could not write the decoded-data cache %s (%s); next load will decode again", path, e)
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def cached(name: str, key: str, build: Callable[[], tuple[dict[str, Tensor], dict[str, str]]],
           keys: list[str] | None = None) -> tuple[dict[str, Tensor], dict[str, str], bool]:
    """(tensors, metadata, hit): from the cache when present, else build() and store it."""
    path = cache_path(name, key)
    hit = load(path, keys)
    if hit is not None:
        return hit[0], hit[1], True
    tensors, meta = build()
    save(path, tensors, meta)
    if keys is not None:
        tensors = {k: tensors[k] for k in keys}
    return tensors, meta, False
