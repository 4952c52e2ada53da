"""Interrupted batches are clean: SIGTERM/SIGINT drop the case in progress and report the rest; SIGKILL leaves
temporary files that the next run recognises and removes; ``--skip-existing`` then finishes the batch.

Real subprocesses and real signals. The batch is held at a chosen case by a test segmenter (the threshold
plugin with a gate): when it reaches that case it writes a marker file and waits, so the test sends its signal
at a known point. Nothing here depends on timing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LAUNCHER = '''
"""mitk with a ``gated`` segmenter: the threshold plugin, held at call MITK_TEST_GATE_AT of MITK_TEST_GATE_IN
(``forward``: the network; ``write``: right after a label map is written to its temporary file)."""
import os
import sys
import time
from pathlib import Path

import mitk.io.nifti
import mitk.runner.model
from mitk import hookimpl
from mitk.cli import main
from mitk.plugin_manager import build_plugin_manager
from mitk_builtin._threshold import ThresholdSegmenter

GATE_AT = int(os.environ.get("MITK_TEST_GATE_AT", "0"))
GATE_IN = os.environ.get("MITK_TEST_GATE_IN", "forward")
MARKER = Path(os.environ.get("MITK_TEST_MARKER", os.devnull))
calls = {"forward": 0, "write": 0}


def gate(where):
    calls[where] += 1
    if where == GATE_IN and calls[where] == GATE_AT:
        MARKER.write_text(str(os.getpid()))
        for _ in range(2400):  # held until the test's signal arrives (at most two minutes)
            time.sleep(0.05)
        sys.exit("the test never sent its signal")


class GatedSegmenter(ThresholdSegmenter):
    needs_torch = True  # its network is what the test holds, breaks or counts

    def network(self, config):
        network = super().network(config)
        forward = network.forward

        def gated_forward(image):
            gate("forward")
            return forward(image)

        network.forward = gated_forward
        return network


real_write = mitk.io.nifti.write_nifti


def gated_write(*args, **kwargs):
    real_write(*args, **kwargs)
    gate("write")


mitk.io.nifti.write_nifti = gated_write


class Plugin:
    @staticmethod
    @hookimpl
    def mitk_register_plugins(register):
        register("gated", task="segment", factory=GatedSegmenter)


registry = build_plugin_manager(extra_plugins=(Plugin(),))[1]
mitk.runner.model.get_registry = lambda: registry
main(sys.argv[1:])
'''


@pytest.fixture
def batch(tmp_path: Path, anatomical_t1: Path) -> Path:
    """Four real T1 volumes in ``in/``."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("case1", "case2", "case3", "case4"):
        shutil.copy(anatomical_t1, folder / f"{name}.nii")
    return folder


def start(tmp_path: Path, args: list[str], gate_at: int = 0, gate_in: str = "forward") -> subprocess.Popen[str]:
    launcher = tmp_path / "launcher.py"
    launcher.write_text(LAUNCHER)
    paths = [str(ROOT), str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p),
           "MITK_TEST_GATE_AT": str(gate_at), "MITK_TEST_GATE_IN": gate_in,
           "MITK_TEST_MARKER": str(tmp_path / "held"), "MITK_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess.Popen([sys.executable, str(launcher), "segment", "--plugin", "gated", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_until_held(process: subprocess.Popen[str], marker: Path) -> None:
    """Wait for the marker the gated plugin writes (the batch is then held at the chosen case)."""
    for _ in range(6000):
        if marker.exists():
            return
        if process.poll() is not None:
            stdout, stderr = process.communicate()
            pytest.fail(f"mitk ended before the gate (exit {process.returncode}):\n{stderr}\n{stdout}")
        time.sleep(0.05)
    process.kill()
    pytest.fail("mitk never reached the gate")


