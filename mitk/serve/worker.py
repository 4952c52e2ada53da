"""The warm worker: a Unix-socket server that runs each call in a child forked from a process that has already
imported torch, MONAI and the plugins.

Each call gets its own child (:mod:`mitk.serve.child`), so nothing of one job (settings, global state, a crash, a
leak) reaches another. The child takes the caller's stdin, stdout and stderr (passed over the socket), folder and
environment, so the call prints, writes and exits exactly as it would have in the caller's own process; Ctrl-C
in the caller is relayed to it. The child dies with the worker (``PR_SET_PDEATHSIG``), and atomic writes mean a
killed job leaves no finished-looking output. The worker stops after ``idle_timeout`` seconds without a call, on
``mitk serve --stop``, or on SIGTERM/SIGINT.

The next child is forked ahead, between calls, by one long-lived thread (the fork of a large process takes tens
of milliseconds, and its exit as many: a call waits for neither). A :class:`~mitk.serve.child.Keeper`
(:class:`mitk.serve.models.ModelCache`) keeps recently used models and modules in the worker: each child notes
what it loaded on its channel, and once the call has answered the worker loads it too; forks and the keeper's
work take one lock, and a child forked before the keeper changed the worker's memory is replaced, never used.
"""

from __future__ import annotations

import contextlib
import gc
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mitk.serve.child import Job, Keeper, spare
from mitk.serve.protocol import ProtocolError, identity, peer_uid, private_folder, receive, send

REFUSED = "refused: the warm worker serves only the user who started it"


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


@dataclass
class Child:
    """A forked child: its pid, the worker's end of its channel, and the worker memory it was forked from."""

    pid: int
    channel: socket.socket
    generation: int
    pidfd: int | None = None
    notes: list[dict[str, Any]] = field(default_factory=list)
    reaped: bool = False

    def reap(self) -> int:
        """Wait for the child to end; its exit status as a shell reports it (128 + N for signal N)."""
        _, status = os.waitpid(self.pid, 0)
        self.reaped = True
        code = os.waitstatus_to_exitcode(status)
        return 128 - code if code < 0 else code

    def close(self) -> None:
        self.channel.close()
        if self.pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self.pidfd)
            self.pidfd = None


