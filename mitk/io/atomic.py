"""Atomic output: write to a temporary file beside the target, then rename it into place.

Every file mitk writes goes through :func:`check_output` (and so :func:`refuse_inputs`) first: no output,
companion, report, manifest or checkpoint ever lands on an input of the same call.

Temporary files are named ``.mitk-<host>-<pid>-<random>.partial<suffix>``: short (a long output name never
becomes an illegal temporary name), and recognisable, so that a later run removes those left by a killed
process (:func:`remove_stale_partials`) and never those of a process that still runs.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mitk.errors import OutputExistsError, UsageError

COMPOUND_SUFFIXES = (".nii.gz", ".tar.gz", ".gipl.gz")
NAME_MAX = 255
"""Bytes in one file name on the file systems mitk writes to (ext4, xfs, btrfs, APFS, NTFS in UTF-16 units)."""
PARTIAL_PATTERN = re.compile(r"^\.mitk-(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[0-9a-f]{8}\.partial")


def split_suffix(path: Path) -> tuple[str, str]:
    """Split a file name into stem and suffix, treating ``.nii.gz`` as one suffix."""
    name = path.name
    for suffix in COMPOUND_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)], name[-len(suffix):]
    return path.stem, path.suffix


# ---------------------------------------------------------------------------------------------------
# Never over an input
# ---------------------------------------------------------------------------------------------------


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare by the absolute name
        return Path(os.path.abspath(path))


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return None
    return status.st_dev, status.st_ino


@dataclass(frozen=True)
class InputFiles:
    """The inputs of one call, by resolved path and by inode (so symlinks and hard links count too)."""

    by_path: dict[Path, Path]
    by_inode: dict[tuple[int, int], Path]

    @classmethod
    def of(cls, inputs: Iterable[str | os.PathLike[str]]) -> InputFiles:
        by_path: dict[Path, Path] = {}
        by_inode: dict[tuple[int, int], Path] = {}
        for source in map(Path, inputs):
            by_path.setdefault(_resolved(source), source)
            inode = _inode(source)
            if inode is not None:
                by_inode.setdefault(inode, source)
        return cls(by_path, by_inode)

    def __add__(self, other: InputFiles) -> InputFiles:
        return InputFiles({**other.by_path, **self.by_path}, {**other.by_inode, **self.by_inode})

    def owner(self, target: Path) -> Path | None:
        """The input that ``target`` is (by name or by inode), or None."""
        found = self.by_path.get(_resolved(target))
        if found is None and self.by_inode:
            inode = _inode(target)
            found = self.by_inode.get(inode) if inode is not None else None
        return found


NO_INPUTS = InputFiles({}, {})


def model_files(weights: str | os.PathLike[str] | None) -> tuple[Path, ...]:
    """The files of a model given with ``--weights`` (or ``weights=``): inputs like the images, never to be written
    over. A checkpoint file is itself; a bundle or model folder is every file in it (symbolic links not
    followed into other folders); nothing given, nothing."""
    if weights is None:
        return ()
    path = Path(weights)
    if not path.is_dir():
        return (path,)
    found = [path]
    for folder, _, names in os.walk(path):
        found.extend(Path(folder) / name for name in names)
    return tuple(found)


def refuse_inputs(target: str | os.PathLike[str],
                  inputs: InputFiles | Iterable[str | os.PathLike[str]]) -> None:
    """Raise :class:`UsageError` naming ``target`` when it is one of ``inputs``.

    Compared by resolved path and by inode, so a symlink to an input or a hard link of one is refused too.
    No flag (not even ``--overwrite``) lifts this: mitk never writes over the files it reads in the same call.
    Pass an :class:`InputFiles` to check many targets against many inputs cheaply.
    """
    files = inputs if isinstance(inputs, InputFiles) else InputFiles.of(inputs)
    source = files.owner(Path(target))
    if source is not None:
        raise UsageError(f"refusing to write over the input {source} (pick another output name)", Path(target))


def check_name_length(target: Path) -> None:
    """Refuse a file name longer than the file system allows, before any work."""
    size = len(os.fsencode(target.name))
    if size > NAME_MAX:
        raise UsageError(f"file name too long ({size} bytes; the limit is {NAME_MAX})", target)


def check_output(target: Path, overwrite: bool,
                 inputs: InputFiles | Iterable[str | os.PathLike[str]] = ()) -> None:
    """Refuse to write over an input, an overlong name, or an existing file without ``overwrite``."""
    target = Path(target)
    refuse_inputs(target, inputs)
    check_name_length(target)
    if target.is_dir():
        raise UsageError("output path is a directory", target)
    if target.exists() and not overwrite:
        raise OutputExistsError("output exists already (use --overwrite to replace it)", target)


# ---------------------------------------------------------------------------------------------------
# Temporary files: short names, and the leftovers of killed runs
# ---------------------------------------------------------------------------------------------------


@functools.cache
def _host_tag() -> str:
    """Six hex digits of this host's name: PIDs only mean something on the host that made them."""
    import hashlib
    import socket

    return hashlib.sha1(socket.gethostname().encode(), usedforsecurity=False).hexdigest()[:6]


