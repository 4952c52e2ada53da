"""Output for people and scripts: one-line messages on stderr as plain text, one JSON document on stdout.

Used by the CLI and by the command bodies that tasks declare (``mitk evaluate <task>``); rich is imported only
when something is printed.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mitk.env import env_flag
from mitk.errors import MitkWarning, UsageError


@dataclass
class GlobalState:
    debug: bool = env_flag("MITK_DEBUG")
    quiet: bool = False


STATE = GlobalState()


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
    if STATE.quiet:
        return
    if label is None and style is None:  # unstyled: the line rich would print, without importing rich
        sys.stderr.write(plain(message) + "\n")
        return
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
    package = Path(__file__).resolve().parent
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


ELLIPSIS = "…"


def elide_middle(text: str, width: int) -> str:
    """``text`` in at most ``width`` terminal cells: whole when it fits; otherwise its start and its end around
    ``…``, the end first: the last part of a path (the file name) stays whole whenever it fits, and the end of
    the text is never cut."""
    from rich.cells import cell_len

    if cell_len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:max(width, 0)]
    name = text.replace("\\", "/").rsplit("/", 1)[-1]
    budget = width - 1  # the cells left besides the ellipsis
    tail = ""
    if cell_len(name) > budget:  # a name too long for the cell: as much of its end as fits
        for character in reversed(text):
            if cell_len(character + tail) > budget:
                break
            tail = character + tail
        return ELLIPSIS + tail
    tail = name
    while len(tail) < len(text):  # a short name keeps its nearest folders, whole, in up to half the cell
        cut = max(text.rfind("/", 0, len(text) - len(tail) - 1), text.rfind("\\", 0, len(text) - len(tail) - 1))
        longer = text[cut + 1:]
        if cell_len(longer) > budget // 2:
            break
        tail = longer
    head = ""
    for character in text[:len(text) - len(tail)]:
        if cell_len(head + character) + cell_len(tail) > budget:
            break
        head += character
    return head + ELLIPSIS + tail


class PathCell:
    """A table cell holding a path (or a case name): printed as plain text, and when its column is too narrow,
    elided in the middle (:func:`elide_middle`) so that the file name stays visible. Rich tables cut or fold
    text from the right, which keeps the start of a long install path and loses the name."""

    def __init__(self, path: object) -> None:
        self.text = plain(path)

    def __rich_measure__(self, console: Any, options: Any) -> Any:
        from rich.cells import cell_len
        from rich.measure import Measurement

        full = cell_len(self.text)
        name = cell_len(self.text.replace("\\", "/").rsplit("/", 1)[-1]) + 1
        return Measurement(min(full, name, options.max_width), min(full, options.max_width))

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        from rich.text import Text

        yield Text(elide_middle(self.text, options.max_width), no_wrap=True, overflow="ignore", end="")


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
