"""The calling side: hand this command line to the warm worker, relay Ctrl-C, and return its exit status."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from types import FrameType

from mitk.serve.protocol import ENVIRONMENT, ProtocolError, identity, receive, send, socket_path

NOT_DELEGATED = ("serve",)
"""Commands that always run in the calling process."""


def wanted() -> str | None:
    """``auto`` or ``require`` when ``MITK_SERVE`` asks for the worker, else None."""
    value = os.environ.get(ENVIRONMENT, "").strip().lower()
    if value in ("1", "true", "yes", "auto"):
        return "auto"
    return "require" if value == "require" else None


def delegate(argv: list[str]) -> int | None:
    """Run ``argv`` in the warm worker and return its exit status, or None to run it here (no worker asked
    for, none running, or a stale socket left by one that died)."""
    mode = wanted()
    if mode is None or any(word in NOT_DELEGATED for word in argv[:3]):
        return None
    path = socket_path()
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(os.fspath(path))
    except OSError:
        connection.close()
        if mode == "require":
            sys.stderr.write(f"mitk: error: no warm worker listens at {path} (start one with: mitk serve)\n")
            return 1
        return None
    with connection:
        return _run(connection, argv)


def _run(connection: socket.socket, argv: list[str]) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    job = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), **identity()}
    previous = {}

    def relay(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):
            send(connection, {"signal": signum})

    for number in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(number) is not signal.SIG_IGN:
            previous[number] = signal.signal(number, relay)
    try:
        with contextlib.suppress(OSError):  # a worker that refuses this caller may have answered and closed
            send(connection, job, fds=[0, 1, 2])
        while True:
            try:
                message, _ = receive(connection)
            except (ProtocolError, OSError):
                message = None
            if message is None:
                sys.stderr.write("mitk: error: the warm worker stopped during the job; outputs it had not "
                                 "finished were not written (run the call again)\n")
                return 1
            if "error" in message:
                sys.stderr.write(f"mitk: error: {message['error']}\n")
                return int(message.get("exit", 2))
            if "exit" in message:
                return int(message["exit"])
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def ask(message: dict[str, object]) -> dict[str, object] | None:
    """Send a control message (``status``, ``stop``) to the worker; its answer, or None when none runs."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(os.fspath(socket_path()))
        with connection:
            send(connection, message, fds=[0, 1, 2])
            answer, _ = receive(connection)
            return answer
    except (OSError, ProtocolError):
        return None
    finally:
        connection.close()
