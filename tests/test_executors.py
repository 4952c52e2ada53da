"""Executors (issue 13): the executor hook, the in-process default, and the Dask executor with real worker
processes (a ``LocalCluster`` of 2 single-thread workers shared by the module)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from helpers import invoke

from mitk import hookimpl

ROOT = Path(__file__).resolve().parents[1]
N_INPUTS = 8
CRASH_SLICES = 7
"""The test plugin ends its worker process on a volume with this many slices."""
SLOW_SLICES = 9
"""… and takes its time on a volume with this many."""

CRASH_PLUGIN = f'''
"""A segmenter that ends its process (os._exit) on a volume of {CRASH_SLICES} slices: a worker dying mid-case."""
import os
import time

import torch
from mitk import hookimpl
from mitk_builtin._threshold import ThresholdSegmenter


class Crash(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, image):
        if image.shape[-1] == {CRASH_SLICES}:
            os._exit(17)
        if image.shape[-1] == {SLOW_SLICES}:
            time.sleep(20)
        return self.inner(image)


class CrashingSegmenter(ThresholdSegmenter):
    needs_torch = True  # its network is what the test holds, breaks or counts

    def network(self, config):
        return Crash(super().network(config))


@hookimpl
def mitk_register_plugins(register):
    register("crashing", task="segment", factory=CrashingSegmenter, summary="threshold; dies on {CRASH_SLICES} slices")
'''


def _crop(source: Path, target: Path, first: int, count: int) -> None:
    image = nib.load(source)
    data = np.asanyarray(image.dataobj)[..., first:first + count]
    nib.Nifti1Image(data, image.affine @ _shift(first), image.header).to_filename(target)


def _shift(slices: int) -> np.ndarray:
    shift = np.eye(4)
    shift[2, 3] = slices
    return shift


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, brain_mr: Path) -> Path:
    """Eight real MR volumes: overlapping slabs of the brain scan in tests/data."""
    folder = tmp_path_factory.mktemp("inputs")
    for index in range(N_INPUTS):
        _crop(brain_mr, folder / f"brain_{index}.nii.gz", first=index, count=16)
    return folder


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An installed distribution (a dist-info with an entry point) on ``sys.path`` and ``PYTHONPATH``, so that
    worker processes find the ``crashing`` plugin as they would a pip-installed one."""
    site = tmp_path_factory.mktemp("site")
    (site / "mitk_test_crashing.py").write_text(textwrap.dedent(CRASH_PLUGIN))
    info = site / "mitk_test_crashing-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mitk-test-crashing\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mitk.plugins]\ncrashing = mitk_test_crashing\n")
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), str(ROOT / "plugins"), previous or ""])
    sys.path.insert(0, str(site))
    yield site
    sys.path.remove(str(site))
    if previous is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = previous


@pytest.fixture(scope="module")
def scheduler(plugin_site: Path) -> Iterator[str]:
    """A local Dask cluster: 2 worker processes × 1 thread; a case may kill 2 workers before it is failed."""
    import logging

    dask = pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=logging.ERROR)
    yield cluster.scheduler_address
    cluster.close()


def _run(*arguments: Any) -> tuple[int, dict[str, Any], str]:
    code, out, err = invoke([str(argument) for argument in arguments])
    return code, (json.loads(out) if out.strip() else {}), err


