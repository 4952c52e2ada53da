"""A plain DICOM series read without importing pydicom: the fast path of ``mitk convert``.

A folder (or one file) whose every file :func:`~mitk.io.dicom.header.parse_header` reads — CT, MR or PET
images in a native little-endian transfer syntax, one frame each — and which holds exactly one regular volume is
read here: the same slice records, grouping, geometry checks, assembly and summary as
:func:`mitk.io.dicom.read_dicom`, from headers parsed without pydicom. Anything else gives ``None`` and the caller
reads the input with :func:`~mitk.io.dicom.read_dicom`, so every message, warning and refusal stays its.
"""

from __future__ import annotations

import os
from pathlib import Path

from mitk.errors import MitkError
from mitk.image import Image
from mitk.io.dicom import read_series
from mitk.io.dicom.grouping import SliceRecord, _group
from mitk.io.dicom.header import Unsupported, parse_header
from mitk.io.dicom.series import NotDicomError, header_records


def read_native_series(path: str | Path) -> Image | None:
    """The one regular volume under ``path`` (a folder searched recursively, or a file), read without pydicom;
    ``None`` when anything there needs pydicom or :func:`~mitk.io.dicom.read_dicom`'s handling (several series,
    an irregular stack, a file it skips or refuses)."""
    path = Path(path)
    files = _files(path)
    if not files:
        return None
    records: list[SliceRecord] = []
    for file, name in files:
        try:
            header = parse_header(file)
            found = header_records(header, header.pixel_offset, file, None, name, file.stat().st_size)
        except (Unsupported, NotDicomError, MitkError, OSError):
            return None
        if len(found) != 1:
            return None
        records.extend(found)
    try:
        series = _group(records)
        if len(series) != 1 or series[0].kind != "volume" or series[0].problem is not None:
            return None
        return read_series(series[0], path)
    except Unsupported:  # a value (of the sidecar's, say) that only pydicom converts as pydicom does
        return None


def _files(path: Path) -> list[tuple[Path, str]]:
    """The files :func:`mitk.io.dicom.list_series` would look at, with the names it gives them."""
    if path.is_file():
        return [] if path.name.lower().endswith(".zip") else [(path, path.name)]
    found = []
    for folder, directories, names in os.walk(path):
        directories.sort()
        for name in sorted(names):
            file = Path(folder) / name
            found.append((file, os.path.relpath(file, path)))
    return found
