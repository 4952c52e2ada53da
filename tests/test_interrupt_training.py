"""SIGTERM and Ctrl-C stop ``mitk train`` and the start-up of a task verb the way they stop a batch: the line
``mitk: interrupted (SIGNAL) …``, the ``--json`` document so far, and exit 143 (SIGTERM) or 130 (SIGINT).

Real subprocesses and real signals. Training is signalled once its stderr shows a chosen line (the data loaded,
an epoch finished); the start-up cases signal themselves from an import hook at a chosen module, so that the
signal arrives at a known point of the start-up. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from test_train import LABELS, build_cases

from mitk.checkpoint import training_state_load

ROOT = Path(__file__).resolve().parents[1]
TINY_ARGS = ["--patch-size", "32", "--lr", "0.01", "--seed", "0", "--device", "cpu", "--batch-size", "2",
             "--set", "spacing=[4,4,4]", "--set", "samples_per_case=1", "--set", "network.channels=[4,8,16]",
             "--set", "network.strides=[2,2]", "--set", "network.num_res_units=1", "--labels", ",".join(LABELS)]


def environment() -> dict[str, str]:
    paths = [str(ROOT), str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "OMP_NUM_THREADS": "1"}


class Running:
    """``python -m mitk ARGS`` with its stderr read line by line in a thread (so a wait can be bounded)."""

    def __init__(self, *args: str | Path) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "mitk", *map(str, args)], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=environment(),
                                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, start: str, timeout: float = 300) -> None:
        """Wait until a stderr line starts with ``start``; fail if mitk ends or ``timeout`` s pass first."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                self.process.kill()
                pytest.fail(f"no line {start!r} within {timeout} s:\n{''.join(self.seen)}")
            if line is None:
                self.process.wait(timeout=60)
                pytest.fail(f"mitk ended (exit {self.process.returncode}) before {start!r}:\n{''.join(self.seen)}")
            self.seen.append(line)
            if line.startswith(start):
                return

    def stop(self, signum: int, timeout: float = 120) -> tuple[int, str, str]:
        """Send ``signum``; the exit status, stdout and the whole of stderr."""
        self.process.send_signal(signum)
        assert self.process.stdout is not None
        try:
            stdout = self.process.stdout.read()
            self.process.wait(timeout=timeout)
        finally:
            self.process.kill()
        while (line := self.lines.get(timeout=timeout)) is not None:
            self.seen.append(line)
        return self.process.returncode, stdout, "".join(self.seen)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mni_cases")
    build_cases(root, 4)
    return root


def test_sigterm_after_an_epoch_says_so_emits_the_json_so_far_and_resume_continues(cases: Path,
                                                                                   tmp_path: Path) -> None:
    run = tmp_path / "run"
    training = Running("train", "segment", "--plugin", "unet", "--data", cases, "-d", run, "--epochs", "200",
                       "--val-every", "1", "--json", *TINY_ARGS)
    training.wait_for("epoch 1:")
    code, stdout, stderr = training.stop(signal.SIGTERM)

    assert code == 143, stderr
    assert "Traceback" not in stderr
    [line] = [text for text in stderr.splitlines() if text.startswith("mitk: interrupted")]
    assert line.startswith("mitk: interrupted (SIGTERM) after epoch ")
    assert f"mitk train segment -d {run} --resume" in line
    document = json.loads(stdout)  # the document so far
    finished = document["last_epoch"]
    assert document["interrupted"] == "SIGTERM" and document["exit_code"] == 143
    assert 1 <= finished < 200 and document["epochs_run"] == finished and f"after epoch {finished}:" in line
    assert document["checkpoint"] == str(run / "best.safetensors") and document["best_metric"]["epoch"] >= 1
    # The finished epochs are complete on disk: the training state and the log agree with the document.
    assert training_state_load(run / "training_state.pt")["epoch"] == finished
    assert [row["epoch"] for row in json.loads((run / "log.json").read_text())["epochs"]] == list(
        range(1, finished + 1))

    resumed = subprocess.run([sys.executable, "-m", "mitk", "train", "segment", "-d", str(run), "--resume",
                              "--epochs", str(finished + 1), "--json"], capture_output=True, text=True,
                             env=environment(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["last_epoch"] == finished + 1


def test_ctrl_c_before_the_first_epoch_exits_130_with_the_line(cases: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    training = Running("train", "segment", "--plugin", "unet", "--data", cases, "-d", run, "--epochs", "200",
                       "--json", *TINY_ARGS)
    training.wait_for("training on ")  # the data are loaded; the first epoch runs
    code, stdout, stderr = training.stop(signal.SIGINT)

    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert "mitk: interrupted (SIGINT) before the first epoch finished: nothing to resume" in stderr
    document = json.loads(stdout)
    assert document["interrupted"] == "SIGINT" and document["exit_code"] == 130 and document["epochs_run"] == 0
    assert not (run / "training_state.pt").exists()


SIGNAL_AT_IMPORT = '''
import importlib.abc, os, signal, sys

MODULE = sys.argv.pop(1)


class SignalAtImport(importlib.abc.MetaPathFinder):
    """Send this process SIGTERM when the module MODULE starts to be imported."""

    def find_spec(self, name, path=None, target=None):
        if name == MODULE:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGTERM)
        return None

sys.meta_path.insert(0, SignalAtImport())
from mitk.__main__ import main
main()
'''


@pytest.mark.parametrize("module", ["mitk.cli", "torch"], ids=["importing the command line",
                                                               "the verb importing torch"])
def test_sigterm_while_a_verb_starts_exits_143_with_the_line(module: str, anatomical_t1: Path,
                                                              tmp_path: Path) -> None:
    """While ``mitk segment`` imports its command line (before any handler of the CLI is in place), or while
    the verb imports torch to load its model (Typer used to turn that into a silent 130)."""
    launcher = tmp_path / "launcher.py"
    launcher.write_text(SIGNAL_AT_IMPORT)
    # --probabilities: threshold's network path (its NumPy path imports no torch at all)
    done = subprocess.run([sys.executable, str(launcher), module, "segment", str(anatomical_t1), "--plugin",
                           "threshold", "--probabilities", "-d", str(tmp_path / "out")], capture_output=True,
                          text=True, env=environment(), timeout=300)
    assert done.returncode == 143, done.stderr
    assert done.stderr.startswith("mitk: interrupted (SIGTERM)") and len(done.stderr.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_the_import_hook_does_signal(anatomical_t1: Path, tmp_path: Path) -> None:
    """Without the hook's module among the imports, the same command runs to the end (the hook is what stops
    the runs above)."""
    launcher = tmp_path / "launcher.py"
    launcher.write_text(SIGNAL_AT_IMPORT)
    done = subprocess.run([sys.executable, str(launcher), "no.such.module", "segment", str(anatomical_t1),
                           "--plugin", "threshold", "-d", str(tmp_path / "out")], capture_output=True, text=True,
                          env=environment(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "anatomical_seg.nii.gz").is_file()
