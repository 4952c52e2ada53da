"""Let glibc's malloc keep freed memory for reuse during network work in a CLI process.

A CPU forward pass allocates and frees tens of megabytes per layer. glibc serves such blocks with fresh
``mmap`` pages and gives them back on ``free``, so every layer pays page faults again (25–30 thousand per
96³ U-Net window pair, measured); in a virtual machine a fault is expensive. Raising the mmap threshold to
its 32 MiB maximum and the trim threshold keeps those blocks in the heap for the next layer: 6–12 % off
``mitk segment`` on a 256×256×160 MR volume, peak RSS unchanged (docs/benchmarks.md). This is the glibc
version of the jemalloc/tcmalloc advice in PyTorch's CPU performance guides.

Only the command-line entry points (and the workers of mitk's executors) call this, never library code;
nothing happens off glibc, with ``MITK_MALLOC_TUNING=0``, or when the user already tunes malloc through
``MALLOC_*`` or ``GLIBC_TUNABLES``. A launcher's own setting is not the user's: Dask's nanny gives every worker
``MALLOC_TRIM_THRESHOLD_=65536`` (its ``distributed.nanny.pre-spawn-environ``), which made each case of a
U-Net batch 1.5–2× slower on its workers than in a plain process (measured); the Dask executor passes that
value as ``launcher`` so that it is overridden (``MITK_MALLOC_TUNING=0`` keeps Dask's).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping

from mitk.env import env_flag

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 1024 * 1024 * 1024

_done = False


def user_tunes_malloc(launcher: Mapping[str, str] | None = None) -> bool:
    """Whether the environment tunes malloc, other than with the ``launcher``'s own values (name → value)."""
    launcher = launcher or {}
    return "GLIBC_TUNABLES" in os.environ or any(
        name.startswith("MALLOC_") and launcher.get(name) != value for name, value in os.environ.items())


def keep_freed_memory(launcher: Mapping[str, str] | None = None) -> bool:
    """Apply the settings once per process; True when they are in effect. ``launcher``: malloc variables a
    process launcher set for every process it starts (not a choice of the user's), overridden here."""
    global _done
    if _done:
        return True
    if not env_flag("MITK_MALLOC_TUNING", default=True):
        return False
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError, AttributeError):  # not Linux, or no such name
        glibc = ""
    if not glibc.startswith("glibc") or user_tunes_malloc(launcher):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        _done = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False
    return _done
