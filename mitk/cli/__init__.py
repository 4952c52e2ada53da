"""The ``mitk`` command line. Each verb group lives in its own module; heavy imports happen inside commands."""

from __future__ import annotations

import importlib
import logging
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mitk.cli.common import STATE
from mitk.constants import __version__
from mitk.errors import MitkError

if TYPE_CHECKING:
    import click


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mitk {__version__}")
        raise typer.Exit()


def root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print less to stderr.")] = False,
) -> None:
    """mitk: medical image analysis from one command line. Exit status: 0 ok, 1 failure, 2 usage error,
    3 partial batch failure."""
    STATE.debug = STATE.debug or debug
    STATE.quiet = quiet


def _module(name: str) -> ModuleType:
    """``mitk.cli.<name>``, imported when its command is registered (a call builds only the verb it runs)."""
    return importlib.import_module(f"mitk.cli.{name}")


def _command(name: str, module: str, function: str, epilog: str | None = None) -> Callable[[typer.Typer], None]:
    def add(app: typer.Typer) -> None:
        found = _module(module)
        app.command(name, epilog=getattr(found, epilog) if epilog else None)(getattr(found, function))
    return add


def _group(name: str, module: str, built: bool = False) -> Callable[[typer.Typer], None]:
    def add(app: typer.Typer) -> None:
        found = _module(module)
        app.add_typer(found.build_app() if built else found.app, name=name)
    return add


TASKS = "<tasks>"
"""Where the task verbs (one per row of the task table) go among the commands."""
COMMANDS: dict[str, Callable[[typer.Typer], None]] = {
    "plugins": _group("plugins", "plugins_cmd"),
    "info": _command("info", "info", "info"),
    TASKS: lambda app: _module("tasks").add_task_commands(app),
    "evaluate": _group("evaluate", "evaluate", built=True),
    "sample": _group("sample", "sample"),
    "plan": _command("plan", "plan", "plan", epilog="EPILOG"),
    "train": _group("train", "train", built=True),
    "manifest": _group("manifest", "manifest"),
    "convert": _command("convert", "convert", "convert"),
    "warp": _command("warp", "warp", "warp"),
    "deidentify": _command("deidentify", "deidentify", "deidentify", epilog="EPILOG"),
    "preview": _command("preview", "preview", "preview"),
    "serve": _command("serve", "serve", "serve", epilog="EPILOG"),
    "boxes": _command("boxes", "boxes", "boxes"),
    "report": _command("report", "report", "report"),
    "replay": _command("replay", "replay", "replay"),
}
"""The commands in the order ``mitk --help`` lists them, each added by a function that imports its module."""
ROOT_FLAGS = ("--debug", "--quiet", "-q")


def invoked_command(argv: Sequence[str]) -> str | None:
    """The command a call names (its first word after the root flags), or None where the call needs the whole
    command tree: ``--help``, ``--version``, no command, an unknown option before the command."""
    for token in argv:
        if token in ROOT_FLAGS:
            continue
        return None if token.startswith("-") else token
    return None


