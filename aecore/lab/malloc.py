"""glibc's malloc controls, in a module that imports nothing heavy: the app server (`aecore.lab.serving`)
and the projection process, which must never import torch (`aecore.lab.projection_worker`), both use it.
Each is a no-op off glibc."""

from __future__ import annotations

import contextlib
import os
import threading

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8       # mallopt's parameters (malloc.h)
MMAP_THRESHOLD = 256 * 1024                                        # the app's fixed threshold
TRAINING_MMAP_THRESHOLD = 32 * 1024 * 1024                         # glibc's own ceiling for its rising one
TRAINING_TRIM_THRESHOLD = 64 * 1024 * 1024
DEFAULT_TRIM_THRESHOLD = 128 * 1024                                # glibc's default
_fixed_threshold: int | None = None                                # what fix_mmap_threshold set, if it did
_training_jobs = 0                                                 # training_allocations entered, not left
_training_lock = threading.Lock()


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas for threads created from now on; True when set.

    Streamlit runs every script run in a new thread, and glibc gives threads their own arenas (up to 8
    per core): memory freed in one arena is not reused by the next run's thread, so a server that many
    sessions have used keeps growing (bench/README.md). `AECORE_MALLOC_ARENAS` sets another cap, 0 none.
    A no-op off glibc."""
    return _mallopt(M_ARENA_MAX, _setting("AECORE_MALLOC_ARENAS", arenas))


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Blocks of `threshold` bytes or more get a mapping of their own, handed back to the system when freed
    (glibc's M_MMAP_THRESHOLD, fixed); True when set.

    Why: glibc starts at 128 KB but raises the threshold to the size of each mapped block that is freed,
    up to 32 MB, so a server soon puts its sessions' image batches and figure arrays in the heap arenas,
    where they fragment them and malloc_trim cannot give the holes back: 300 tabs opened and closed grew the
    server by 13-18 %. Fixed at 256 KB, it grew 4 % and started 190 MB lower. A training job in the server
    relaxes it while it runs (`training_allocations`): mapped and zero-filled at every step, its activations
    made the teacher's conv-ae denoiser take 23.0 s instead of 11.7 (12.6 s relaxed; bench/README.md).
    `AECORE_MALLOC_MMAP_THRESHOLD` sets another size in bytes, 0 leaves glibc's own rule. A no-op off glibc."""
    global _fixed_threshold
    value = _setting("AECORE_MALLOC_MMAP_THRESHOLD", threshold)
    if not _mallopt(M_MMAP_THRESHOLD, value):
        return False
    _fixed_threshold = value
    return True


@contextlib.contextmanager
def training_allocations():
    """While a training job runs in this process, its per-step activations come from the heap again
    (a 32 MB threshold, and the heap's free top kept), instead of a fresh zero-filled mapping for every
    block at every step; when the last job ends, the fixed threshold comes back and the heap's free
    memory is handed back. Nothing happens where fix_mmap_threshold did not fix one (the CLI, benches)."""
    global _training_jobs
    with _training_lock:
        _training_jobs += 1
        if _training_jobs == 1 and _fixed_threshold is not None:
            _mallopt(M_TRIM_THRESHOLD, TRAINING_TRIM_THRESHOLD)
            _mallopt(M_MMAP_THRESHOLD, TRAINING_MMAP_THRESHOLD)
    try:
        yield
    finally:
        with _training_lock:
            _training_jobs -= 1
            if _training_jobs == 0 and _fixed_threshold is not None:
                _mallopt(M_MMAP_THRESHOLD, _fixed_threshold)
                _mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
                return_free_memory()


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
    """glibc's mallopt(param, value); False when `value` <= 0 (leave glibc's rule), is more than a C int
    holds (an operator's typo must not stop the app), or off glibc."""
    if not 0 < value < 2**31:
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
