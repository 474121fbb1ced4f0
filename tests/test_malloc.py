"""glibc's malloc controls the app server sets (aecore.lab.malloc), checked on what malloc then does."""

from __future__ import annotations

import ctypes.util
import os
import platform
import subprocess
import sys

import pytest

from aecore.lab import malloc

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc controls only")

# In a fresh process: map a 1 MB block and free it (glibc then raises its threshold to 1 MB), then
# allocate 512 KB and print whether it became a mapping of its own (mallinfo2's hblks, before and after).
PROBE = """
import ctypes, ctypes.util, sys
from aecore.lab.malloc import fix_mmap_threshold
libc = ctypes.CDLL(ctypes.util.find_library("c"))
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
libc.free(libc.malloc(1 << 20))
before = libc.mallinfo2().hblks
block = libc.malloc(512 << 10)
print(libc.mallinfo2().hblks - before)
libc.free(block)
"""


def _mapped_blocks(mode: str, **env: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    return int(out.stdout)


@glibc
def test_a_fixed_threshold_keeps_large_blocks_out_of_the_heap():
    if not hasattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallinfo2"):
        pytest.skip("glibc older than 2.33 (no mallinfo2)")
    assert _mapped_blocks("glibc") == 0          # glibc's own rule: the threshold rose to 1 MB
    assert _mapped_blocks("fixed") == 1          # fixed at 256 KB: the 512 KB block has its own mapping


@glibc
def test_the_operator_can_change_or_leave_the_threshold(monkeypatch):
    monkeypatch.setenv("AECORE_MALLOC_MMAP_THRESHOLD", "0")
    assert malloc.fix_mmap_threshold() is False
    monkeypatch.setenv("AECORE_MALLOC_MMAP_THRESHOLD", "not a size")   # the default, not a crash
    assert malloc.fix_mmap_threshold() is True
    monkeypatch.setenv("AECORE_MALLOC_MMAP_THRESHOLD", str(1 << 20))
    assert malloc.fix_mmap_threshold() is True
    monkeypatch.delenv("AECORE_MALLOC_MMAP_THRESHOLD")
    assert malloc.fix_mmap_threshold() is True     # back to the app's 256 KB for this test process
    monkeypatch.setenv("AECORE_MALLOC_ARENAS", "0")
    assert malloc.limit_malloc_arenas() is False


def test_without_glibc_it_is_a_no_op(monkeypatch):
    def no_libc():
        raise OSError("no C library")
    monkeypatch.setattr(malloc, "_libc", no_libc)
    assert malloc.fix_mmap_threshold() is False
    assert malloc.limit_malloc_arenas() is False
    assert malloc.return_free_memory() is False
