"""What every command shares: global state, output to humans (stderr) and scripts (stdout JSON)."""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from mitk.env import env_flag
from mitk.errors import MitkWarning, UsageError


@dataclass(frozen=True)
class ExecutorChoice:
    """``--executor``, ``--scheduler`` and ``--workers`` of a task verb."""

    name: str = "local"
    scheduler: str | None = None
    workers: int | None = None


@dataclass
class GlobalState:
    debug: bool = env_flag("MITK_DEBUG")
    quiet: bool = False


STATE = GlobalState()

# ---------------------------------------------------------------------------------------------------
# Reusable option types (Annotated, as Typer recommends)
# ---------------------------------------------------------------------------------------------------
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout (messages go to "
                                                          "stderr).")]
PluginOption = Annotated[str | None, typer.Option("--plugin", "-p", help="Plugin to use (see `mitk plugins list`).")]
WeightsOption = Annotated[Path | None, typer.Option("--weights", "-w", help="Checkpoint file (.safetensors); "
                                                    "its plugin is used when --plugin is omitted.")]
SetOption = Annotated[list[str] | None, typer.Option(
    "--set", metavar="KEY=VALUE",
    help="Override a plugin setting (value parsed as JSON, else text; dots reach nested keys). Repeatable.")]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
SeriesOption = Annotated[str | None, typer.Option("--series", help="DICOM series to use: index or "
                                                                  "SeriesInstanceUID (see `mitk info DIR`).")]
OverwriteOption = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]
SkipExistingOption = Annotated[bool, typer.Option("--skip-existing",
                                                  help="Skip inputs whose output exists (status 'skipped').")]
ManifestOption = Annotated[Path | None, typer.Option("--manifest", help="Append one JSON line per input to "
                                                     "this file as each finishes.")]
ShardOption = Annotated[str | None, typer.Option(
    "--shard", metavar="I/N",
    help="Run only shard I (from 0) of N: a stable split of the inputs (see --shard-by), for job arrays "
         "(e.g. --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT). Merge the manifests with "
         "`mitk manifest merge`.")]
ShardByOption = Annotated[str, typer.Option(
    "--shard-by", metavar="hash|order",
    help="How --shard splits the inputs: hash (default; a case keeps its shard when files are added) or order "
         "(sorted paths dealt out in turn: shards within one case of each other; every shard must see the same "
         "inputs).")]
AllowResampleOption = Annotated[bool, typer.Option(
    "--allow-resample", help="Resample an irregular or gantry-tilted DICOM series onto a regular grid (with a "
                             "warning) instead of refusing it.")]

ExecutorOption = Annotated[str, typer.Option(
    "--executor", help="Where the cases run: local (this process, the default), dask, or an executor a plugin "
                       "adds (`mitk plugins list`).")]
SchedulerOption = Annotated[str | None, typer.Option(
    "--scheduler", help="--executor dask: the address of a running Dask scheduler (tcp://HOST:PORT).")]
WorkersOption = Annotated[int | None, typer.Option(
    "--workers", help="--executor dask: start a local cluster of N worker processes, one thread each "
                      "(default: one per CPU).")]

BATCH_EPILOG = ("Exit status: 0 all inputs succeeded; 1 failure; 2 usage error; "
                "3 partial (some inputs failed, the others were written).")


def stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    character = match.group()
    code = ord(character)
    if 0xDC80 <= code <= 0xDCFF:  # a byte of a file name that is not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return _ESCAPES.get(character) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def plain(text: object) -> str:
    """``text`` fit for a terminal line: control and bidirectional-override characters escaped (``\\n``,
    ``\\x1b``), bytes of file names that are not UTF-8 shown as ``\\xNN``. Never read as markup."""
    return _UNPRINTABLE.sub(_escape, str(text))


def message_text(message: str, *, label: str | None = None, style: str | None = None) -> Any:
    """A rich ``Text`` of ``message`` as plain text (brackets stay brackets), after an optional styled
    ``label`` such as ``failed``."""
    from rich.text import Text

    text = Text()
    if label:
        text.append(label, style=style)
        text.append(" ")
    text.append(plain(message))
    return text


def say(message: str, *, label: str | None = None, style: str | None = None) -> None:
    """A message for the human at the terminal (stderr), printed as plain text (see :func:`message_text`)."""
    if not STATE.quiet:
        stderr_console().print(message_text(message, label=label, style=style))


@contextlib.contextmanager
def library_warnings() -> Iterator[list[str]]:
    """Hide warnings raised by libraries (torch, MONAI, pydicom...) unless ``--debug``; yield the list of the
    hidden ones, for a one-line summary. mitk's own warnings are shown, one line each."""
    import warnings

    hidden: list[str] = []
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
            if STATE.debug:
                shown(message, category, filename, lineno, file, line)
            elif issubclass(category, MitkWarning) or _is_mitk_file(filename):
                first_line = (str(message).strip().splitlines() or [category.__name__])[0]
                sys.stderr.write(f"mitk: warning: {plain(first_line)}\n")
            else:
                hidden.append(f"{category.__name__}: {message}")

        warnings.showwarning = show
        yield hidden


def _is_mitk_file(filename: str) -> bool:
    package = Path(__file__).resolve().parents[1]
    try:
        return Path(filename).resolve().is_relative_to(package)
    except (OSError, RuntimeError, ValueError):
        return False


def emit_json(document: Any) -> None:
    """The one JSON document a command prints on stdout."""
    sys.stdout.write(json.dumps(document, indent=2, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def plain_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Aligned text columns (no rich: used on start-up-sensitive paths such as ``mitk plugins list``)."""
    cells = [[str(row.get(c) if row.get(c) is not None else "-") for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[n]) for r in cells)]) for n, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def parse_settings(pairs: list[str] | None) -> dict[str, Any]:
    """``["a=1", "net.channels=[8,16]"]`` → ``{"a": 1, "net": {"channels": [8, 16]}}``."""
    settings: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects KEY=VALUE, got {pair!r}")
        parts = [part.strip() for part in key.strip().split(".")]
        if not all(parts):
            raise UsageError(f"--set {pair}: a key cannot have an empty part (write a.b, not a..b or a.)")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        target = settings
        for depth, part in enumerate(parts[:-1]):
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise UsageError(f"--set {pair}: {'.'.join(parts[: depth + 1])} was set to a value already, "
                                 "so it has no keys to set")
        target[parts[-1]] = value
    return settings
