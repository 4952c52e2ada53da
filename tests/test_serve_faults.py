"""The warm worker's machinery (:mod:`mitk.serve.worker`) under faults, with a small job of the test's own instead
of mitk's command line: a crashing job, one job's settings against the next, another user, a stale socket.

Every process runs under a timeout, and each worker is stopped (or killed) by the test that started it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mitk.serve.protocol import identity, receive, send

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the warm worker uses Linux socket credentials")

WORKER = r'''
import json, os, random, signal, sys
from pathlib import Path
from mitk.serve.worker import serve

def preload():
    import numpy, torch  # noqa: F401

def job(argv):
    import numpy, torch
    if argv[0] == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    if argv[0] == "exit":
        raise SystemExit(int(argv[1]))
    if argv[0] == "change":  # every setting a job could leave behind
        torch.set_default_dtype(torch.float64)
        torch.manual_seed(1234)
        torch.set_num_threads(1)
        numpy.random.seed(1234)
        random.seed(1234)
        os.environ["LEFT_BEHIND"] = "1"
        os.chdir("/")
        sys.modules["left_behind"] = sys
    print(json.dumps({"dtype": str(torch.get_default_dtype()), "seed": torch.initial_seed(),
                      "threads": torch.get_num_threads(), "numpy": int(numpy.random.randint(1 << 30)),
                      "random": random.random(), "env": os.environ.get("LEFT_BEHIND"), "cwd": os.getcwd(),
                      "module": "left_behind" in sys.modules, "argv": sys.argv[1:]}), flush=True)

owner = int(sys.argv[2]) if len(sys.argv) > 2 else None
serve(job, Path(sys.argv[1]), 120, preload, lambda line: print(line, flush=True), owner=owner)
'''


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    sock = tmp_path / "run" / "serve.sock"
    started = start(sock)
    try:
        yield started, sock
    finally:
        stop(started)


def start(sock: Path, *extra: str) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", WORKER, str(sock), *extra], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()  # the worker says it listens (or exits)
    if "listening at" not in line:
        process.kill()
        raise AssertionError(f"the worker did not start: {line} {process.communicate(timeout=30)[1]}")
    return process


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def call(sock: Path, argv: list[str], cwd: Path, **env: str) -> tuple[int, str, str]:
    """One call as the client makes it, with this test's pipes as the caller's terminal."""
    code = ("import os, sys; from mitk.serve.client import delegate; "
            f"os.chdir({str(cwd)!r}); sys.exit(delegate({argv!r}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MITK_SERVE": "require", "MITK_SERVE_SOCKET": str(sock), **env})
    return done.returncode, done.stdout, done.stderr


@pytest.mark.timeout(300)
def test_a_crashing_job_takes_only_its_child(worker: tuple[subprocess.Popen[str], Path], tmp_path: Path) -> None:
    """A job killed by a signal ends its call as a local process would (128 + the signal, as a shell reports
    it); a job's own exit status comes back as is; the worker serves on."""
    process, sock = worker
    assert call(sock, ["crash"], tmp_path)[0] == 128 + signal.SIGSEGV
    assert call(sock, ["exit", "7"], tmp_path)[0] == 7
    code, out, _ = call(sock, ["show"], tmp_path)
    assert code == 0 and json.loads(out)["argv"] == ["show"]
    assert process.poll() is None


