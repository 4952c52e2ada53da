"""The warm worker: a Unix-socket server that runs each call in a child forked from a process that has already
imported torch, MONAI and the plugins.

Each call gets its own child, so nothing of one job (settings, global state, a crash, a leak) reaches another.
The child takes the caller's stdin, stdout and stderr (passed over the socket), folder and environment, so the
call prints, writes and exits exactly as it would have in the caller's own process; Ctrl-C in the caller is
relayed to it. The child dies with the worker (``PR_SET_PDEATHSIG``), and atomic writes mean a killed job
leaves no finished-looking output. The worker stops after ``idle_timeout`` seconds without a call, on
``mitk serve --stop``, or on SIGTERM/SIGINT.

A :class:`Keeper` (:class:`mitk.serve.models.ModelCache`) keeps recently used models in the worker: each child
writes notes (what it loaded) on a pipe, and once the call has answered the worker acts on them; forks and the
keeper's work take one lock, so no child is forked in the middle of a load.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from mitk.serve.protocol import identity, peer_uid, private_folder, receive, send

Job = Callable[[list[str]], None]


class Keeper(Protocol):
    """What the worker keeps between calls (models), fed by the notes of its children."""

    def install(self, notes_fd: int | None) -> None: ...

    def take_notes(self, notes: bytes) -> None: ...

    def describe(self) -> dict[str, int]: ...


class AlreadyRunning(Exception):
    """A live worker answers on the socket already."""


def claim_socket(path: Path) -> socket.socket:
    """Bind a listening socket at ``path`` (mode 0600 in a private folder); a stale file left by a dead
    worker is removed, a live worker is not disturbed."""
    private_folder(path.parent)
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(os.fspath(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)
        else:
            raise AlreadyRunning(f"a warm worker already listens at {path}")
        finally:
            probe.close()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mask = os.umask(0o177)
    try:
        server.bind(os.fspath(path))
    finally:
        os.umask(mask)
    server.listen(64)
    return server


class Worker:
    """Accepts calls until stopped or idle; one thread and one forked child per call."""

    def __init__(self, server: socket.socket, path: Path, job: Job, idle_timeout: float,
                 keeper: Keeper | None = None) -> None:
        self.server, self.path, self.job, self.idle_timeout = server, path, job, idle_timeout
        self.keeper = keeper
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.fork_lock = threading.Lock()
        self.active = 0
        self.last = time.monotonic()
        self.inode = path.stat().st_ino

    def run(self) -> None:
        self.server.settimeout(0.5)
        try:
            while not self.stopping.is_set():
                try:
                    connection, _ = self.server.accept()
                except TimeoutError:
                    with self.lock:
                        idle = self.active == 0 and time.monotonic() - self.last > self.idle_timeout
                    if idle:
                        break
                    continue
                with self.lock:
                    self.active += 1
                threading.Thread(target=self._serve, args=(connection,), daemon=True).start()
        finally:
            self.close()

    def close(self) -> None:
        self.server.close()
        with contextlib.suppress(OSError):
            if self.path.stat().st_ino == self.inode:  # never remove a socket another worker has bound since
                self.path.unlink()

    def _serve(self, connection: socket.socket) -> None:
        fds: list[int] = []
        try:
            with connection:
                if peer_uid(connection) != os.getuid():
                    send(connection, {"error": "refused: the warm worker serves only the user who started it"})
                    return
                message, fds = receive(connection, with_fds=True)
                if message is not None:
                    self._answer(connection, message, fds)
        except OSError:
            pass
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            with self.lock:
                self.active -= 1
                self.last = time.monotonic()

    def _answer(self, connection: socket.socket, message: dict[str, Any], fds: list[int]) -> None:
        if message.get("stop"):
            self.stopping.set()
            send(connection, {"exit": 0})
            return
        if message.get("status"):
            send(connection, {"exit": 0, "pid": os.getpid(), **identity(),
                              **(self.keeper.describe() if self.keeper else {})})
            return
        mine = identity()
        if {key: message.get(key) for key in mine} != mine:
            send(connection, {"exit": 2, "error": (
                f"the warm worker runs mitk {mine['version']} ({mine['python']}); this call is mitk "
                f"{message.get('version')} ({message.get('python')}): stop it (mitk serve --stop) and start it "
                "again")})
            return
        if len(fds) != 3 or not isinstance(message.get("argv"), list):
            send(connection, {"exit": 2, "error": "malformed call to the warm worker"})
            return
        sys.stdout.flush()
        sys.stderr.flush()
        notes_read, notes_write = os.pipe()
        with self.fork_lock:
            pid = os.fork()
        if pid == 0:
            connection.close()
            os.close(notes_read)
            if self.keeper is not None:
                self.keeper.install(notes_write)
            _child(message, fds, self.job)  # never returns
        os.close(notes_write)
        for fd in fds:
            os.close(fd)
        fds.clear()
        try:
            send(connection, {"exit": _wait(connection, pid)})
        finally:
            notes = _drain(notes_read)
        if self.keeper is not None and notes:
            with self.fork_lock:
                self.keeper.take_notes(notes)


def _drain(fd: int) -> bytes:
    """What a finished child wrote on its notes pipe (without waiting for a descendant that still holds it)."""
    os.set_blocking(fd, False)
    chunks = []
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)
    return b"".join(chunks)


def _wait(connection: socket.socket, pid: int) -> int:
    """Relay the caller's signals to the child until it ends; return its exit status (128 + N for signal N).
    A caller that goes away (killed) takes its job with it."""
    gone = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code
        readable, _, _ = select.select([] if gone else [connection], [], [], 0.05)
        if not readable:
            continue
        try:
            message, _ = receive(connection)
        except (OSError, ValueError):
            message = None
        if message is None:
            gone = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        elif isinstance(message.get("signal"), int):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, message["signal"])


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this child when the worker dies (``PR_SET_PDEATHSIG``)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _child(message: dict[str, Any], fds: list[int], job: Job) -> None:
    """Become the caller: its descriptors, folder, environment and command line; run the job and exit."""
    code = 1
    try:
        _die_with_parent(os.getppid())
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, signal.default_int_handler if number == signal.SIGINT else signal.SIG_DFL)
        os.chdir(message["cwd"])
        os.environ.clear()
        os.environ.update(message["env"])
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding=sys.stdin.encoding)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding=sys.stdout.encoding,
                                      errors=sys.stdout.errors, line_buffering=os.isatty(1), write_through=False)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding=sys.stderr.encoding,
                                      errors="backslashreplace", line_buffering=True)
        sys.argv = ["mitk", *message["argv"]]
        try:
            job(list(message["argv"]))
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:  # the child must always exit, and say why on the caller's stderr
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def serve(job: Job, path: Path, idle_timeout: float, preload: Callable[[], None],
          ready: Callable[[str], None], keeper: Keeper | None = None) -> None:
    """Bind ``path``, run ``preload`` (the imports to keep warm), say ``ready``, then serve until stopped."""
    server = claim_socket(path)
    worker: Worker | None = None
    try:
        preload()
        worker = Worker(server, path, job, idle_timeout, keeper)

        def stop(signum: int, frame: Any) -> None:
            assert worker is not None
            worker.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        ready(f"mitk serve: listening at {path} (pid {os.getpid()}; stops after {idle_timeout:g} s idle)")
        worker.run()
    finally:
        if worker is None:
            server.close()
            path.unlink(missing_ok=True)
