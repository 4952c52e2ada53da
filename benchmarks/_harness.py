"""Shared benchmark plumbing: each contender runs in its own subprocess so peak RSS is its own."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
SHARED = Path(os.environ.get("MITK_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _child_once(code: str, env: dict[str, str] | None) -> tuple[float, float]:
    """One fresh Python running ``code`` (which prints ``SECONDS=<float>``): (seconds, peak RSS MiB)."""
    wrapper = (
        "import resource, sys\n" + code +
        "\nprint('PEAK_KB=%d' % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    completed = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True,
                               env={**os.environ, **(env or {})}, check=False)
    if completed.returncode != 0:
        raise RuntimeError(completed.stderr[-2000:])
    values = dict(line.split("=", 1) for line in completed.stdout.splitlines() if "=" in line)
    return float(values["SECONDS"]), int(values["PEAK_KB"]) / 1024


def _summary(times: list[float], peaks: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {"best_s": round(times[0], 4), "median_s": round(times[len(times) // 2], 4),
            "peak_rss_mib": round(max(peaks), 1)}


def run_child(code: str, repeats: int = 3, env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``code`` in a fresh Python ``repeats`` times; the best time, the median, the worst peak RSS (MiB)."""
    runs = [_child_once(code, env) for _ in range(repeats)]
    return _summary([t for t, _ in runs], [p for _, p in runs])


def run_interleaved(contenders: dict[str, tuple[str, dict[str, str] | None]],
                    repeats: int = 3) -> dict[str, dict[str, float]]:
    """Like ``run_child`` for several contenders, taking turns (A B C A B C …) so that load from other jobs on a
    shared machine falls on all of them alike."""
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, (code, env) in contenders.items():
            runs[name].append(_child_once(code, env))
    return {name: _summary([t for t, _ in r], [p for _, p in r]) for name, r in runs.items()}


def wall(command: list[str], repeats: int = 5, env: dict[str, str] | None = None) -> dict[str, float]:
    """Wall time of a whole command (start-up included)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True, env={**os.environ, **(env or {})})
        times.append(time.perf_counter() - started)
    times.sort()
    return {"best_s": round(times[0], 4), "median_s": round(times[len(times) // 2], 4)}


_TIMED_PARENT = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
subprocess.run(json.loads(sys.argv[1]), check=True, capture_output=True)
print(json.dumps({"seconds": time.perf_counter() - started,
                  "peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def whole_process(command: list[str]) -> dict[str, float]:
    """One run of ``command`` as its own process, imports included: ``{"seconds", "peak_mib"}`` (the peak
    resident set of the command and what it started, measured by a parent that does nothing else)."""
    done = subprocess.run([sys.executable, "-c", _TIMED_PARENT, json.dumps(command)], capture_output=True,
                          text=True, check=True)
    return dict(json.loads(done.stdout))


def machine() -> dict[str, Any]:
    import torch

    return {"python": platform.python_version(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "platform": platform.platform()}


def save(name: str, document: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **document}, indent=2) + "\n")
    return path


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def compare(default: Callable[[], object], mine: Callable[[], object], repeats: int,
            digits: int = 1) -> dict[str, float]:
    """Best and median milliseconds of two calls in one process, interleaved so that a noisy neighbour hits
    both alike (both are called once first: oneDNN builds its primitives on the first call)."""
    default(), mine()
    times: dict[str, list[float]] = {"default": [], "mitk": []}
    for _ in range(repeats):
        for key, call in (("default", default), ("mitk", mine)):
            start = time.perf_counter()
            call()
            times[key].append((time.perf_counter() - start) * 1000)
    row = {f"{key}_{stat.__name__}_ms": round(stat(values), digits) for key, values in times.items()
           for stat in (min, statistics.median)}
    row["ratio"] = round(row["mitk_min_ms"] / row["default_min_ms"], 2)
    return row