_CLEANED: set[Path] = set()


def _temporary_name(suffix: str) -> str:
    return f".mitk-{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}.partial{suffix}"


def _process_runs(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # another user's process, or a PID we cannot ask about: assume it runs
    return True


def remove_stale_partials(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files that killed mitk processes on this host left in ``directory``.

    Only names mitk makes are touched, and only when their process is gone: a concurrent run's temporary
    file, or one made on another host sharing the folder, is left alone. Returns the paths removed.
    """
    directory = Path(directory)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        match = PARTIAL_PATTERN.match(entry.name)
        if match is None or match["host"] != _host_tag() or _process_runs(int(match["pid"])):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def _remove_stale_once(directory: Path) -> None:
    key = _resolved(directory)
    if key not in _CLEANED:
        _CLEANED.add(key)
        remove_stale_partials(directory)


def _create_temporary(directory: Path, suffix: str) -> Path:
    name = _temporary_name(suffix)
    if len(os.fsencode(name)) > NAME_MAX:
        raise UsageError(f"file name suffix too long ({suffix!r})", directory / name)
    for _ in range(100):
        path = directory / _temporary_name(suffix)
        try:
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as usual
        except FileExistsError:
            continue
        os.close(handle)
        return path
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(directory))


def check_writable_folder(folder: str | os.PathLike[str]) -> None:
    """Raise :class:`UsageError` when files cannot be created in ``folder`` (or, if it does not exist yet,
    in its nearest existing parent): read-only file systems, missing permissions, a file in the way."""
    folder = Path(folder)
    probe_in = folder
    while not probe_in.exists() and probe_in != probe_in.parent:
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise UsageError(f"cannot create the output folder: {probe_in} is not a folder", folder)
    try:
        os.unlink(_create_temporary(probe_in, ""))
    except OSError as error:
        reason = error.strerror or str(error)
        raise UsageError(f"cannot write in the output folder ({reason})", folder) from None


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], overwrite: bool = False,
                inputs: InputFiles | Iterable[str | os.PathLike[str]] = ()) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s directory; on success rename it to ``target``.

    The temporary file keeps ``target``'s suffix (writers pick the format from it) but not its stem, so
    its name stays short. On any error, including ``KeyboardInterrupt``, it is removed, so no partial output
    is ever left at ``target``; one left by a killed process is removed by the next write to that folder.
    """
    target = Path(target)
    check_output(target, overwrite, inputs)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_once(target.parent)
    temporary = _create_temporary(target.parent, split_suffix(target)[1])
    try:
        yield temporary
        if not overwrite and target.exists():  # appeared while we were writing
            raise OutputExistsError("output exists already (use --overwrite to replace it)", target)
        os.replace(temporary, target)
    except OSError as error:  # "disk full" should name the output, not a temporary file the user never saw
        if error.filename is None or os.fspath(error.filename) == os.fspath(temporary):
            error.filename = os.fspath(target)
        if error.filename2 is not None and os.fspath(error.filename2) == os.fspath(temporary):
            error.filename2 = None
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def write_text_atomic(target: str | os.PathLike[str], text: str, overwrite: bool = False,
                      inputs: InputFiles | Iterable[str | os.PathLike[str]] = ()) -> Path:
    """Write a text file atomically."""
    with atomic_path(target, overwrite=overwrite, inputs=inputs) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(target)
