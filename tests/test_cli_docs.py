"""docs/cli.md's command table names every command the CLI has (built from the task table at run time)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PAGE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def leaf_commands(command: Any, prefix: tuple[str, ...] = ()) -> Iterator[str]:
    children = getattr(command, "commands", None)
    if not children:
        yield " ".join(prefix)
        return
    for name, child in sorted(children.items()):
        yield from leaf_commands(child, (*prefix, name))


def documented() -> set[str]:
    """Each ``mitk A B`` of the table's first column, with ``A|B|C`` alternatives expanded."""
    names: set[str] = set()
    cells = [row.split(" | ")[0] for row in re.findall(r"^\| `mitk .*$", PAGE.read_text(), re.MULTILINE)]
    for cell in (name for first in cells for name in re.findall(r"`mitk ([^`]*)`", first)):
        words = cell.replace("\\|", "|").split()
        first = words[0]
        second = words[1].split("|") if len(words) > 1 else []
        names.add(first)
        names.update(f"{first} {word}" for word in second if re.fullmatch(r"[a-z]+", word))
    return names


def test_the_table_names_every_command() -> None:
    import typer

    from mitk.cli import build_app

    commands = set(leaf_commands(typer.main.get_command(build_app())))
    assert len(commands) > 15
    missing = sorted(command for command in commands if command not in documented())
    assert not missing, f"docs/cli.md's table lacks: {missing}"
