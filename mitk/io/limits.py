"""Size limits that keep a hostile or damaged input from exhausting memory.

Every reader checks the size an input's header claims *before* it allocates or decompresses, and then reads
no more than that size:

- ``MITK_MAX_IMAGE_BYTES`` (default 32 GiB): the voxel data of one image as read (a NIfTI file's data, a
  DICOM series' assembled volume or one DICOM file's frames), and any single zip member.
- ``MITK_MAX_ZIP_BYTES`` (default 64 GiB): the declared uncompressed size of all members of one zip.

Both accept ``512M``, ``32G``, ``1T`` or a plain number of bytes (see :func:`mitk.env.env_size`).
Zip members are read in chunks of at most :data:`CHUNK` bytes, so that a member whose compressed data
inflates beyond the size its central-directory entry declares never costs more than one chunk.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from mitk.env import env_size
from mitk.errors import InputError

MAX_IMAGE_BYTES = "MITK_MAX_IMAGE_BYTES"
MAX_ZIP_BYTES = "MITK_MAX_ZIP_BYTES"
DEFAULT_MAX_IMAGE_BYTES = 32 * 2**30
DEFAULT_MAX_ZIP_BYTES = 64 * 2**30
CHUNK = 1 << 20
"""Largest single read from a zip member (bounds what one lying deflate stream can inflate at once)."""
ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
"""Compression methods read from zips: these inflate in bounded steps (bzip2 and LZMA do not in zipfile)."""


def max_image_bytes() -> int:
    """The largest image (voxel data) mitk reads, in bytes."""
    return env_size(MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_BYTES)


def max_zip_bytes() -> int:
    """The largest total uncompressed size of a zip's members, in bytes."""
    return env_size(MAX_ZIP_BYTES, DEFAULT_MAX_ZIP_BYTES)


def check_limits() -> None:
    """Read both limits now, so that a malformed value is a usage error (exit 2) before a batch starts, not a
    failure of every case."""
    max_image_bytes()
    max_zip_bytes()


def format_bytes(count: int) -> str:
    """``1536`` → ``1.5 KiB``; exact bytes below 1 KiB."""
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{count} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def array_bytes(shape: Sequence[int], dtype: Any) -> int:
    """Bytes an array of ``shape`` and ``dtype`` needs, in Python integers (no overflow for any shape)."""
    count = np.dtype(dtype).itemsize
    for n in shape:
        count *= max(int(n), 0)
    return count


def check_image_bytes(count: int, path: str | Path | None, what: str = "image data") -> None:
    """Refuse ``count`` bytes of ``what`` above ``MITK_MAX_IMAGE_BYTES``, before anything is allocated."""
    limit = max_image_bytes()
    if count > limit:
        raise InputError(f"{what} ({format_bytes(count)}) is over the limit of {format_bytes(limit)} "
                         f"(set {MAX_IMAGE_BYTES} to read larger images)", path)


def allocate(shape: Sequence[int], dtype: Any, path: str | Path | None, what: str = "image data") -> np.ndarray:
    """``np.empty(shape, dtype)`` after the size check; running out of memory is an InputError, not a crash."""
    count = array_bytes(shape, dtype)
    check_image_bytes(count, path, what)
    try:
        return np.empty(tuple(int(n) for n in shape), dtype=dtype)
    except MemoryError:
        raise InputError(f"not enough memory for {what} ({format_bytes(count)})", path) from None


def check_inflated_size(stream: Any, path: str | Path | None, what: str = "deflated data") -> int:
    """Inflate the raw deflate ``stream`` in bounded steps, counting; refuse it above ``MITK_MAX_IMAGE_BYTES``.

    For formats whose reader inflates everything in one call (pydicom's Deflated Explicit VR Little
    Endian): run this first, so that a small file cannot inflate to many gigabytes. Returns the size.
    """
    limit = max_image_bytes()
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        while not inflater.eof:
            compressed = inflater.unconsumed_tail or stream.read(CHUNK)
            if not compressed:
                break
            total += len(inflater.decompress(compressed, CHUNK))
            if total > limit:
                raise InputError(f"{what} inflates to more than the limit of {format_bytes(limit)} "
                                 f"(set {MAX_IMAGE_BYTES} to read larger images)", path)
    except zlib.error as error:
        raise InputError(f"corrupt {what} ({error})", path) from None
    return total


