"""Shared benchmark plumbing: each contender runs in its own subprocess so peak RSS is its own."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
SHARED = Path(os.environ.get("MITK_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def run_child(code: str, repeats: int = 3, env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``code`` in a fresh Python ``repeats`` times. The code must print ``SECONDS=<float>`` for the timed
    part; returns the best time, the median, and the peak RSS (MiB) of the worst run."""
    times: list[float] = []
    peak = 0.0
    for _ in range(repeats):
        wrapper = (
            "import resource, sys\n" + code +
            "\nprint('PEAK_KB=%d' % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        )
        completed = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True,
                                   env={**os.environ, **(env or {})}, check=False)
        if completed.returncode != 0:
            raise RuntimeError(completed.stderr[-2000:])
        values = dict(line.split("=", 1) for line in completed.stdout.splitlines() if "=" in line)
        times.append(float(values["SECONDS"]))
        peak = max(peak, int(values["PEAK_KB"]) / 1024)
    times.sort()
    return {"best_s": round(times[0], 4), "median_s": round(times[len(times) // 2], 4), "peak_rss_mib": round(peak, 1)}


def wall(command: list[str], repeats: int = 5, env: dict[str, str] | None = None) -> dict[str, float]:
    """Wall time of a whole command (start-up included)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True, env={**os.environ, **(env or {})})
        times.append(time.perf_counter() - started)
    times.sort()
    return {"best_s": round(times[0], 4), "median_s": round(times[len(times) // 2], 4)}


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
