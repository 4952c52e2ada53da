"""One call, in a child forked from the warm worker: it waits as the worker's spare, then becomes the caller.

The worker forks its next child ahead of time (between calls), so that a call does not wait for the fork of a
process of several hundred megabytes. The spare lets go of every socket and pipe it inherited (another call's
terminal, the listening socket) and waits on its own channel. A call gives it the caller's stdin, stdout and
stderr, folder, environment and command line; it runs the job, flushes, lets go of the caller's terminal, and
says its exit status on the channel before the slow part of exiting (unmapping a large process), so the caller
returns as soon as its job is done.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import signal
import socket
import stat
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn, Protocol

from mitk.serve.protocol import receive, send

Job = Callable[[list[str]], None]
Tell = Callable[[dict[str, Any]], None]


class Keeper(Protocol):
    """What the worker keeps between calls (models, imported modules), fed by the notes of its children."""

    def install(self, tell: Tell) -> None:
        """In a child, before its job: look in the kept things first, and ``tell`` the worker what was loaded."""

    def finish(self) -> None:
        """In a child, after its job: tell the worker what else to keep."""

    def take_notes(self, notes: list[dict[str, Any]]) -> bool:
        """In the worker, once a call has answered: act on its child's notes; True if the worker's memory
        changed (children forked before are then out of date)."""

    def describe(self) -> dict[str, int]:
        """For ``mitk serve --status``."""


def die_with_parent(parent: int) -> None:
    """Ask Linux to kill this child when the worker's thread that forked it ends (``PR_SET_PDEATHSIG``); exit
    at once if the worker is already gone."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def let_go_of_inherited(keep: set[int]) -> None:
    """Point every inherited socket and pipe but ``keep`` at /dev/null: a spare that waits (or a job that runs)
    must not hold another call's terminal open (its caller's reader would wait for the end of a pipe that never
    comes), nor the worker's listening socket. The descriptor numbers stay taken, so an inherited Python object
    that closes its descriptor later closes /dev/null, not a file this job opened meanwhile."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd in keep or fd == null:
                continue
            with contextlib.suppress(OSError):
                mode = os.fstat(fd).st_mode
                if stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode):
                    os.dup2(null, fd, inheritable=fd <= 2)
    finally:
        os.close(null)


def spare(channel: socket.socket, parent: int, job: Job, keeper: Keeper | None) -> NoReturn:
    """A freshly forked child: wait for a call on ``channel`` (an end of file means "not needed": exit), then
    run it, with the ``keeper``'s things at hand, and exit. Never returns."""
    try:
        die_with_parent(parent)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the worker's handler: a spare stops when told
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C at the worker's terminal is the worker's
        let_go_of_inherited({channel.fileno()})
        message, fds = receive(channel, with_fds=True)
    except BaseException:  # a spare must never run on as a second worker
        os._exit(1)
    if message is None or len(fds) != 3:
        os._exit(0)

    def tell(note: dict[str, Any]) -> None:
        with contextlib.suppress(OSError, TypeError, ValueError):
            send(channel, {"note": note})

    if keeper is not None:
        keeper.install(tell)
    run_call(message, fds, job, channel, keeper.finish if keeper is not None else lambda: None)


def run_call(message: dict[str, Any], fds: list[int], job: Job, channel: socket.socket,
             finish: Callable[[], None]) -> NoReturn:
    """Become the caller: its descriptors, folder, environment and command line; run the job, say its exit
    status on ``channel`` and exit with it."""
    code = 1
    try:
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
        _fresh_random_state()
        try:
            job(list(message["argv"]))
            code = 0
        except SystemExit as done:
            code = _exit_code(done)
    except KeyboardInterrupt:  # after the command line's own handling: as Python itself ends on one
        with contextlib.suppress(Exception):
            traceback.print_exc()
        code = 128 + signal.SIGINT
    except BaseException:  # the child must always exit, and say why on the caller's stderr
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        with contextlib.suppress(Exception):
            finish()
        with contextlib.suppress(Exception):
            let_go_of_inherited({channel.fileno()})  # the caller's terminal: its reader sees the end now
        with contextlib.suppress(Exception):
            send(channel, {"exit": code})
        os._exit(code)


def _fresh_random_state() -> None:
    """torch's default generator and NumPy's global random state seeded afresh, from the system's entropy, as in a
    new process (the manifest records torch's seed); Python's ``random`` reseeds itself in a forked child."""
    for name, reseed in (("torch", "seed"), ("numpy.random", "seed")):
        module = sys.modules.get(name)
        if module is not None:
            with contextlib.suppress(Exception):
                getattr(module, reseed)()


def _exit_code(done: SystemExit) -> int:
    """The status Python gives ``raise SystemExit(code)``: an int as is, None 0, anything else printed and 1."""
    if done.code is None:
        return 0
    if isinstance(done.code, int):
        return done.code & 0xFF
    with contextlib.suppress(Exception):
        sys.stderr.write(f"{done.code}\n")
        sys.stderr.flush()
    return 1
