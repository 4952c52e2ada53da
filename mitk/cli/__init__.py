"""The ``mitk`` command line. Each verb group lives in its own module; heavy imports happen inside commands."""

from __future__ import annotations

import logging
import signal
import sys
import traceback
from typing import Annotated, Any

import typer

from mitk.cli import boxes as boxes_cmd
from mitk.cli import convert as convert_cmd
from mitk.cli import deidentify as deidentify_cmd
from mitk.cli import evaluate as evaluate_cmd
from mitk.cli import info, plugins_cmd, tasks
from mitk.cli import manifest as manifest_cmd
from mitk.cli import plan as plan_cmd
from mitk.cli import preview as preview_cmd
from mitk.cli import replay as replay_cmd
from mitk.cli import report as report_cmd
from mitk.cli import sample as sample_cmd
from mitk.cli import serve as serve_cmd
from mitk.cli import train as train_cmd
from mitk.cli import warp as warp_cmd
from mitk.cli.common import STATE
from mitk.constants import __version__
from mitk.errors import MitkError


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


def build_app() -> typer.Typer:
    """The ``mitk`` command: the hand-written command groups, and a verb, a train and an evaluate command for
    each task of the task table (read from the registry in use, so a task a plugin adds gets them too)."""
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
    app.add_typer(plugins_cmd.app, name="plugins")
    app.command("info")(info.info)
    tasks.add_task_commands(app)
    app.add_typer(evaluate_cmd.build_app(), name="evaluate")
    app.add_typer(sample_cmd.app, name="sample")
    app.command("plan", epilog=plan_cmd.EPILOG)(plan_cmd.plan)
    app.add_typer(train_cmd.build_app(), name="train")
    app.add_typer(manifest_cmd.app, name="manifest")
    app.command("convert")(convert_cmd.convert)
    app.command("warp")(warp_cmd.warp)
    app.command("deidentify", epilog=deidentify_cmd.EPILOG)(deidentify_cmd.deidentify)
    app.command("preview")(preview_cmd.preview)
    app.command("serve", epilog=serve_cmd.EPILOG)(serve_cmd.serve)
    app.command("boxes")(boxes_cmd.boxes)
    app.command("report")(report_cmd.report)
    app.command("replay")(replay_cmd.replay)
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


def main(argv: list[str] | None = None) -> None:
    """Run the CLI, turning expected errors into one line on stderr and an exit status.

    SIGTERM is handled like Ctrl-C (exit 143 instead of 130), whether a command reports the interruption itself
    (a batch, training) or not (one line here); warnings from libraries are hidden unless
    ``--debug`` and counted in one line at the end.
    """
    import click

    from mitk.cli.common import library_warnings, plain
    from mitk.runner.batch import Interrupted, describe_error, is_ordinary, stop_on_signals

    def fail(message: str, code: int) -> int:
        sys.stderr.write(plain(message) + "\n")
        return code

    def interrupted(stop: BaseException | None) -> int:
        """A signal that no command reported itself: one line, and 130 (SIGINT) or 143 (SIGTERM)."""
        signum = stop.signum if isinstance(stop, Interrupted) else signal.SIGINT
        return fail(f"mitk: interrupted ({signal.Signals(signum).name})", 128 + signum)

    hidden: list[str] = []
    logger, shown = logging.getLogger("mitk"), logging.StreamHandler(sys.stderr)  # the library's log warnings
    shown.setLevel(logging.WARNING)
    logger.addHandler(shown)
    try:
        with stop_on_signals(), library_warnings() as hidden:
            result = interrupts_reach_main(typer.main.get_command(build_app()))(args=argv, standalone_mode=False)
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
