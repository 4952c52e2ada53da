"""The CLI's malloc settings: freed network-sized blocks are reused instead of faulted in again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, resource, sys
import numpy as np
from mitk.runner.allocator import keep_freed_memory
applied = keep_freed_memory(launcher=json.loads(sys.argv[1]) if len(sys.argv) > 1 else None)
faults = []
for _ in range(6):  # a forward pass's worth of activations, allocated, written and freed, again and again
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [np.ones(10 * 1024 * 1024 // 8) for _ in range(6)]
    del blocks
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, max(faults[2:]))
"""


def probe(launcher: dict[str, str] | None = None, **env: str) -> tuple[bool, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    arguments = [json.dumps(launcher)] if launcher is not None else []
    out = subprocess.run([sys.executable, "-c", PROBE, *arguments], capture_output=True, text=True, check=True,
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


@glibc
def test_a_launchers_own_malloc_setting_is_overridden_and_the_users_kept():
    """Dask's nanny starts every worker with MALLOC_TRIM_THRESHOLD_=65536: not the user's choice, so the
    settings apply (and freed blocks are reused); a different value is the user's, and is kept."""
    dask_default = {"MALLOC_TRIM_THRESHOLD_": "65536"}
    applied, faults = probe(dask_default, MALLOC_TRIM_THRESHOLD_="65536")
    assert applied and faults < 100
    applied, _ = probe(dask_default, MALLOC_TRIM_THRESHOLD_="131072")
    assert not applied
    applied, _ = probe(dask_default, MALLOC_TRIM_THRESHOLD_="65536", MALLOC_ARENA_MAX="2")
    assert not applied
    applied, _ = probe(dask_default, MALLOC_TRIM_THRESHOLD_="65536", MITK_MALLOC_TUNING="0")
    assert not applied
