"""The CLI's malloc settings: freed network-sized blocks are reused instead of faulted in again."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import resource, sys
import numpy as np
from mitk.runner.allocator import keep_freed_memory
applied = keep_freed_memory()
faults = []
for _ in range(6):  # a forward pass's worth of activations, allocated, written and freed, again and again
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [np.ones(10 * 1024 * 1024 // 8) for _ in range(6)]
    del blocks
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, max(faults[2:]))
"""


def probe(**env: str) -> tuple[bool, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env={**clean, **env}).stdout.split()
    return out[0] == "True", int(out[1])


glibc = pytest.mark.skipif(not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
                           if hasattr(os, "confstr") else True, reason="glibc only")


@glibc
def test_freed_blocks_are_reused_without_new_page_faults():
    applied, tuned = probe()
    assert applied
    assert tuned < 100  # 60 MB of blocks reused from the heap, not faulted in again
    applied, default = probe(MITK_MALLOC_TUNING="0")
    assert not applied
    assert default > tuned  # glibc's default trims the freed heap top and faults it in again next time


@glibc
def test_user_malloc_settings_are_respected():
    applied, _ = probe(MALLOC_ARENA_MAX="2")
    assert not applied
    applied, _ = probe(GLIBC_TUNABLES="glibc.malloc.trim_threshold=0")
    assert not applied
