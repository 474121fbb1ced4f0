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
    try:
        arenas = int(os.environ.get("AECORE_MALLOC_ARENAS", arenas))
    except ValueError:
        pass
    if arenas <= 0:
        return False
    try:
        return bool(_libc().mallopt(-8, arenas))        # -8: M_ARENA_MAX (malloc.h)
    except (OSError, AttributeError):
        return False


def return_free_memory() -> bool:
    """Give memory that malloc holds free back to the system (glibc's malloc_trim); True when some was.
    Called when sessions end, so a closed class's pages do not stay in the server's RSS."""
    try:
        return bool(_libc().malloc_trim(0))
    except (OSError, AttributeError):
        return False


def _libc():
    """The C library (glibc's malloc controls); OSError where there is none to load."""
    import ctypes
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
