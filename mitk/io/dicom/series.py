"""Finding DICOM images in a file, a folder (recursively) or a zip, and reading their headers into slice records.

Headers are read with ``stop_before_pixels=True``. The records are grouped into series, split and classified by
:mod:`mitk.io.dicom.grouping`; the names other modules use from there are re-exported here.
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
import zlib
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from mitk.errors import InputError, MitkError
from mitk.io.dicom.grouping import SPLIT_KEYS, SeriesInfo, SeriesListing, SliceRecord, _group, select_series
from mitk.io.dicom.header import ParsedHeader
from mitk.io.dicom.pixels import FrameRef, PixelLayout, pixel_layout, raw_value
from mitk.io.limits import check_image_bytes, check_inflated_size, open_member, zip_members

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["NotDicomError", "SeriesInfo", "SeriesListing", "SliceRecord", "list_series", "read_header",
           "select_series"]

LOG = logging.getLogger("mitk.io.dicom")

SEGMENTATION_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
_PIXEL_TAG = {True: b"\xe0\x7f\x10\x00", False: b"\x7f\xe0\x00\x10"}


class NotDicomError(Exception):
    """The file is not a DICOM Part 10 image (skipped when scanning folders)."""


# ---------------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------------
def list_series(path: str | Path) -> SeriesListing:
    """Every DICOM image series under ``path`` (a file, a folder searched recursively, or a ``.zip``).

    A zip is checked from its central directory before any member is decompressed (see
    :func:`mitk.io.limits.zip_members`); a member that is too large, encrypted, compressed other than
    stored/deflated, or unreadable is skipped with a warning, and the other members' series are kept.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or directory", path)
    records: list[SliceRecord] = []
    skipped = 0
    if path.is_file() and not zipfile.is_zipfile(path):
        try:
            records = _read_records(path, None, None, path.name)
        except NotDicomError as error:
            raise InputError(str(error), path) from None
    else:
        for entry in _sources(path):
            name = entry.member if entry.member is not None else os.path.relpath(entry.file, path)
            try:
                if entry.problem is not None:
                    raise InputError(entry.problem)
                records.extend(_read_records(entry.file, entry.member, entry.opener, name, entry.size))
            except NotDicomError as error:
                LOG.debug("skipped %s: %s", name, error)
                skipped += 1
            except InputError as error:  # a broken DICOM file: say so, and carry on with the others
                LOG.warning("skipped %s: %s", name, str(error).removeprefix(f"{entry.file}: "))
                skipped += 1
    return SeriesListing(path, _group(records), skipped)


class _Source(NamedTuple):
    """One file to look at: on disk (``member`` None) or a zip member opened by ``opener``."""

    file: Path
    member: str | None = None
    opener: Callable[[], io.RawIOBase] | None = None
    size: int | None = None
    """The member's uncompressed size from the zip's central directory."""
    problem: str | None = None
    """Why the member is skipped without being read."""


def _sources(path: Path) -> Iterator[_Source]:
    if path.is_dir():
        for folder, directories, files in os.walk(path):
            directories.sort()
            for name in sorted(files):
                yield _Source(Path(folder) / name)
        return
    try:
        with zipfile.ZipFile(path) as archive:
            members, skipped = zip_members(archive, path)
            for name, problem in skipped:
                yield _Source(path, name, problem=problem)
            for info in members:
                yield _Source(path, info.filename, partial(open_member, archive, info), info.file_size)
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as error:
        raise InputError(f"not a readable zip archive ({error})", path) from None


def read_header(file: Path, opener: Callable[[], io.RawIOBase] | None = None) -> tuple[Dataset, int | None]:
    """The dataset without pixel data, and the file offset of its native (7FE0,0010) element if any.

    ``opener`` opens a zip member instead of ``file``; only the first 132 bytes are read to tell a DICOM
    file from any other, and the header up to the pixel data after that.
    """
    import pydicom

    try:
        handle: Any = opener() if opener is not None else open(file, "rb")  # noqa: SIM115
    except (OSError, RuntimeError, NotImplementedError, zipfile.BadZipFile) as error:
        raise InputError(f"cannot open ({getattr(error, 'strerror', None) or error})", file) from None
    with handle:
        try:
            preamble = handle.read(132)
        except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as error:
            raise InputError(f"unreadable compressed data ({type(error).__name__}: {error})", file) from None
        if len(preamble) < 132 or preamble[128:132] != b"DICM":
            raise NotDicomError("not a DICOM file (no 'DICM' marker after the 128-byte preamble)")
        try:
            _check_deflated(handle, file)
            handle.seek(0)
            dataset = pydicom.dcmread(handle, stop_before_pixels=True)
        except MitkError:
            raise
        except Exception as error:
            raise InputError(f"unreadable DICOM header ({type(error).__name__}: "
                             f"{str(error).splitlines()[0][:160] if str(error) else ''})", file) from None
        syntax = dataset.file_meta.get("TransferSyntaxUID")
        if syntax is None or syntax.is_deflated or syntax.is_encapsulated:
            return dataset, None
        offset = handle.tell()
        marker = handle.read(4)
        if marker != _PIXEL_TAG[syntax.is_little_endian]:
            if len(marker) < 4 and ("Rows" in dataset or "Image Storage" in _sop_name(dataset)):
                raise InputError(f"truncated file: it ends after {offset} bytes, before the pixel data", file)
            raise NotDicomError("DICOM file without image pixel data")
        return dataset, offset