# ---------------------------------------------------------------------------------------------------
# Zip archives
# ---------------------------------------------------------------------------------------------------
def zip_members(archive: zipfile.ZipFile, path: Path) -> tuple[list[zipfile.ZipInfo], list[tuple[str, str]]]:
    """The file members of ``archive`` that mitk may read, and ``(name, reason)`` for those it must skip.

    Decided from the central directory alone, before any member is decompressed: a zip whose members
    together declare more than ``MITK_MAX_ZIP_BYTES`` is refused; a member over ``MITK_MAX_IMAGE_BYTES``,
    an encrypted one, or one compressed other than stored/deflated is skipped. Folders and macOS
    ``__MACOSX/`` resource forks are left out silently.
    """
    members = sorted((info for info in archive.infolist()
                      if not info.is_dir() and not info.filename.startswith("__MACOSX/")),
                     key=lambda info: info.filename)
    total = sum(info.file_size for info in members)
    if total > max_zip_bytes():
        raise InputError(f"zip members declare {format_bytes(total)} uncompressed, over the limit of "
                         f"{format_bytes(max_zip_bytes())} (set {MAX_ZIP_BYTES} to read larger archives)", path)
    limit = max_image_bytes()
    kept: list[zipfile.ZipInfo] = []
    skipped: list[tuple[str, str]] = []
    for info in members:
        if info.flag_bits & 0x1:
            skipped.append((info.filename, "encrypted member"))
        elif info.compress_type not in ZIP_METHODS:
            skipped.append((info.filename, f"compression method {info.compress_type} is not supported "
                                           "(only stored and deflated)"))
        elif info.file_size > limit:
            skipped.append((info.filename, f"member of {format_bytes(info.file_size)} is over the limit of "
                                           f"{format_bytes(limit)} (set {MAX_IMAGE_BYTES} to read larger files)"))
        else:
            kept.append(info)
    return kept, skipped


class ChunkedMember(io.RawIOBase):
    """A zip member stream whose reads decompress at most :data:`CHUNK` bytes at a time.

    ``zipfile`` stops at the member's declared size, but inflates up to the requested length in one step
    before trimming; reading through this wrapper keeps that step small whatever length a caller asks for
    (pydicom asks for an element's declared length, which a damaged file can set to 4 GiB).
    """

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__()
        self._stream = stream

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._stream.seekable()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._stream.seek(offset, whence)

    def tell(self) -> int:
        return self._stream.tell()

    def read(self, size: int | None = -1) -> bytes:
        parts: list[bytes] = []
        left = -1 if size is None or size < 0 else size
        while left != 0:
            part = self._stream.read(CHUNK if left < 0 else min(left, CHUNK))
            if not part:
                break
            parts.append(part)
            if left > 0:
                left -= len(part)
        return b"".join(parts)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        part = self._stream.read(min(len(view), CHUNK))
        view[: len(part)] = part
        return len(part)

    def readall(self) -> bytes:
        return self.read(-1)

    def close(self) -> None:
        self._stream.close()
        super().close()


def open_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> ChunkedMember:
    """Open one member for reading in bounded steps."""
    return ChunkedMember(archive.open(info))


def read_member(path: Path, member: str) -> bytes:
    """The whole of one member of the zip ``path``, refused above ``MITK_MAX_IMAGE_BYTES`` before reading."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(member)
            check_image_bytes(info.file_size, f"{path.name}:{member}", "zip member")
            with open_member(archive, info) as stream:
                return stream.read()
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, RuntimeError, NotImplementedError,
            zlib.error) as error:
        raise InputError(f"unreadable zip member ({type(error).__name__}: {error})",
                         f"{path.name}:{member}") from None
