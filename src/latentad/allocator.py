"""The C allocator's handling of large blocks while a model trains (glibc only; elsewhere a no-op).

Every training step allocates the same large activations and gradients again, and frees them. glibc
serves a block above its mmap threshold (adaptive, at most 32 MiB) with a fresh `mmap` and unmaps it
on `free`, and returns freed memory at the top of its heap to the system beyond its trim threshold:
so each step the kernel maps and zeroes the same memory once more, one page fault per 4 KiB page, as
system time on every core. Raising both thresholds keeps freed blocks in the heap for the next step.
No value computed changes; the process holds its peak memory while it trains, and `release` hands
the free part back when training ends.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
_KEEP = 1 << 30  # blocks up to this size come from the heap; this much free heap is kept


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library when it is glibc (the one with mallopt / malloc_trim), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only
        libc.mallopt, libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_blocks() -> bool:
    """Let freed large blocks be reused instead of unmapped (process-wide); True when it took effect."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _KEEP)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _KEEP))


def release() -> None:
    """Return the heap's free memory to the system (after training, so its peak is not kept)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