class Worker:
    """Accepts calls until stopped or idle; one thread per call, one forked child per call (forked ahead)."""

    def __init__(self, server: socket.socket, path: Path, job: Job, idle_timeout: float,
                 keeper: Keeper | None = None, owner: int | None = None) -> None:
        self.server, self.path, self.job, self.idle_timeout = server, path, job, idle_timeout
        self.keeper = keeper
        self.owner = os.getuid() if owner is None else owner
        """The only user served (``SO_PEERCRED`` of each caller)."""
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.fork_lock = threading.Lock()
        """Held by a fork and by the keeper's changes to the worker's memory, so none happens mid-change."""
        self.active = 0
        self.last = time.monotonic()
        self.inode = path.stat().st_ino
        self.generation = 0
        """Counts the keeper's changes to the worker's memory; a spare of an older generation is replaced."""
        self.spares = threading.Condition()
        self.spare: Child | None = None
        self.running = 0
        self.waiting = 0
        self.fork_error: str | None = None

    def run(self) -> None:
        self.server.settimeout(0.5)
        forker = threading.Thread(target=self._fork_ahead, name="mitk-serve-forker", daemon=True)
        forker.start()
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
            self.stopping.set()
            with self.spares:
                self.spares.notify_all()
            forker.join(timeout=30)
            self.close()

    def close(self) -> None:
        self.server.close()
        with contextlib.suppress(OSError):
            if self.path.stat().st_ino == self.inode:  # never remove a socket another worker has bound since
                self.path.unlink()

    # --- the children ----------------------------------------------------------------------------------------

    def _fork(self) -> Child:
        """Fork a spare child (in the forker thread: a child dies when the thread that forked it ends)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        parent = os.getpid()
        with self.fork_lock:
            generation = self.generation
            pid = os.fork()
        if pid == 0:
            ours.close()
            spare(theirs, parent, self.job, self.keeper)  # never returns
        theirs.close()
        pidfd = None
        with contextlib.suppress(OSError, AttributeError):
            pidfd = os.pidfd_open(pid)
        return Child(pid, ours, generation, pidfd)

    def _wanted(self) -> bool:
        """Whether the forker should fork now (under ``spares``): no up-to-date spare, and no job running that a
        fork would slow down, unless a call waits."""
        current = self.spare is not None and self.spare.generation == self.generation
        return not current and (self.running == 0 or self.waiting > 0)

    def _fork_ahead(self) -> None:
        """The forker thread: keep one up-to-date spare child while the worker runs; end the spare on stop."""
        while True:
            with self.spares:
                while not self.stopping.is_set() and not self._wanted():
                    self.spares.wait(0.5)
                old, self.spare = self.spare, None
                if self.stopping.is_set():
                    break
            if old is not None:
                _dismiss(old)
            try:
                child = self._fork()
            except OSError as error:
                with self.spares:
                    self.fork_error = f"the warm worker could not start the job ({error.strerror or error})"
                    self.spares.notify_all()
                self.stopping.wait(1.0)
                continue
            with self.spares:
                self.spare, self.fork_error = child, None
                self.spares.notify_all()
        if old is not None:
            _dismiss(old)

    def _take_spare(self) -> Child:
        """The spare for this call (waiting for the forker if there is none up to date)."""
        with self.spares:
            self.waiting += 1
            self.spares.notify_all()
            try:
                while self.spare is None or self.spare.generation != self.generation:
                    if self.stopping.is_set():
                        raise ProtocolError("the warm worker is stopping")
                    if self.fork_error:
                        raise ProtocolError(self.fork_error)
                    self.spares.wait(0.5)
                child, self.spare = self.spare, None
                self.running += 1
                return child
            finally:
                self.waiting -= 1

    def _done(self, child: Child) -> None:
        """After the call has answered: let the keeper act on the child's notes, let the forker fork the next
        spare, and reap the child meanwhile (its exit, unmapping a large process, takes as long as a fork)."""
        try:
            if self.keeper is not None and child.notes:
                with self.fork_lock:
                    if self.keeper.take_notes(child.notes):
                        gc.collect()
                        gc.freeze()  # what the keeper added, left alone by the children's collections
                        self.generation += 1
        finally:
            with self.spares:
                self.running -= 1
                self.spares.notify_all()
            try:
                if not child.reaped:
                    child.reap()
            finally:
                child.close()

    # --- the calls -------------------------------------------------------------------------------------------

    def _serve(self, connection: socket.socket) -> None:
        fds: list[int] = []
        try:
            with connection:
                if peer_uid(connection) != self.owner:
                    send(connection, {"error": REFUSED})
                    return
                message, fds = receive(connection, with_fds=True)
                if message is not None:
                    self._answer(connection, message, fds)
        except (OSError, ProtocolError, ValueError):
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
        try:
            child = self._take_spare()
        except ProtocolError as error:
            send(connection, {"exit": 1, "error": str(error)})
            return
        try:
            send(child.channel, message, fds=fds)
            for fd in fds:
                os.close(fd)
            fds.clear()
            code = _wait(connection, child)
            with contextlib.suppress(OSError):
                send(connection, {"exit": code})
        finally:
            self._done(child)


def _dismiss(child: Child) -> None:
    """End a spare that no call will use (it reads the end of its channel and exits)."""
    child.close()
    with contextlib.suppress(ChildProcessError):
        child.reap()


def _wait(connection: socket.socket, child: Child) -> int:
    """Relay the caller's signals to the child until it says its exit status (or ends without a word: then its
    status from the system, 128 + N for signal N); keep its notes. A caller that goes away (killed) takes its
    job with it."""
    watched: list[Any] = [connection, child.channel]
    if child.pidfd is not None:
        watched.append(child.pidfd)
    while True:
        readable, _, _ = select.select(watched, [], [], 1.0 if child.pidfd is not None else 0.05)
        if child.channel in readable:
            try:
                said, _ = receive(child.channel)
            except (OSError, ProtocolError, ValueError):
                said = None
            if said is None:
                watched.remove(child.channel)  # it ended without a word: its status tells how
            elif "exit" in said:
                return int(said["exit"])
            elif isinstance(said.get("note"), dict):
                child.notes.append(said["note"])
            continue
        if child.channel not in watched and (child.pidfd is None or child.pidfd in readable):
            done, status = os.waitpid(child.pid, os.WNOHANG)
            if done:
                child.reaped = True
                code = os.waitstatus_to_exitcode(status)
                return 128 - code if code < 0 else code
        if connection in readable:
            try:
                message, _ = receive(connection)
            except (OSError, ProtocolError, ValueError):
                message = None
            if message is None:
                watched.remove(connection)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)
            elif isinstance(message.get("signal"), int):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, message["signal"])


def serve(job: Job, path: Path, idle_timeout: float, preload: Callable[[], None],
          ready: Callable[[str], None], keeper: Keeper | None = None, owner: int | None = None) -> None:
    """Bind ``path``, run ``preload`` (the imports to keep warm), say ``ready``, then serve ``owner`` (this
    user unless told) until stopped."""
    server = claim_socket(path)
    worker: Worker | None = None
    try:
        preload()
        worker = Worker(server, path, job, idle_timeout, keeper, owner)

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