def finish(tmp_path: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    process = start(tmp_path, args)
    stdout, stderr = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


EXPECTED = sorted(f"case{n}_seg{suffix}" for n in range(1, 5) for suffix in (".nii.gz", "_stats.csv"))


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signal_drops_the_case_in_progress_and_reports_the_rest(batch: Path, tmp_path: Path, stop: int,
                                                               code: int) -> None:
    out, manifest = tmp_path / "out", tmp_path / "runs.jsonl"
    args = [str(batch), "-d", str(out), "--stats", "--json", "--manifest", str(manifest)]
    process = start(tmp_path, args, gate_at=3)
    wait_until_held(process, tmp_path / "held")
    process.send_signal(stop)
    stdout, stderr = process.communicate(timeout=300)

    assert process.returncode == code, stderr
    assert "mitk: interrupted" in stderr and "segment: 2 ok, 0 skipped, 0 failed of 2" in stderr
    assert "Traceback" not in stderr
    document = json.loads(stdout)  # the document so far
    assert document["exit_code"] == code and document["interrupted"] == signal.Signals(stop).name
    assert [Path(r["input"]).name for r in document["cases"]] == ["case1.nii", "case2.nii"]
    assert [Path(p).name for p in document["not_done"]] == ["case3.nii", "case4.nii"]
    assert len(manifest.read_text().splitlines()) == 2
    # The third case was dropped whole: no label map, no statistics, no temporary file.
    assert names(out) == ["case1_seg.nii.gz", "case1_seg_stats.csv", "case2_seg.nii.gz", "case2_seg_stats.csv"]
    if stop == signal.SIGINT:
        return  # resuming is the same after either signal (and is checked once, to keep this test short)

    resumed = finish(tmp_path, [str(batch), "-d", str(out), "--stats", "--json", "--skip-existing"])
    assert resumed.returncode == 0, resumed.stderr
    assert [r["status"] for r in json.loads(resumed.stdout)["cases"]] == ["skipped", "skipped", "ok", "ok"]
    assert names(out) == EXPECTED


def test_sigkill_leftovers_are_removed_by_the_next_run_but_not_a_live_runs(batch: Path, tmp_path: Path) -> None:
    from mitk.io.atomic import PARTIAL_PATTERN

    out = tmp_path / "out"
    process = start(tmp_path, [str(batch), "-d", str(out), "--stats"], gate_at=2, gate_in="write")
    wait_until_held(process, tmp_path / "held")  # case2's label map is written to its temporary file
    process.kill()
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL

    [leftover] = [name for name in names(out) if name.startswith(".")]
    match = PARTIAL_PATTERN.match(leftover)
    assert match is not None and int(match["pid"]) == process.pid and leftover.endswith(".partial.nii.gz")
    assert sorted(set(names(out)) - {leftover}) == ["case1_seg.nii.gz", "case1_seg_stats.csv"]
    # A temporary file of a mitk run that is still going (this test's own process stands in for it).
    live = out / f".mitk-{match['host']}-{os.getpid()}-0123abcd.partial.nii.gz"
    live.write_bytes(b"being written")

    resumed = finish(tmp_path, [str(batch), "-d", str(out), "--stats", "--skip-existing"])
    assert resumed.returncode == 0, resumed.stderr
    assert names(out) == sorted([live.name, *EXPECTED])
    assert live.read_bytes() == b"being written"


def test_interrupted_single_input_writes_nothing(tmp_path: Path, batch: Path) -> None:
    """SIGTERM during the only case of an ``-o`` run: exit 143, no file, no folder made for it."""
    out = tmp_path / "out"
    process = start(tmp_path, [str(batch / "case1.nii"), "-o", str(out / "one.nii.gz")], gate_at=1)
    wait_until_held(process, tmp_path / "held")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 143 and "mitk: interrupted" in stderr and "Traceback" not in stderr
    assert not out.exists() or names(out) == []


def test_only_leftovers_of_gone_processes_on_this_host_are_removed(tmp_path: Path) -> None:
    from mitk.io.atomic import PARTIAL_PATTERN, atomic_path, remove_stale_partials

    with atomic_path(tmp_path / "probe.nii.gz") as temporary:
        match = PARTIAL_PATTERN.match(temporary.name)
        assert match is not None and int(match["pid"]) == os.getpid() and len(temporary.name) < 64
    host = match["host"]
    other_host = "0" * 6 if host != "0" * 6 else "1" * 6
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    names_kept = [f".mitk-{host}-{os.getpid()}-00000000.partial.nii.gz",  # a run still going (this one)
                  f".mitk-{other_host}-{dead_pid}-00000000.partial.nii.gz",  # another host (its PIDs are not ours)
                  f".scan.{dead_pid}.partial.nii.gz", "scan_seg.nii.gz"]  # not mitk's temporary names
    stale = tmp_path / f".mitk-{host}-{dead_pid}-00000000.partial.csv"
    for name in [*names_kept, stale.name]:
        (tmp_path / name).write_text("x")
    assert remove_stale_partials(tmp_path) == [stale]
    assert names(tmp_path) == sorted([*names_kept, "probe.nii.gz"])