def _check_deflated(handle: Any, file: Path) -> None:
    """pydicom inflates a deflated dataset in one call: count its inflated size in bounded steps first."""
    import pydicom

    handle.seek(132)  # after the preamble and 'DICM'
    meta = pydicom.filereader._read_file_meta_info(handle)
    syntax = meta.get("TransferSyntaxUID")
    if syntax is not None and pydicom.uid.UID(str(syntax)).is_deflated:
        check_inflated_size(handle, file, "deflated DICOM dataset")


def _read_records(file: Path, member: str | None, opener: Callable[[], io.RawIOBase] | None, name: str,
                  size: int | None = None) -> list[SliceRecord]:
    dataset, offset = read_header(file, opener)
    return header_records(dataset, offset, file, member, name, size)


def header_records(dataset: Dataset | ParsedHeader, offset: int | None, file: Path, member: str | None, name: str,
                   size: int | None = None) -> list[SliceRecord]:
    """The slice records of one file's header (one per frame); NotDicomError for a non-image object."""
    layout = pixel_layout(dataset)
    if layout.rows == 0 or layout.columns == 0:
        raise NotDicomError(f"DICOM object without an image ({_sop_name(dataset)})")
    sop_class = str(raw_value(dataset, "SOPClassUID") or "")
    if sop_class == SEGMENTATION_SOP_CLASS:
        raise NotDicomError("DICOM segmentation, not an image")
    uid = str(raw_value(dataset, "SeriesInstanceUID") or "")
    series_key = (uid,) if uid else ("", *(str(raw_value(dataset, k) or "") for k in
                                          ("StudyInstanceUID", "SeriesNumber", "Modality")))
    frames = _integer(raw_value(dataset, "NumberOfFrames"), 1)
    _check_frames(dataset, layout, frames, file.stat().st_size if size is None else size, file)
    common: dict[str, Any] = {"series_key": series_key, "sop_class": sop_class}
    if not isinstance(dataset, ParsedHeader) and ("PerFrameFunctionalGroupsSequence" in dataset
                                                  or "SharedFunctionalGroupsSequence" in dataset):
        return [_enhanced_record(dataset, file, member, offset, f, f"{name} frame {f + 1}", layout, common)
                for f in range(frames)]
    slope, intercept = _rescale(dataset)
    orientation = _floats(raw_value(dataset, "ImageOrientationPatient"), 6)
    position = _floats(raw_value(dataset, "ImagePositionPatient"), 3)
    spacing = _pixel_spacing(dataset)
    if frames > 1:
        offsets = _floats(raw_value(dataset, "GridFrameOffsetVector"), frames)
        records = []
        for f in range(frames):
            frame_position = None
            if offsets is not None and position is not None and orientation is not None:
                frame_position = _grid_frame_position(position, orientation, offsets, f)
            ref = FrameRef(file, dataset, member, f, offset, slope, intercept, layout)
            records.append(SliceRecord(ref, f"{name} frame {f + 1}", frame_position, orientation, spacing,
                                       **common))
        return records
    ref = FrameRef(file, dataset, member, None, offset, slope, intercept, layout)
    keys = {}
    for key in SPLIT_KEYS:
        value = raw_value(dataset, key)
        if value is not None:
            keys[key] = "\\".join(value) if isinstance(value, list) else str(value)
    return [SliceRecord(ref, name, None if position is None else np.array(position), orientation, spacing,
                        keys, **common)]


