"""Issue 20, item 5: after an interrupt on the Dask executor, the cases its workers finished are recorded as done.

The cases run on a real local Dask cluster through ``mitk segment --executor dask``. SIGINT is sent to the command
at the moment it starts collecting the first record, once every case has been written by its worker and has sent
its record: the command must keep all of them (manifest, ``--json`` and summary) rather than list written cases as
not done, and exit 130.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import invoke

N_CASES = 2
"""One case per worker thread: all are in flight at once (the executor sends the next when one comes back)."""


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """A local Dask cluster: 2 worker processes × 1 thread (they find mitk through this process's PYTHONPATH)."""
    import logging

    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                       silence_logs=logging.ERROR)
    yield cluster.scheduler_address
    cluster.close()


def test_an_interrupt_keeps_the_records_of_finished_cases(scheduler: str, brain_mr: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from mitk.executors.dask_executor import DaskExecutor

    folder, out, manifest = tmp_path / "in", tmp_path / "out", tmp_path / "m.jsonl"
    folder.mkdir()
    for index in range(N_CASES):
        (folder / f"case{index}.nii.gz").write_bytes(brain_mr.read_bytes())
    original = DaskExecutor._record
    interrupted: list[bool] = []

    def record_after_a_signal(future: Any, index: int, case: Any, arrived: dict[int, Any],
                              condition: threading.Condition) -> Any:
        if not interrupted:  # wait (bounded) until every case is written and its record has arrived, then stop
            interrupted.append(True)
            with condition:
                assert condition.wait_for(lambda: len(arrived) == N_CASES, timeout=120)
            assert sorted(path.name for path in out.iterdir()) == [f"case{i}_seg.nii.gz" for i in range(N_CASES)]
            os.kill(os.getpid(), signal.SIGINT)  # raised here, in the main thread, by mitk's signal handler
        return original(future, index, case, arrived, condition)

    monkeypatch.setattr(DaskExecutor, "_record", staticmethod(record_after_a_signal))
    code, stdout, stderr = invoke(["segment", str(folder), "-p", "threshold", "-d", str(out), "--manifest",
                                   str(manifest), "--json", "--executor", "dask", "--scheduler", scheduler])
    assert interrupted and code == 130, stderr
    document = json.loads(stdout)
    assert document["interrupted"] == "SIGINT" and document["not_done"] == []
    assert document["summary"] == {"total": N_CASES, "ok": N_CASES, "skipped": 0, "failed": 0}
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert sorted(Path(r["input"]).name for r in records) == [f"case{i}.nii.gz" for i in range(N_CASES)]
    assert all(r["status"] == "ok" and Path(r["output"]).is_file() for r in records)
    assert f"mitk: interrupted (SIGINT): 0 of {N_CASES} inputs not done" in stderr and "Traceback" not in stderr