def _manifest(path: Path, folder: Path) -> list[dict[str, Any]]:
    """The manifest's records by input, without what differs between runs (times, worker, output folder)."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        record.pop("seconds")
        record.pop("worker", None)
        record["output"] = Path(record["output"]).name if record["output"] else None
        record["provenance"] = record["provenance"]["input_digest"]  # threads and seed are the worker's own
    assert all(Path(r["input"]).parent == folder for r in records)
    return sorted(records, key=lambda r: r["input"])


def _outputs(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_dask_workers_write_what_a_local_run_writes(tmp_path: Path, inputs: Path, scheduler: str) -> None:
    """2 single-thread worker processes: byte-identical outputs, both workers in the records, the same
    manifest, JSON cases (in input order) and exit code as the default run and ``--executor local``."""
    runs = {"default": (), "local": ("--executor", "local"), "dask": ("--executor", "dask", "--scheduler", scheduler)}
    results = {}
    for name, options in runs.items():
        code, document, err = _run("segment", inputs, "-p", "threshold", "-d", tmp_path / name, "--json",
                                   "--manifest", tmp_path / f"{name}.jsonl", *options)
        assert code == 0, err
        results[name] = document
    local = _outputs(tmp_path / "default")
    assert len(local) == N_INPUTS
    assert _outputs(tmp_path / "local") == local and _outputs(tmp_path / "dask") == local
    manifests = {name: _manifest(tmp_path / f"{name}.jsonl", inputs) for name in runs}
    assert manifests["local"] == manifests["default"] and manifests["dask"] == manifests["default"]
    workers = {case["worker"] for case in results["dask"]["cases"]}
    assert len(workers) == 2, workers
    for name, document in results.items():
        assert [case["input"] for case in document["cases"]] == sorted(str(p) for p in inputs.iterdir())
        assert document["summary"] == {"total": N_INPUTS, "ok": N_INPUTS, "skipped": 0, "failed": 0}, name
        assert document["exit_code"] == 0 and document["plugin"] == "threshold"
    assert "worker" not in results["local"]["cases"][0]
    assert results["dask"]["executor"] == "dask"


def _allocator_tuned() -> bool:
    from mitk.runner import allocator

    return allocator._done


def test_dask_workers_reuse_freed_memory_despite_the_nannys_trim_setting(tmp_path: Path, inputs: Path,
                                                                        scheduler: str) -> None:
    """The nanny sets MALLOC_TRIM_THRESHOLD_=65536 in every worker (each case of a U-Net batch ran 1.5-2x
    slower with it); once a batch's recipe reaches the workers, mitk's allocator settings are in effect."""
    from distributed import Client

    code, _, err = _run("segment", inputs, "-p", "threshold", "-d", tmp_path / "out", "--executor", "dask",
                        "--scheduler", scheduler)
    assert code == 0, err
    with Client(scheduler, timeout=30) as client:
        environments = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
        tuned = client.run(_allocator_tuned)
    if os.environ.get("MITK_MALLOC_TUNING") == "0" or not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith(
            "glibc"):
        pytest.skip("malloc tuning is off here")
    assert set(environments.values()) == {"65536"}  # the nanny's setting, as Dask starts workers
    assert all(tuned.values()), tuned


def _housekeeping(dask_worker: Any) -> dict[str, Any]:
    callbacks = dask_worker.periodic_callbacks
    return {"profile": "profile" in callbacks, **{name: callbacks[name].callback_time for name in ("tick", "monitor")}}


def test_the_local_cluster_runs_its_housekeeping_less_often() -> None:
    """--workers N: the cluster mitk starts has no statistical profiler and slower housekeeping loops on its
    workers (settings reach the worker processes through the nanny), and its scheduler's HTTP routes take a free
    loopback port: no warning when Dask's default 8787 is taken, nothing served beyond this machine."""
    pytest.importorskip("distributed")
    from mitk.executors import ExecutorOptions
    from mitk.executors.dask_executor import DaskExecutor

    taken = socket.socket()
    with contextlib.suppress(OSError):  # already taken (another cluster's default HTTP port) is as good
        taken.bind(("127.0.0.1", 8787))
        taken.listen()
    executor = DaskExecutor(ExecutorOptions(workers=1))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            client = executor._connect()
        client.wait_for_workers(1, timeout=60)
        (found,) = client.run(_housekeeping).values()
        http = executor._cluster.scheduler.http_server
        ports = [sock.getsockname() for sock in http._sockets.values()]
    finally:
        executor.close()
        taken.close()
    assert found == {"profile": False, "tick": 1000, "monitor": 2000}
    assert not [str(w.message) for w in caught if "already in use" in str(w.message)]  # nothing on the terminal
    assert ports and all(host == "127.0.0.1" and port != 8787 for host, port, *_ in ports), ports


