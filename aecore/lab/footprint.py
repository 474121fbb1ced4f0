"""Packages a process of the app never needs, refused at import so that their memory is never spent.

A process's memory holds every library it has imported for as long as it runs. Two are imported by
others on the app's behalf, for nothing the app uses (measured, RSS of one process):
- the projection process: scikit-learn imports pandas when it is installed (streamlit installs it),
  and pandas imports pyarrow: about 70 MB, for dataframe support no map uses;
- the server: every optimizer step imports torch._dynamo, which imports triton when it is installed
  (torch's CUDA wheels install it): about 75 MB, for GPU kernels a machine without CUDA cannot run.
Refused, they look to the importer as if they were not installed, which both handle (numpy paths;
`has_triton_package()` False). Standard library only: the projection process calls this first.

Libraries that are imported all the same can still give back the pages of theirs that will never be read
again: `page_out` (the server: torch's CUDA libraries on a machine without a GPU).
"""

from __future__ import annotations

import ctypes
import importlib.abc
import sys
from typing import Any, Callable, Iterable

MADV_PAGEOUT = 21                       # linux/mman.h (Linux 5.4+): reclaim these pages now


class KeptOut(importlib.abc.MetaPathFinder):
    """Refuses to import the packages it names (and their submodules), as if they were not installed."""

    def __init__(self, names: Iterable[str]):
        self.names = frozenset(names)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (kept out of this aecore process)",
                                      name=fullname)
        return None


def keep_out(names: Iterable[str]) -> list[str]:
    """Refuse these packages from now on in this process; returns those that were imported already
    (refusing them now saves nothing: they stay)."""
    names = frozenset(names)
    for finder in sys.meta_path:
        if isinstance(finder, KeptOut):
            names -= finder.names
    if names:
        sys.meta_path.insert(0, KeptOut(names))
    return sorted(name for name in names if name in sys.modules)


def kept_out() -> frozenset[str]:
    """What this process refuses."""
    return frozenset().union(*(f.names for f in sys.meta_path if isinstance(f, KeptOut)))


def page_out(wanted: Callable[[str], bool]) -> int:
    """Ask the kernel to reclaim now the resident pages of the files mapped into this process whose path
    `wanted` accepts; returns how many mappings it took (0 off Linux, or on a kernel without MADV_PAGEOUT).

    Why: loading a shared library reads much of it (relocations, symbol tables), and those clean pages then
    count in the process's resident memory until the kernel needs the room. Reclaimed, they cost nothing; a
    page that is read again comes back from the file. Pages the process has written (a library's relocated
    data) go to swap if there is any, else they stay: nothing is lost either way. Pages another process
    maps too (a second server on the machine) stay: the kernel only reclaims a process's own."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        libc = ctypes.CDLL(None)
        with open("/proc/self/maps") as maps:
            lines = maps.readlines()
    except OSError:
        return 0
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    taken = 0
    for line in lines:
        fields = line.split(maxsplit=5)     # address perms offset dev inode path
        if len(fields) < 6 or not wanted(fields[5].rstrip("\n")):
            continue
        start, end = (int(a, 16) for a in fields[0].split("-"))
        taken += madvise(start, end - start, MADV_PAGEOUT) == 0       # EINVAL: no MADV_PAGEOUT, or locked pages
    return taken
