"""glibc's malloc controls, in a module that imports nothing heavy: the app server (`aecore.lab.serving`)
and the projection process, which must never import torch (`aecore.lab.projection_worker`), both use it.
Each is a no-op off glibc."""

from __future__ import annotations

import os


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas for threads created from now on; True when set.

    Streamlit runs every script run in a new thread, and glibc gives threads their own arenas (up to 8
    per core): memory freed in one arena is not reused by the next run's thread, so a server that many
    sessions have used keeps growing (bench/README.md). `AECORE_MALLOC_ARENAS` sets another cap, 0 none.
    A no-op off glibc."""
    return _mallopt(-8, _setting("AECORE_MALLOC_ARENAS", arenas))      # -8: M_ARENA_MAX (malloc.h)


MMAP_THRESHOLD = 256 * 1024


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Blocks of `threshold` bytes or more get a mapping of their own, handed back to the system when freed
    (glibc's M_MMAP_THRESHOLD, fixed); True when set.

    Why: glibc starts at 128 KB but raises the threshold to the size of each mapped block that is freed,
    up to 32 MB, so a server soon puts its sessions' image batches and figure arrays in the heap arenas,
    where they fragment them and malloc_trim cannot give the holes back: 300 tabs opened and closed grew the
    server by 13-18 %. Fixed at 256 KB, it grew 4 % and started 190 MB lower; the price is a training run
    in the server's process (every large activation mapped and zero-filled at each step): the teacher's
    conv-ae denoiser took 15.8 s instead of 6.4 (bench/README.md).
    `AECORE_MALLOC_MMAP_THRESHOLD` sets another size in bytes, 0 leaves glibc's own rule. A no-op off glibc."""
    return _mallopt(-3, _setting("AECORE_MALLOC_MMAP_THRESHOLD", threshold))   # -3: M_MMAP_THRESHOLD


def return_free_memory() -> bool:
    """Give memory that malloc holds free back to the system (glibc's malloc_trim); True when some was.
    Called when sessions end, so a closed class's pages do not stay in the server's RSS."""
    try:
        return bool(_libc().malloc_trim(0))
    except (OSError, AttributeError):
        return False


def _setting(name: str, default: int) -> int:
    """The operator's integer in environment variable `name`, else `default` (also when it is no integer)."""
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _mallopt(param: int, value: int) -> bool:
    """glibc's mallopt(param, value); False when `value` <= 0 (leave glibc's rule) or off glibc."""
    if value <= 0:
        return False
    try:
        return bool(_libc().mallopt(param, value))
    except (OSError, AttributeError):
        return False


def _libc():
    """The C library (glibc's malloc controls); OSError where there is none to load."""
    import ctypes
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