def test_a_worker_dying_mid_case_fails_that_case_only(tmp_path: Path, inputs: Path, scheduler: str,
                                                      brain_mr: Path) -> None:
    """``os._exit`` in plugin code kills a worker; Dask retries the case on the other worker, which dies too:
    the case is recorded as failed with a one-line reason, the other cases are written, exit status 3."""
    folder = tmp_path / "in"
    folder.mkdir()
    for path in sorted(inputs.iterdir())[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    _crop(brain_mr, folder / "a_crash.nii.gz", first=0, count=CRASH_SLICES)
    code, document, err = _run("segment", folder, "-p", "crashing", "-d", tmp_path / "out", "--json",
                               "--executor", "dask", "--scheduler", scheduler)
    assert code == 3, err
    records = {Path(case["input"]).name: case for case in document["cases"]}
    crashed = records.pop("a_crash.nii.gz")
    assert crashed["status"] == "failed"
    assert "worker died while processing" in crashed["error"] and "\n" not in crashed["error"]
    assert str(folder / "a_crash.nii.gz") in crashed["error"]
    assert all(case["status"] == "ok" for case in records.values()), [c["error"] for c in records.values()]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        name.replace(".nii.gz", "_seg.nii.gz") for name in records)
    assert "Traceback" not in err


def test_debug_shows_the_workers_traceback_where_the_command_runs(tmp_path: Path, inputs: Path,
                                                                  scheduler: str) -> None:
    """``--debug``: a failed case's traceback comes back from the worker process with its record and is printed
    by the command (invoked in this process: the workers' own output never reaches it); the manifest is a local
    run's."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a_broken.nii.gz").write_bytes(b"not a NIfTI file")
    (folder / "b_good.nii.gz").write_bytes(next(iter(sorted(inputs.iterdir()))).read_bytes())
    code, _, err = invoke(["--debug", "segment", str(folder), "-p", "threshold", "-d", str(tmp_path / "out"),
                           "--manifest", str(tmp_path / "m.jsonl"), "--executor", "dask", "--scheduler", scheduler])
    assert code == 3, err
    assert "Traceback (most recent call last)" in err and "a_broken.nii.gz" in err
    records = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert sorted(r["status"] for r in records) == ["failed", "ok"]
    assert not any("mitk_traceback" in r for r in records)
    code, _, err = invoke(["segment", str(folder), "-p", "threshold", "-d", str(tmp_path / "again"),
                           "--executor", "dask", "--scheduler", scheduler])
    assert code == 3 and "Traceback" not in err  # without --debug: the one-line error only


def test_a_signal_cancels_the_cases_sent_to_dask(tmp_path: Path, inputs: Path, scheduler: str,
                                                 brain_mr: Path) -> None:
    """SIGINT while two slow cases run on the workers: they are cancelled, the command reports the finished
    cases and the ones not done, and exits 130 at once (not after the slow cases end)."""
    import subprocess
    import time

    from distributed import Client

    folder = tmp_path / "in"
    folder.mkdir()
    for path in sorted(inputs.iterdir())[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    for index in range(2):
        _crop(brain_mr, folder / f"z_slow_{index}.nii.gz", first=index, count=SLOW_SLICES)
    command = [sys.executable, "-m", "mitk", "segment", str(folder), "-p", "crashing", "-d", str(tmp_path / "out"),
               "--json", "--executor", "dask", "--scheduler", scheduler]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               # as from a terminal, even when the tests run as a background job (SIGINT ignored)
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert process.stderr is not None
    finished = []
    for line in process.stderr:
        finished += [line] if line.startswith("ok ") else []
        if len(finished) == 3:
            break
    time.sleep(1.0)  # the slow cases are running now
    signalled = time.perf_counter()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert time.perf_counter() - signalled < 15, "the command waited for the slow cases"
    document = json.loads(out)
    assert document["interrupted"] == "SIGINT" and document["summary"]["ok"] == 3
    assert sorted(Path(p).name for p in document["not_done"]) == ["z_slow_0.nii.gz", "z_slow_1.nii.gz"]
    assert "Traceback" not in err
    with Client(scheduler, timeout=30) as client:
        assert not [key for keys in client.processing().values() for key in keys], "cases left on the workers"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"brain_{i}_seg.nii.gz" for i in range(3)]


def test_a_model_that_cannot_load_on_the_workers_fails_as_locally(tmp_path: Path, inputs: Path,
                                                                     scheduler: str) -> None:
    """A model error on the workers (here: a plugin that needs weights, none given) is the command's error, with
    the local run's message and exit status, before any case runs."""
    arguments = ["segment", str(inputs), "-p", "unet", "-d", str(tmp_path / "out")]
    local = invoke(arguments)
    dask = invoke([*arguments, "--executor", "dask", "--scheduler", scheduler])
    assert local[0] == dask[0] == 1
    assert local[2] == dask[2] and "needs trained weights" in dask[2], dask[2]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


