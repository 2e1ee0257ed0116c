"""Keep LMDB's write buffers in the process instead of returning them to the kernel.

LMDB copies each large value into a buffer it mallocs for the transaction and frees at
commit. With glibc's defaults, a multi-MiB buffer is mmap'd and unmapped every time,
and trimmed heap memory goes back to the kernel, so every commit faults its pages in
afresh. That is cheap on bare metal but costly in virtual machines where each fresh
page is a hypervisor fault: a cold 1 GiB download went from about 250,000 page faults
to 75,000, and from 2.9 s to 1.8 s, on the benchmark machine (docs/benchmarks.md).
Serving these sizes from the heap, and keeping up to 64 MiB free at the top of each
arena, lets commits reuse warm memory.
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Final

_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
# glibc's ceiling for the mmap threshold on 64-bit systems; above every run of pieces
# the downloader writes in one transaction (16 MiB).
_MMAP_THRESHOLD: Final = 32 * 1024 * 1024
_TRIM_THRESHOLD: Final = 64 * 1024 * 1024


@functools.cache
def keep_write_buffers() -> bool:
    """Tune glibc's allocator once per process; False where it is not glibc."""
    if not _is_glibc():
        return False
    # The process's own symbols include its C library's: no library search needed
    # (ctypes.util's costs milliseconds of every start).
    libc = ctypes.CDLL(None)
    mmap_set = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    trim_set = libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    return bool(mmap_set and trim_set)


def _is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):
        return False  # not a name this C library knows