def _check_frames(dataset: Dataset | ParsedHeader, layout: PixelLayout, frames: int, size: int, file: Path) -> None:
    """Refuse, before any record or array exists, frames that no file of ``size`` bytes can hold or
    whose pixel data would exceed ``MITK_MAX_IMAGE_BYTES``."""
    syntax = None if isinstance(dataset, ParsedHeader) else dataset.file_meta.get("TransferSyntaxUID")
    # Every frame takes at least one bit of native data or one 8-byte item of encapsulated data; deflate
    # packs at most 1032 bytes into one.
    most = 8 * size * (1032 if syntax is not None and syntax.is_deflated else 1)
    if frames > most:
        raise InputError(f"NumberOfFrames {frames} is more than a file of {size} bytes can hold", file)
    frame_bits = layout.rows * layout.columns * max(layout.samples, 1) * max(layout.bits_allocated, 8)
    check_image_bytes(frames * frame_bits // 8, file, f"pixel data of {frames} frame{'s' if frames != 1 else ''} "
                      f"of {layout.columns}×{layout.rows}")


def _integer(value: Any, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def _enhanced_record(dataset: Dataset, file: Path, member: str | None, offset: int | None, frame: int,
                     name: str, layout: PixelLayout, common: dict[str, Any]) -> SliceRecord:
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    groups = [per_frame[frame] if per_frame is not None and frame < len(per_frame) else None,
              dataset.SharedFunctionalGroupsSequence[0] if dataset.get("SharedFunctionalGroupsSequence")
              else None]

    def find(sequence: str, keyword: str) -> Any:
        for group in groups:
            if group is not None and group.get(sequence):
                item = group[sequence][0]
                if keyword in item:
                    try:
                        return item.get(keyword)
                    except (ValueError, TypeError):  # pydicom could not convert the value: treat as absent
                        return None
        return None

    position = _floats(find("PlanePositionSequence", "ImagePositionPatient"), 3)
    orientation = _floats(find("PlaneOrientationSequence", "ImageOrientationPatient"), 6)
    spacing = _positive(_floats(find("PixelMeasuresSequence", "PixelSpacing"), 2))
    slope = find("PixelValueTransformationSequence", "RescaleSlope")
    intercept = find("PixelValueTransformationSequence", "RescaleIntercept")
    top_slope, top_intercept = _rescale(dataset)
    frame_slope, frame_intercept = _number(slope), _number(intercept)
    ref = FrameRef(file, dataset, member, frame, offset,
                   frame_slope if frame_slope else top_slope,
                   frame_intercept if frame_intercept is not None else top_intercept, layout)
    keys = {}
    for sequence, keyword in (("FrameContentSequence", "StackID"),
                              ("FrameContentSequence", "TemporalPositionIndex"),
                              ("MREchoSequence", "EffectiveEchoTime"),
                              ("MRDiffusionSequence", "DiffusionBValue")):
        value = find(sequence, keyword)
        if value not in (None, ""):
            keys[keyword] = str(value)
    return SliceRecord(ref, name, None if position is None else np.array(position), orientation, spacing, keys,
                       **common)


def _grid_frame_position(position: tuple[float, ...], orientation: tuple[float, ...],
                         offsets: tuple[float, ...], frame: int) -> np.ndarray:
    """RT Dose frames: offsets along the normal, relative (first is 0) or absolute z (axial only)."""
    normal = np.cross(orientation[:3], orientation[3:6])
    origin = np.array(position)
    if offsets[0] != 0:
        return np.array([origin[0], origin[1], offsets[frame]]) if abs(normal[2]) > 0.999 \
            else origin + normal * (offsets[frame] - offsets[0])
    return origin + normal * offsets[frame]


def _rescale(dataset: Dataset | ParsedHeader) -> tuple[float, float]:
    """RescaleSlope/Intercept (DoseGridScaling for RT Dose); a zero or unreadable slope counts as 1."""
    slope = _number(raw_value(dataset, "RescaleSlope"))
    intercept = _number(raw_value(dataset, "RescaleIntercept"))
    if slope is None:
        slope = _number(raw_value(dataset, "DoseGridScaling"))
    return (slope if slope else 1.0), (intercept if intercept is not None else 0.0)


def _number(value: Any) -> float | None:
    try:
        number = float(value[0] if isinstance(value, list) else value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and np.isfinite(number) else None


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    if value is None or value == "":
        return None
    try:
        numbers = tuple(float(v) for v in (value if isinstance(value, (list, tuple))
                                           or type(value).__name__ == "MultiValue" else [value]))
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and all(np.isfinite(numbers)) else None


def _positive(spacing: tuple[float, ...] | None) -> tuple[float, float] | None:
    return (spacing[0], spacing[1]) if spacing is not None and min(spacing) > 0 else None


def _pixel_spacing(dataset: Dataset | ParsedHeader) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        spacing = _positive(_floats(raw_value(dataset, keyword), 2))
        if spacing is not None:
            return spacing
    return None


def _sop_name(dataset: Dataset | ParsedHeader) -> str:
    meta = getattr(dataset, "file_meta", None)
    uid = dataset.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
    return getattr(uid, "name", str(uid)) if uid else "no SOP class"
