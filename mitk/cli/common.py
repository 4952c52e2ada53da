"""What the hand-written commands share: option types (Annotated, as Typer recommends) and, re-exported from
:mod:`mitk.console`, the global state and output to humans (stderr) and scripts (stdout JSON)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mitk import options
from mitk.cli.params import annotated
from mitk.console import (
    STATE,
    GlobalState,
    emit_json,
    library_warnings,
    message_text,
    parse_settings,
    plain,
    plain_table,
    say,
    stderr_console,
)

__all__ = ["BATCH_EPILOG", "STATE", "ExecutorChoice", "GlobalState", "emit_json", "library_warnings",
           "message_text", "parse_settings", "plain", "plain_table", "say", "stderr_console"]


@dataclass(frozen=True)
class ExecutorChoice:
    """``--executor``, ``--scheduler`` and ``--workers`` of a task verb."""

    name: str = "local"
    scheduler: str | None = None
    workers: int | None = None


# Option types of the hand-written commands, made from the declarations every task verb shares
if TYPE_CHECKING:  # the value types, for type checkers; Typer reads the declarations below
    JsonOption = bool
    OverwriteOption = bool
    SeriesOption = str | None
    SetOption = list[str] | None
    AllowResampleOption = bool
else:
    JsonOption = annotated(options.JSON)
    OverwriteOption = annotated(options.OVERWRITE)
    SeriesOption = annotated(options.SERIES)
    SetOption = annotated(options.SETTINGS)
    AllowResampleOption = annotated(options.ALLOW_RESAMPLE)

BATCH_EPILOG = ("Exit status: 0 all inputs succeeded; 1 failure; 2 usage error; "
                "3 partial (some inputs failed, the others were written).")