@pytest.mark.timeout(300)
def test_one_jobs_settings_never_reach_the_next(worker: tuple[subprocess.Popen[str], Path], tmp_path: Path) -> None:
    """torch's default dtype and threads, the environment, the folder and the imported modules that one job
    changes are back as they were for the next one; torch's, NumPy's and Python's random states are fresh in each
    call, as in a new process, whatever a job seeded."""
    _, sock = worker
    (tmp_path / "here").mkdir()
    first = json.loads(call(sock, ["show"], tmp_path / "here")[1])
    changed = json.loads(call(sock, ["change"], tmp_path / "here")[1])
    after = json.loads(call(sock, ["show"], tmp_path / "here")[1])
    assert changed["dtype"] == "torch.float64" and changed["env"] == "1" and changed["cwd"] == "/"
    assert changed["seed"] == 1234 and changed["threads"] == 1 and changed["module"]
    randoms = ("seed", "numpy", "random")
    assert {key: value for key, value in after.items() if key not in randoms} == \
        {key: value for key, value in first.items() if key not in randoms}
    for key in randoms:
        assert len({first[key], changed[key], after[key]}) == 3  # never the last call's state, nor a shared one
    assert first["cwd"] == str(tmp_path / "here") and first["env"] is None and first["dtype"] == "torch.float32"
    # each call has the caller's own environment, not the worker's nor the last caller's
    assert json.loads(call(sock, ["show"], tmp_path, LEFT_BEHIND="mine")[1])["env"] == "mine"


@pytest.mark.timeout(300)
def test_a_caller_of_another_user_is_refused(tmp_path: Path) -> None:
    """The worker checks each caller's user id (SO_PEERCRED): here it serves another user than the one who
    calls, so the call is refused with a line and exit 2, and nothing runs."""
    sock = tmp_path / "run" / "serve.sock"
    process = start(sock, str(os.getuid() + 1))
    try:
        code, out, err = call(sock, ["change"], tmp_path)
    finally:
        stop(process)
    assert code == 2 and out == ""
    assert err.strip() == "mitk: error: refused: the warm worker serves only the user who started it"


def test_the_socket_is_private_and_a_stale_one_is_replaced(tmp_path: Path) -> None:
    from mitk.serve.worker import AlreadyRunning, claim_socket

    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    sock = folder / "serve.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(sock))
    dead.close()  # a worker that died without removing its socket
    assert sock.exists()
    live = claim_socket(sock)
    try:
        assert (sock.stat().st_mode & 0o777) == 0o600 and (folder.stat().st_mode & 0o777) == 0o700
        with pytest.raises(AlreadyRunning):
            claim_socket(sock)  # a live worker is never disturbed
    finally:
        live.close()
    open_folder = tmp_path / "shared"
    open_folder.mkdir(mode=0o755)
    open_folder.chmod(0o755)
    with pytest.raises(PermissionError, match="not private"):
        claim_socket(open_folder / "serve.sock")


@pytest.mark.timeout(300)
def test_another_version_is_refused_with_a_message(worker: tuple[subprocess.Popen[str], Path],
                                                   tmp_path: Path) -> None:
    _, sock = worker
    connection = socket.socket(socket.AF_UNIX)
    connection.connect(str(sock))
    with connection:
        send(connection, {**identity(), "version": "0.0.0-other", "argv": ["change"], "cwd": str(tmp_path),
                          "env": {}}, fds=[0, 1, 2])
        answer, _ = receive(connection)
    assert answer is not None and answer["exit"] == 2
    assert "mitk 0.0.0-other" in str(answer["error"]) and "mitk serve --stop" in str(answer["error"])


@pytest.mark.timeout(300)
def test_the_call_returns_when_its_job_is_done(worker: tuple[subprocess.Popen[str], Path], tmp_path: Path) -> None:
    """The caller's pipes reach their end when the call returns: no child (the job's, or the spare forked for
    the next call) holds them open, so a caller that reads all of its output (``$(mitk …)``) is not kept
    waiting. Calls one after the other each get a fresh child."""
    _, sock = worker
    for _ in range(3):
        code = ("import subprocess, sys; "
                f"p = subprocess.Popen([sys.executable, '-c', {CLIENT!r}], stdout=subprocess.PIPE); "
                "out = p.stdout.read(); p.wait(); print(len(out))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "MITK_SERVE_SOCKET": str(sock), "MITK_SERVE": "require"},
                              cwd=tmp_path)
        assert done.returncode == 0 and int(done.stdout) > 0, done.stderr


CLIENT = "import sys; from mitk.serve.client import delegate; sys.exit(delegate(['show']))"
