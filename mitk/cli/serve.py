"""``mitk serve``: a warm worker for per-file calls (shell loops, PACS hooks): torch, MONAI and the plugins
stay imported, and calls made with ``MITK_SERVE=1`` run in it instead of starting Python afresh."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Annotated, Any

import typer

from mitk.cli.common import say
from mitk.errors import UsageError

EPILOG = ("Use it for many separate calls (a loop over files, a hook per study); one call with many inputs is "
          "still the fastest way. The worker listens on a Unix socket only its user can open, runs each call in "
          "a fresh child with the caller's folder, environment and terminal, and stops after --idle-timeout.")


def serve(
    idle_timeout: Annotated[float, typer.Option("--idle-timeout", min=1.0,
                                                help="Stop after this many seconds without a call.")] = 900.0,
    detach: Annotated[bool, typer.Option("--detach", help="Run in the background; return once it listens.")
                      ] = False,
    stop: Annotated[bool, typer.Option("--stop", help="Stop the running worker.")] = False,
    status: Annotated[bool, typer.Option("--status", help="Say whether a worker runs (exit 0) or not (1).")
                      ] = False,
) -> None:
    """Keep a warm worker: calls made with MITK_SERVE=1 in their environment hand their job to it.

    The call behaves exactly as it would alone (same outputs, lines, exit status and manifests; Ctrl-C cancels
    it); without a running worker, MITK_SERVE=1 calls run as usual (MITK_SERVE=require fails instead).
    """
    from mitk.serve.client import ask
    from mitk.serve.protocol import socket_path

    if stop or status:
        answer = ask({"stop": True} if stop else {"status": True})
        if answer is None:
            say(f"no warm worker listens at {socket_path()}")
            raise typer.Exit(1)
        if stop:
            _wait_gone(socket_path())
        say("stopped the warm worker" if stop else
            f"a warm worker (pid {answer.get('pid')}, mitk {answer.get('version')}) listens at {socket_path()}; "
            f"models kept: {answer.get('models', 0)} of {answer.get('model_capacity', 0)}, calls that found "
            f"theirs loaded: {answer.get('model_hits', 0)}")
        return
    if detach:
        raise typer.Exit(_detach(idle_timeout))
    _run(idle_timeout, lambda line: say(line))


def _wait_gone(path: object, seconds: float = 10.0) -> None:
    """Return once the stopped worker has removed its socket (or after ``seconds``)."""
    import time
    from pathlib import Path

    deadline = time.monotonic() + seconds
    while Path(str(path)).exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _run(idle_timeout: float, ready: object) -> None:
    from mitk.serve.models import ModelCache, capacity
    from mitk.serve.protocol import socket_path
    from mitk.serve.worker import AlreadyRunning
    from mitk.serve.worker import serve as serve_forever

    try:
        serve_forever(_job, socket_path(), idle_timeout, _preload, ready,  # type: ignore[arg-type]
                      ModelCache(capacity()))
    except AlreadyRunning as running:
        raise UsageError(str(running)) from None
    except PermissionError as refused:
        raise UsageError(str(refused)) from None


_SNAPSHOT: dict[str, str] = {}
_THREADS: list[int] = []
_COMMAND: list[Any] = []


def _preload() -> None:
    """What every network call would import: torch, MONAI, the plugins and the command line (built once)."""
    import gc

    import monai  # noqa: F401
    import torch

    import mitk.executors
    import mitk.runner.model  # noqa: F401
    from mitk.cli import build_app
    from mitk.plugin_manager import get_registry
    from mitk.provenance import library_versions

    get_registry()
    _COMMAND.append(_parsed_once(typer.main.get_command(build_app())))
    _SNAPSHOT.update({key: value for key, value in os.environ.items() if key.startswith("MITK_")})
    _THREADS.append(torch.get_num_threads())
    library_versions()  # read once here, not by each call's provenance
    gc.collect()
    gc.freeze()  # the children's collections leave these alone: fewer copied pages per call


def _job(argv: list[str]) -> None:
    """One call, in its forked child: the caller's plugin switches and thread count, then the command line (the
    one built at start-up, when the caller's plugin switches are the worker's: the same task table)."""
    import torch

    from mitk.cli import main
    from mitk.plugin_manager import forget_installed_plugins

    switches = {key: value for key, value in os.environ.items() if key.startswith("MITK_")}
    command = _COMMAND[0] if _COMMAND else None
    if {key: value for key, value in switches.items() if not key.startswith("MITK_SERVE")} != {
            key: value for key, value in _SNAPSHOT.items() if not key.startswith("MITK_SERVE")}:
        forget_installed_plugins()
        command = None  # other plugin switches: another task table, so the command line is built afresh
    threads = os.environ.get("OMP_NUM_THREADS", "")
    wanted = int(threads) if threads.isdigit() and int(threads) > 0 else _THREADS[0]
    if torch.get_num_threads() != wanted:  # setting it again costs a new thread pool, as a local call does not
        torch.set_num_threads(wanted)
    main(argv, command=command)


def _parsed_once(command: Any) -> Any:
    """Parse an empty command line with each command once, callbacks off, so that click's parsers and the type
    checks they make are warm in every child."""
    import click

    with contextlib.suppress(Exception), command.make_context("mitk", [], resilient_parsing=True) as context:
        for name, sub in getattr(command, "commands", {}).items():
            with contextlib.suppress(Exception):
                _parsed_once_under(sub, name, context, click)
    return command


def _parsed_once_under(command: Any, name: str, parent: Any, click: Any) -> None:
    with command.make_context(name, [], parent=parent, resilient_parsing=True) as context:
        if isinstance(command, click.Group):
            for sub_name, sub in command.commands.items():
                with contextlib.suppress(Exception):
                    _parsed_once_under(sub, sub_name, context, click)


def _detach(idle_timeout: float) -> int:
    """Start the worker in a new session, detached from this terminal; return 0 once it listens."""
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        with os.fdopen(read_end) as pipe:
            line = pipe.readline().strip()
        if not line:
            sys.stderr.write("mitk: error: the warm worker did not start (run `mitk serve` to see why)\n")
            return 1
        if line.startswith("error:"):
            sys.stderr.write(f"mitk: {line}\n")
            return 2
        say(line)
        return 0
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)

    def ready(line: str) -> None:
        os.write(write_end, (line + "\n").encode())
        os.close(write_end)

    try:
        _run(idle_timeout, ready)
    except UsageError as error:
        os.write(write_end, f"error: {error}\n".encode())
        os._exit(2)
    os._exit(0)