def build_app(only: str | None = None) -> typer.Typer:
    """The ``mitk`` command: the hand-written command groups, and a verb, a train and an evaluate command for
    each task of the task table (read from the registry in use, so a task a plugin adds gets them too).

    With ``only`` naming a command (or a task verb), just that command is built under the root: what a call
    that runs it needs, without importing the modules of the others. Any other name builds them all (click
    then reports the unknown command as ever).
    """
    app = typer.Typer(
        name="mitk",
        help="Classify, detect, segment and register NIfTI and DICOM volumes with MONAI plugins.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        rich_markup_mode=None,  # plain click help: Typer's rich help costs ~0.2 s of imports on every --help
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(root)
    if only is not None and only != TASKS and only in COMMANDS:
        COMMANDS[only](app)
        return app
    if only is not None:
        tasks = _module("tasks")
        if only in tasks.task_names():
            tasks.add_task_commands(app, only=only)
            return app
    for add in COMMANDS.values():
        add(app)
    return app


def __getattr__(name: str) -> Any:
    """``mitk.cli.app``: the command built from the task table now in use."""
    if name == "app":
        return build_app()
    raise AttributeError(f"module 'mitk.cli' has no attribute {name!r}")


def interrupts_reach_main(command: Any) -> Any:
    """Wrap every callback of the click ``command`` tree so that an interruption leaves it as ``click.Abort``
    (from the :class:`~mitk.runner.batch.Interrupted`): Typer would turn a ``KeyboardInterrupt`` into a silent
    exit 130, even for SIGTERM. Returns ``command``."""
    import functools

    import click

    callback = command.callback
    if callback is not None:
        @functools.wraps(callback)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return callback(*args, **kwargs)
            except KeyboardInterrupt as stop:
                raise click.exceptions.Abort() from stop

        command.callback = guarded
    for subcommand in getattr(command, "commands", {}).values():
        interrupts_reach_main(subcommand)
    return command


def main(argv: list[str] | None = None, command: click.Command | None = None) -> None:
    """Run the CLI, turning expected errors into one line on stderr and an exit status.

    SIGTERM is handled like Ctrl-C (exit 143 instead of 130), whether a command reports the interruption itself
    (a batch, training) or not (one line here); warnings from libraries are hidden unless
    ``--debug`` and counted in one line at the end. ``command``: a command line already built (the warm worker
    builds it once); by default the one the invoked verb needs is built here.
    """
    import click

    from mitk.cli.common import library_warnings, plain
    from mitk.runner.batch import Interrupted, describe_error, is_ordinary, stop_on_signals
    from mitk.runner.imports import lean_nibabel_import

    def fail(message: str, code: int) -> int:
        sys.stderr.write(plain(message) + "\n")
        return code

    def interrupted(stop: BaseException | None) -> int:
        """A signal that no command reported itself: one line, and 130 (SIGINT) or 143 (SIGTERM)."""
        signum = stop.signum if isinstance(stop, Interrupted) else signal.SIGINT
        return fail(f"mitk: interrupted ({signal.Signals(signum).name})", 128 + signum)

    lean_nibabel_import()  # nibabel without the pydicom import it makes for NIfTI DICOM extensions
    hidden: list[str] = []
    logger, shown = logging.getLogger("mitk"), logging.StreamHandler(sys.stderr)  # the library's log warnings
    shown.setLevel(logging.WARNING)
    logger.addHandler(shown)
    try:
        with stop_on_signals(), library_warnings() as hidden:
            if command is None:  # the warm worker passes the command line it built once
                command = typer.main.get_command(build_app(invoked_command(sys.argv[1:] if argv is None else argv)))
            result = interrupts_reach_main(command)(args=argv, standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except click.exceptions.Exit as done:
        code = done.exit_code
    except click.ClickException as error:
        error.show()
        code = 2
    except (click.exceptions.Abort, KeyboardInterrupt) as stop:
        code = interrupted(stop.__cause__ if isinstance(stop, click.exceptions.Abort) else stop)
    except MitkError as error:
        if STATE.debug:
            traceback.print_exc()
        code = fail(f"mitk: error: {describe_error(error)}", error.exit_code)
    except (OSError, MemoryError) as error:  # disk full, read-only, name too long, permissions: not a bug
        if STATE.debug:
            traceback.print_exc()
        code = fail(f"mitk: error: {describe_error(error)}", 1)
    except Exception as error:  # an unexpected failure: still one line unless --debug
        if STATE.debug:
            traceback.print_exc()
        code = fail(f"mitk: error: {describe_error(error)}" if is_ordinary(error) else
                    f"mitk: internal error: {describe_error(error)} (run with --debug for details)", 1)
    finally:
        logger.removeHandler(shown)
    if hidden and not STATE.quiet:
        kinds = sorted({warning.split(":", 1)[0] for warning in hidden})
        sys.stderr.write(f"mitk: {len(hidden)} warning(s) from libraries hidden ({', '.join(kinds)}); "
                         "--debug shows them\n")
    sys.exit(code)
