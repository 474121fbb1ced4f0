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
from aecore.lab.malloc import fix_mmap_threshold, training_allocations
libc = ctypes.CDLL(ctypes.util.find_library("c"))
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def mapped_512k():
    before = libc.mallinfo2().hblks
    block = libc.malloc(512 << 10)
    print(libc.mallinfo2().hblks - before)
    libc.free(block)
if sys.argv[1] != "glibc":
    assert fix_mmap_threshold()
libc.free(libc.malloc(1 << 20))
if sys.argv[1] == "training":         # during a training job, then after it
    with training_allocations():
        mapped_512k()
mapped_512k()
"""


def _mapped_blocks(mode: str, **env: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    return [int(line) for line in out.stdout.split()]


def _needs_mallinfo2() -> None:
    if not hasattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallinfo2"):
        pytest.skip("glibc older than 2.33 (no mallinfo2)")


@glibc
def test_a_fixed_threshold_keeps_large_blocks_out_of_the_heap():
    _needs_mallinfo2()
    assert _mapped_blocks("glibc") == [0]        # glibc's own rule: the threshold rose to 1 MB
    assert _mapped_blocks("fixed") == [1]        # fixed at 256 KB: the 512 KB block has its own mapping


@glibc
def test_a_training_job_takes_its_blocks_from_the_heap_and_the_fixed_threshold_comes_back():
    _needs_mallinfo2()
    assert _mapped_blocks("training") == [0, 1]


def test_overlapping_training_jobs_relax_the_threshold_once_and_restore_it_after_the_last(monkeypatch):
    calls = []
    monkeypatch.setattr(malloc, "_mallopt", lambda param, value: calls.append((param, value)) or True)
    monkeypatch.setattr(malloc, "return_free_memory", lambda: calls.append("trim") or True)
    monkeypatch.setattr(malloc, "_fixed_threshold", 300_000)
    with malloc.training_allocations():
        with malloc.training_allocations():
            assert calls == [(malloc.M_TRIM_THRESHOLD, malloc.TRAINING_TRIM_THRESHOLD),
                             (malloc.M_MMAP_THRESHOLD, malloc.TRAINING_MMAP_THRESHOLD)]
        assert len(calls) == 2                   # the other job still trains
    assert calls[2:] == [(malloc.M_MMAP_THRESHOLD, 300_000),
                         (malloc.M_TRIM_THRESHOLD, malloc.DEFAULT_TRIM_THRESHOLD), "trim"]
    calls.clear()
    monkeypatch.setattr(malloc, "_fixed_threshold", None)   # glibc's own rule (CLI, benches): left alone
    with malloc.training_allocations():
        pass
    assert calls == []


@glibc
def test_the_operator_can_change_or_leave_the_threshold(monkeypatch):
    monkeypatch.setenv("AECORE_MALLOC_MMAP_THRESHOLD", "0")
    assert malloc.fix_mmap_threshold() is False
    monkeypatch.setenv("AECORE_MALLOC_MMAP_THRESHOLD", "not a size")   # the default, not a crash
    assert malloc.fix_mmap_threshold() is True
    for absurd in ("-5", str(1 << 31), "9" * 30):                     # left to glibc, never a crash
        monkeypatch.setenv("AECORE_MALLOC_MMAP_THRESHOLD", absurd)
        assert malloc.fix_mmap_threshold() is False
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
