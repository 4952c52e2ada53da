"""Atomic output: write to a temporary file beside the target, then rename it into place."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mitk.errors import OutputExistsError, UsageError

COMPOUND_SUFFIXES = (".nii.gz", ".tar.gz")


def split_suffix(path: Path) -> tuple[str, str]:
    """Split a file name into stem and suffix, treating ``.nii.gz`` as one suffix."""
    name = path.name
    for suffix in COMPOUND_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)], name[-len(suffix):]
    return path.stem, path.suffix


def check_output(target: Path, overwrite: bool, inputs: tuple[Path, ...] = ()) -> None:
    """Refuse to write over an input, or over an existing file without ``overwrite``."""
    resolved = target.resolve()
    for source in inputs:
        with contextlib.suppress(OSError):
            if source.exists() and (resolved == source.resolve() or target.samefile(source)):
                raise UsageError(f"refusing to write the output over the input {source}", target)
    if target.exists() and not overwrite:
        raise OutputExistsError("output exists already (use --overwrite to replace it)", target)
    if target.is_dir():
        raise UsageError("output path is a directory", target)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], overwrite: bool = False,
                inputs: tuple[Path, ...] = ()) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s directory; on success rename it to ``target``.

    The temporary file keeps ``target``'s suffix (writers pick the format from it). On any error,
    including ``KeyboardInterrupt``, it is removed, so no partial output is ever left at ``target``.
    """
    target = Path(target)
    check_output(target, overwrite, inputs)
    target.parent.mkdir(parents=True, exist_ok=True)
    stem, suffix = split_suffix(target)
    handle, name = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".partial{suffix}", dir=target.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        if not overwrite and target.exists():  # appeared while we were writing
            raise OutputExistsError("output exists already (use --overwrite to replace it)", target)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(target: str | os.PathLike[str], text: str, overwrite: bool = False) -> Path:
    """Write a text file atomically."""
    with atomic_path(target, overwrite=overwrite) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(target)
