"""The files an evaluation writes (CSV tables, pictures) and the inputs they must never replace."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mitk.errors import UsageError


def refuse_overwriting_inputs(target: Path, option: str, inputs: Iterable[Path]) -> None:
    """Refuse ``target`` when it is one of ``inputs`` by resolved path or by file identity (hard or
    symbolic links), whatever ``--overwrite`` says (the comparison is :class:`mitk.io.atomic.InputFiles`')."""
    from mitk.io.atomic import InputFiles

    source = InputFiles.of(inputs).owner(target)
    if source is not None:
        alias = "" if str(source) == str(target) else f" (the same file as {source})"
        raise UsageError(f"{option} {target} is an input of this command{alias}; refusing to write over it")


def input_files(paths: Iterable[Path]) -> list[Path]:
    """Every file read as an input: the files themselves, and every file inside a folder read as an image."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(Path(root) / name for root, _, names in os.walk(path) for name in names)
        else:
            files.append(path)
    return files


def write_table(rows: list[dict[str, Any]], path: Path, overwrite: bool, columns: Sequence[str]) -> None:
    """Write ``rows`` as a CSV with ``columns``, atomically (never a partial file, never over an existing one
    unless ``overwrite``)."""
    from mitk.io.atomic import atomic_path
    from mitk.runner.outputs import write_csv

    with atomic_path(path, overwrite=overwrite) as temporary:
        write_csv(rows, temporary, list(columns))
