"""How the app's server shares the CPU between its sessions.

Streamlit runs each session's script in a thread of its own, and torch gives every thread that
computes an OpenMP team as wide as the machine. With two or more sessions busy (or a browser, or a
training job) the cores are oversubscribed, and each small operation then waits at OpenMP barriers
for team-mates the kernel has descheduled: a page's torch work then runs many times slower on all
the cores than on one (bench/README.md, `load_sessions.py`). So a page's torch work runs on one
thread, and sessions run side by side instead.

`AECORE_SESSION_THREADS` sets another number (e.g. on a big machine serving one user).

Streamlit also runs a full garbage collection (`gc.collect(2)`) after every script run, holding the
GIL: every other session waits meanwhile. With torch, plotly, numba and UMAP imported, that scans
hundreds of thousands of long-lived objects every time (bench/README.md). `freeze_long_lived()`
moves what exists at that point (modules, compiled code) out of the collector's sight, so the
collection only looks at what sessions made since.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from typing import Callable

import torch

from aecore.lab.footprint import keep_out, page_out
from aecore.lab.malloc import (fix_mmap_threshold, limit_malloc_arenas,  # noqa: F401  (the app's names)
                               return_free_memory)

_log = logging.getLogger(__name__)

MACHINE_THREADS = torch.get_num_threads()       # torch's default in this process, before any change


def session_threads() -> int:
    try:
        return max(1, int(os.environ.get("AECORE_SESSION_THREADS", "1")))
    except ValueError:
        return 1


def use_session_threads() -> None:
    """Call in a page run's thread, before its torch work: that thread computes on
    `session_threads()` threads (torch's setting is per thread once set; new threads start from the
    last value set anywhere)."""
    n = session_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def use_machine_threads() -> None:
    """Call in a long background job's thread (training): it keeps torch's default width."""
    if torch.get_num_threads() != MACHINE_THREADS:
        torch.set_num_threads(MACHINE_THREADS)


def keep_triton_out() -> bool:
    """Refuse triton in the server where CUDA cannot run its kernels (True then): every optimizer step
    (a Train-page job) imports torch._dynamo, which imports triton when it is installed, about 75 MB of
    the server's memory for nothing on a machine without a GPU (aecore.lab.footprint)."""
    if torch.cuda.is_available():
        return False
    keep_out({"triton"})
    return True


GPU_LIBRARY_NAMES = ("libtorch_cuda", "libc10_cuda", "libcud", "libcublas", "libcufft", "libcurand", "libcusolver",
                     "libcusparse", "libcupti", "libnccl", "libnvrtc", "libnvJitLink", "libnvToolsExt", "libnvshmem")


def is_gpu_library(path: str) -> bool:
    """A file of torch's CUDA support: pip's nvidia-* packages, CUDA's bindings, torch's own CUDA libraries."""
    name = path.rpartition("/")[2]
    return "/nvidia/" in path or "/cuda/bindings/" in path or name.startswith(GPU_LIBRARY_NAMES)


def page_out_gpu_libraries() -> int:
    """Where CUDA is not available, hand back the pages torch's CUDA libraries were read into when torch
    was imported; returns how many mappings went. torch's CUDA wheel (pip's default on Linux) loads them
    even without a GPU, and those pages then counted about 145 MB of the server's memory (measured: RSS
    of the files 160 -> 15 MB) for code that cannot run here. What stays is their written data."""
    if torch.cuda.is_available():
        return 0
    return page_out(is_gpu_library)


def freeze_long_lived() -> None:
    """Call once the server's long-lived objects exist (after imports, after a warm-up): later full
    collections skip them (gc.freeze). Objects alive now are never collected, so call it only at
    such points, not from a page run."""
    gc.collect()
    gc.freeze()


_trimmer: threading.Thread | None = None
_trimmer_lock = threading.Lock()


def start_memory_trimmer(every: float = 30.0, *, reap: Callable[[], int] | None = None,
                         reap_every: float = 10.0) -> bool:
    """A full garbage collection, then `return_free_memory`, every `every` seconds in a daemon thread, once
    per process; True when this call started it. The app turns off Streamlit's collection after every
    script run (.streamlit/config.toml, runner.postScriptGC): with 30 sessions that held the GIL for two
    thirds of the time; once every 30 s costs about as much as one of those. malloc_trim runs outside the
    GIL (ctypes).

    `reap`, if given, runs every `reap_every` seconds and says how many things it let go (the app: closed
    tabs' sessions); when it let go of any, the collection and trim follow at once rather than up to
    `every` seconds later."""
    global _trimmer
    with _trimmer_lock:                 # two sessions' first runs start together: one trimmer only
        if _trimmer is not None:
            return False
        _trimmer = threading.Thread(target=_trim_forever, args=(every, reap, reap_every),
                                    name="aecore-malloc-trim", daemon=True)
    _trimmer.start()
    return True


def _trim_forever(every: float, reap: Callable[[], int] | None, reap_every: float) -> None:
    tick = min(every, reap_every) if reap is not None else every
    last = time.monotonic()
    while True:
        time.sleep(tick)
        if trim_due(reap, every, time.monotonic() - last):
            gc.collect()
            return_free_memory()
            last = time.monotonic()


def trim_due(reap: Callable[[], int] | None, every: float, since_last: float) -> bool:
    """Run `reap` (if any); whether it is time to collect and trim: something was reaped, or `every`
    seconds have passed. A failing `reap` is logged and counts as nothing reaped: the trimmer goes on."""
    reaped = 0
    if reap is not None:
        try:
            reaped = reap()
        except Exception:  # the trimmer thread must outlive whatever its hook meets
            _log.exception("the trimmer's reap hook failed")
    return reaped > 0 or since_last >= every