class ReverseExecutor:
    """A third-party executor: runs the cases in this process, last first, and marks its records."""

    @staticmethod
    def build(options: Any) -> Any:
        from mitk.executors import LocalExecutor

        class Reverse(LocalExecutor):
            def run(self, cases: list[Any]) -> Iterator[Any]:
                for record in super().run(list(reversed(cases))):
                    record.details["ran_by"] = "reverse"
                    yield record

        return Reverse(options)

    @hookimpl
    def mitk_register_executors(self, register: Any) -> None:
        register("reverse", factory=ReverseExecutor.build, summary="last case first")


def test_a_plugin_executor_is_used_by_name(tmp_path: Path, inputs: Path, mitk_plugins: Any) -> None:
    """The executor hook: ``--executor reverse`` runs the cases through the plugin's executor; the records come
    back in input order, and ``mitk plugins list`` shows the executor."""
    mitk_plugins(ReverseExecutor())
    code, document, err = _run("segment", inputs, "-p", "threshold", "-d", tmp_path, "--json",
                               "--executor", "reverse", "--manifest", tmp_path / "m.jsonl")
    assert code == 0, err
    assert {case["ran_by"] for case in document["cases"]} == {"reverse"}
    assert [case["input"] for case in document["cases"]] == sorted(str(p) for p in inputs.iterdir())
    manifest = [json.loads(line)["input"] for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert manifest == sorted(manifest, reverse=True)  # kept as they finished
    code, out, _ = invoke(["plugins", "list", "--json"])
    assert code == 0
    executors = {row["name"]: row for row in json.loads(out)["executors"]}
    assert {"local", "dask", "reverse"} <= set(executors)
    code, out, _ = invoke(["plugins", "list"])
    assert "reverse" in out and "last case first" in out


class WorkerLikeExecutor:
    """A third-party executor that runs each case as a worker process would: through ``run_case_once_loaded``."""

    @staticmethod
    def build(options: Any) -> Any:
        from mitk.executors import Executor, run_case_once_loaded, summarize

        class WorkerLike(Executor):
            def load(self, recipe: Any) -> Any:
                self.recipe = recipe
                return summarize(recipe.load_model())

            def run(self, cases: list[Any]) -> Iterator[Any]:
                for case in cases:
                    yield run_case_once_loaded(self.recipe, case, debug=self.options.debug)

        return WorkerLike(options)

    @hookimpl
    def mitk_register_executors(self, register: Any) -> None:
        register("workerlike", factory=WorkerLikeExecutor.build, summary="cases as a worker runs them")


def test_debug_tracebacks_from_any_executor_are_shown_not_recorded(tmp_path: Path, inputs: Path,
                                                                   mitk_plugins: Any) -> None:
    """A traceback that comes back with a record (``run_case_once_loaded`` under --debug) is printed by the
    command whichever executor yielded the record, and never written to the manifest or the JSON."""
    mitk_plugins(WorkerLikeExecutor())
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a_broken.nii.gz").write_bytes(b"not a NIfTI file")
    (folder / "b_good.nii.gz").write_bytes(next(iter(sorted(inputs.iterdir()))).read_bytes())
    code, out, err = invoke(["--debug", "segment", str(folder), "-p", "threshold", "-d", str(tmp_path / "out"),
                             "--manifest", str(tmp_path / "m.jsonl"), "--executor", "workerlike", "--json"])
    assert code == 3, err
    assert "Traceback (most recent call last)" in err
    records = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["failed", "ok"]
    assert not any("mitk_traceback" in r for r in [*records, *json.loads(out)["cases"]])


def test_unknown_and_misplaced_executor_options(tmp_path: Path, inputs: Path) -> None:
    code, _, err = invoke(["segment", str(inputs), "-p", "threshold", "-d", str(tmp_path), "--executor", "nope"])
    assert code == 1 and "unknown executor 'nope'; available: dask, local" in err
    code, _, err = invoke(["segment", str(inputs), "-p", "threshold", "-d", str(tmp_path), "--workers", "2"])
    assert code == 2 and "--executor dask" in err and "Traceback" not in err
    code, _, err = invoke(["segment", str(inputs), "-p", "threshold", "-d", str(tmp_path), "--executor", "dask",
                           "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"])
    assert code == 2 and "not both" in err
    assert not any(tmp_path.iterdir())


def test_an_unreachable_scheduler_is_a_usage_error(tmp_path: Path, inputs: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("distributed")
    from mitk.executors import dask_executor

    monkeypatch.setattr(dask_executor, "CONNECT_TIMEOUT_S", 2)
    code, _, err = invoke(["segment", str(inputs), "-p", "threshold", "-d", str(tmp_path / "out"),
                           "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9"])
    assert code == 2 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_dask_without_the_extra_names_the_extra(tmp_path: Path, inputs: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed → ImportError
    code, _, err = invoke(["segment", str(inputs), "-p", "threshold", "-d", str(tmp_path), "--executor", "dask",
                           "--workers", "2", "--manifest", str(tmp_path / "manifest.jsonl")])
    assert code == 2, err
    assert "pip install 'mitk[dask]'" in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_a_signal_closes_the_executor_and_reports_what_is_not_done(tmp_path: Path) -> None:
    """SIGTERM while records arrive: the record being kept is kept, the executor's generator is closed (its
    ``finally`` cancels the work sent out), the other inputs are ``not_done`` and the status is 143."""
    from mitk.io.inputs import Case
    from mitk.runner.batch import CaseRecord, Interrupted, keep_records

    cases = [Case(tmp_path / f"case{index}.nii.gz") for index in range(4)]
    cancelled = []

    def records() -> Iterator[CaseRecord]:
        try:
            for case in reversed(cases):  # an executor may finish cases in any order
                yield CaseRecord(input=str(case.path))
        finally:
            cancelled.append(True)

    with pytest.raises(Interrupted) as stop:
        keep_records(cases, records(), on_record=lambda record: os.kill(os.getpid(), signal.SIGTERM))
    report = stop.value.report
    assert report is not None and stop.value.exit_code == 143 and cancelled == [True]
    assert [r.input for r in report.records] == [str(cases[3].path)]
    assert report.not_done == [str(case.path) for case in cases[:3]]


def test_a_worker_process_loads_the_model_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``run_case_once_loaded``: one model load per process for any number of cases and batches of the same
    model; the per-case job is built once per batch; another model replaces the first."""
    from types import SimpleNamespace

    from mitk import executors
    from mitk.io.inputs import Case
    from mitk.runner.batch import CaseOutcome

    loads: list[str | None] = []
    monkeypatch.setattr(executors, "_model", None)
    monkeypatch.setattr(executors, "_job", None)
    monkeypatch.setattr(executors.JobRecipe, "load_model", lambda self: loads.append(self.plugin) or SimpleNamespace(
        name=self.plugin, version="1", device="cpu"))

    def build(model: Any) -> Any:
        return lambda case: CaseOutcome(details={"model": id(model)})

    def recipe(plugin: str) -> executors.JobRecipe:
        return executors.JobRecipe(task="segment", plugin=plugin, weights=None, device="cpu", settings={}, build=build)

    first, second = recipe("a"), recipe("a")
    records = [executors.run_case_once_loaded(batch, Case(tmp_path / f"{n}.nii.gz"), details={"worker": "w"})
               for batch in (first, first, first, second, second)
               for n in range(2)]
    assert loads == ["a"] and all(r.status == "ok" and r.details["worker"] == "w" for r in records)
    assert len({r.details["model"] for r in records}) == 1
    executors.run_case_once_loaded(recipe("b"), Case(tmp_path / "x.nii.gz"))
    assert loads == ["a", "b"]
