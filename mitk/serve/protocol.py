"""The warm worker's socket and messages: a user-private Unix socket, length-prefixed JSON, and file descriptors.

The socket lives in ``$XDG_RUNTIME_DIR/mitk`` (or ``/tmp/mitk-<uid>``), a folder only its owner may enter; the
worker also checks each caller's user id (``SO_PEERCRED``) and refuses any other user. No network port is
opened. Imports stay light: the client side runs before the command line is imported.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import sys
from pathlib import Path
from typing import Any

ENVIRONMENT = "MITK_SERVE"
"""``1`` (or ``auto``): hand calls to a running worker, else run them here; ``require``: fail when none runs."""

SOCKET_ENVIRONMENT = "MITK_SERVE_SOCKET"
"""Overrides the socket's path (tests, or several workers side by side)."""

HEADER = struct.Struct("!I")
MAX_MESSAGE = 16 * 1024 * 1024
FDS = 3  # the caller's stdin, stdout and stderr


class ProtocolError(Exception):
    """The other side broke the protocol or went away."""


def socket_path() -> Path:
    """Where this user's worker listens."""
    chosen = os.environ.get(SOCKET_ENVIRONMENT)
    if chosen:
        return Path(chosen)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    folder = Path(runtime) / "mitk" if runtime else Path(f"/tmp/mitk-{os.getuid()}")
    return folder / "serve.sock"


def private_folder(folder: Path) -> None:
    """Create ``folder`` for this user alone (mode 0700), or check that an existing one is ours and closed to
    others; raise ``PermissionError`` otherwise (another user could have planted it)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise PermissionError(f"{folder} is not a folder")
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{folder} is not private to this user (owner {info.st_uid}, mode "
                              f"{oct(info.st_mode & 0o777)})")


def peer_uid(connection: socket.socket) -> int:
    """The user id of the process at the other end (Linux ``SO_PEERCRED``)."""
    credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", credentials)[1])


def send(connection: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    payload = HEADER.pack(len(data)) + data
    if fds:
        sent = socket.send_fds(connection, [payload], fds)
        if sent < len(payload):
            connection.sendall(payload[sent:])
    else:
        connection.sendall(payload)


def receive(connection: socket.socket, with_fds: bool = False) -> tuple[dict[str, Any] | None, list[int]]:
    """The next message and the descriptors that came with it; (None, []) when the other side closed."""
    fds: list[int] = []
    if with_fds:
        head, fds, _, _ = socket.recv_fds(connection, HEADER.size, FDS)
    else:
        head = connection.recv(HEADER.size)
    if not head:
        return None, fds
    head += _exactly(connection, HEADER.size - len(head))
    (size,) = HEADER.unpack(head)
    if size > MAX_MESSAGE:
        raise ProtocolError(f"message of {size} bytes")
    return json.loads(_exactly(connection, size)), fds


def _exactly(connection: socket.socket, size: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = connection.recv(size)
        if not chunk:
            raise ProtocolError("connection closed mid-message")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def identity() -> dict[str, str]:
    """What must match between a call and the worker: mitk's version and the Python that runs it."""
    from mitk.constants import __version__

    return {"version": __version__, "python": sys.executable}
