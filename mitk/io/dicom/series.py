"""Finding DICOM images in a file, a folder (recursively) or a zip, and grouping them into series.

Headers are read with ``stop_before_pixels=True``. Images are grouped by SeriesInstanceUID (or, when it
is missing, by study, series number and modality), then split where one UID holds several stacks:
different image sizes, orientations, separate multi-frame objects, or repeated positions that one
acquisition attribute (AcquisitionNumber, EchoNumbers, TemporalPositionIdentifier...) tells apart.
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from mitk.errors import GeometryError, InputError, MitkError, UsageError
from mitk.io.dicom.pixels import FrameRef, PixelLayout, pixel_layout, raw_value
from mitk.io.dicom.volume import StackPlan, plan_stack
from mitk.io.limits import check_image_bytes, check_inflated_size, open_member, zip_members
from mitk.types import orientation_code, ras_to_lps

LOG = logging.getLogger("mitk.io.dicom")

# SOP classes whose IOD requires the image plane (IPP/IOP): a file of these without it is broken.
# CT, Enhanced/Legacy CT, MR, Enhanced/Colour/Legacy MR, PET, Legacy/Enhanced PET, RT Dose.
PLANE_REQUIRED = frozenset(f"1.2.840.10008.5.1.4.1.1.{suffix}" for suffix in (
    "2", "2.1", "2.2", "4", "4.1", "4.3", "4.4", "128", "128.1", "130", "481.2"))
SEGMENTATION_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
ORIENTATION_TOLERANCE = 1e-3
SPLIT_KEYS = ("StackID", "TemporalPositionIndex", "AcquisitionNumber", "EchoNumbers",
              "TemporalPositionIdentifier", "EchoTime", "DiffusionBValue", "TriggerTime", "ImageType")
_PIXEL_TAG = {True: b"\xe0\x7f\x10\x00", False: b"\x7f\xe0\x00\x10"}


class NotDicomError(Exception):
    """The file is not a DICOM Part 10 image (skipped when scanning folders)."""


@dataclass
class SliceRecord:
    """One 2-D frame with the geometry its header gives."""

    ref: FrameRef
    name: str
    position: np.ndarray | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    keys: dict[str, str] = field(default_factory=dict)
    """Attributes that may tell repeated positions apart (AcquisitionNumber, EchoNumbers...)."""
    series_key: tuple[str, ...] = ()
    sop_class: str = ""


@dataclass
class SeriesInfo:
    """One series (or one part of a split series) as ``mitk info`` lists it."""

    index: int
    uid: str
    modality: str | None
    description: str | None
    records: list[SliceRecord]
    kind: str
    """``volume`` (regular 3-D stack), ``stack`` (irregular), ``slice`` (one positioned slice),
    ``image`` (2-D image without position) or ``frames`` (multi-frame object without frame positions)."""
    plan: StackPlan | None = None
    problem: str | None = None
    split: str | None = None
    """Why this part was split from its SeriesInstanceUID (orientation, size, acquisition...)."""

    @property
    def volume(self) -> bool:
        return self.kind == "volume"

    @property
    def slices(self) -> int:
        return len(self.records)

    @property
    def header(self) -> Dataset:
        return self.records[0].ref.header

    @property
    def size(self) -> list[int]:
        header = self.header
        return [int(header.Columns), int(header.Rows), self.slices]

    @property
    def spacing(self) -> list[float] | None:
        if self.plan is None:
            spacing = self.records[0].pixel_spacing
            return None if spacing is None else [round(spacing[1], 6), round(spacing[0], 6)]
        return [round(float(v), 6) for v in np.linalg.norm(self.plan.affine_lps[:3, :3], axis=0)]

    @property
    def orientation(self) -> str | None:
        return None if self.plan is None else orientation_code(ras_to_lps(self.plan.affine_lps))

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "uid": self.uid, "modality": self.modality,
                "description": self.description, "slices": self.slices, "size": self.size,
                "spacing": self.spacing, "orientation": self.orientation, "volume": self.volume,
                "kind": self.kind, "problem": self.problem, "split": self.split}

    def label(self) -> str:
        """One-line description for errors and logs: index, UID, modality, slices. Never the free-text
        SeriesDescription, which PS3.15 removes because it can hold a name (only
        ``mitk info --include-descriptions`` lists it)."""
        return (f"{self.index}: {self.uid or '<no UID>'} {self.modality or '?'} "
                f"{self.slices} slice{'s' if self.slices != 1 else ''}")


@dataclass
class SeriesListing:
    path: Path
    series: list[SeriesInfo]
    skipped_files: int = 0


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
    handle.seek(132)  # after the preamble and 'DICM'
    meta = pydicom.filereader._read_file_meta_info(handle)
    syntax = meta.get("TransferSyntaxUID")
    if syntax is not None and pydicom.uid.UID(str(syntax)).is_deflated:
        check_inflated_size(handle, file, "deflated DICOM dataset")


def _read_records(file: Path, member: str | None, opener: Callable[[], io.RawIOBase] | None, name: str,
                  size: int | None = None) -> list[SliceRecord]:
    dataset, offset = read_header(file, opener)
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
    if "PerFrameFunctionalGroupsSequence" in dataset or "SharedFunctionalGroupsSequence" in dataset:
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


def _check_frames(dataset: Dataset, layout: PixelLayout, frames: int, size: int, file: Path) -> None:
    """Refuse, before any record or array exists, frames that no file of ``size`` bytes can hold or
    whose pixel data would exceed ``MITK_MAX_IMAGE_BYTES``."""
    syntax = dataset.file_meta.get("TransferSyntaxUID")
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


def _rescale(dataset: Dataset) -> tuple[float, float]:
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
        numbers = tuple(float(v) for v in (value if isinstance(value, (list, tuple, pydicom.multival.MultiValue))
                                           else [value]))
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and all(np.isfinite(numbers)) else None


def _positive(spacing: tuple[float, ...] | None) -> tuple[float, float] | None:
    return (spacing[0], spacing[1]) if spacing is not None and min(spacing) > 0 else None


def _pixel_spacing(dataset: Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        spacing = _positive(_floats(raw_value(dataset, keyword), 2))
        if spacing is not None:
            return spacing
    return None


def _sop_name(dataset: Dataset) -> str:
    meta = getattr(dataset, "file_meta", None)
    uid = dataset.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
    return getattr(uid, "name", str(uid)) if uid else "no SOP class"


# ---------------------------------------------------------------------------------------------------
# Grouping
# ---------------------------------------------------------------------------------------------------
def _group(records: list[SliceRecord]) -> list[SeriesInfo]:
    by_series: dict[tuple[str, ...], list[SliceRecord]] = {}
    for record in records:
        by_series.setdefault(record.series_key, []).append(record)
    parts: list[tuple[tuple[Any, ...], SeriesInfo]] = []
    for key, members in by_series.items():
        for kind, part, split in _split(members):
            header = part[0].ref.header
            info = SeriesInfo(0, key[0], _text(header.get("Modality")), _text(header.get("SeriesDescription")),
                              part, kind, split=split)
            _classify(info)
            number = header.get("SeriesNumber")
            order = (int(number) if str(number or "").lstrip("-").isdigit() else 1 << 30, key,
                     min(r.name for r in part), split or "")
            parts.append((order, info))
    parts.sort(key=lambda item: item[0])
    for index, (_, info) in enumerate(parts):
        info.index = index
    return [info for _, info in parts]


def _text(value: Any) -> str | None:
    return str(value).strip() or None if value is not None else None


def _split(records: list[SliceRecord]) -> list[tuple[str, list[SliceRecord], str | None]]:
    """Split one UID's records into stacks: ``(kind, records, reason)``."""
    parts: list[tuple[str, list[SliceRecord], str | None]] = []
    stacks: dict[tuple[Any, ...], list[SliceRecord]] = {}
    for record in records:
        ref = record.ref
        has_plane = record.position is not None and record.orientation is not None
        needs_plane = record.sop_class in PLANE_REQUIRED
        if not has_plane and not needs_plane:
            single = ref.frame is None
            if single or ref.frame == 0:
                frames = [r for r in records if r.ref.path == ref.path and r.ref.member == ref.member]
                parts.append(("image" if single else "frames", [record] if single else frames, "instance"))
            continue
        source = (ref.path, ref.member) if ref.frame is not None else None
        size = (ref.layout.rows, ref.layout.columns, ref.layout.samples)
        stacks.setdefault((source, size), []).append(record)
    many_sizes = len({key[1] for key in stacks}) > 1
    for (source, _size), members in stacks.items():
        reason = "size" if many_sizes else ("instance" if source is not None and len(stacks) > 1 else None)
        clusters = _orientation_clusters(members)
        for cluster in clusters:
            why = "orientation" if len(clusters) > 1 else reason
            for piece, acquisition in _split_repeats(cluster):
                parts.append(("stack", piece, acquisition or why))
    return parts


def _orientation_clusters(records: list[SliceRecord]) -> list[list[SliceRecord]]:
    clusters: list[tuple[np.ndarray, list[SliceRecord]]] = []
    missing: list[SliceRecord] = []
    for record in records:
        if record.orientation is None:
            missing.append(record)
            continue
        vector = np.array(record.orientation)
        for reference, members in clusters:
            if float(np.abs(reference - vector).max()) <= ORIENTATION_TOLERANCE:
                members.append(record)
                break
        else:
            clusters.append((vector, [record]))
    groups = [members for _, members in clusters]
    if missing:  # broken files stay with the stack they belong to, so that reading it names them
        if not groups:
            groups.append([])
        groups[0].extend(missing)
    return groups


def _split_repeats(records: list[SliceRecord]) -> list[tuple[list[SliceRecord], str | None]]:
    """Split a stack whose positions repeat by the first attribute that separates the repeats."""
    if len(records) < 4 or not _has_repeats(records):
        return [(records, None)]
    for key in (*SPLIT_KEYS, "EffectiveEchoTime"):
        values = {r.keys.get(key) for r in records}
        if len(values) < 2:
            continue
        pieces: dict[str | None, list[SliceRecord]] = {}
        for record in records:
            pieces.setdefault(record.keys.get(key), []).append(record)
        if all(len(p) >= 2 and not _has_repeats(p) for p in pieces.values()):
            return [(pieces[v], f"{key}={v}") for v in sorted(pieces, key=_natural)]
    return [(records, None)]


def _natural(value: str | None) -> tuple[float, str]:
    try:
        return float(value or ""), ""
    except ValueError:
        return float("inf"), value or ""


def _has_repeats(records: list[SliceRecord]) -> bool:
    if any(r.position is None or r.orientation is None for r in records):
        return False
    normal = np.cross(records[0].orientation[:3], records[0].orientation[3:6])  # type: ignore[index]
    distance = np.sort(np.array([r.position for r in records]) @ normal)
    return bool(np.any(np.diff(distance) < 0.01))


def _classify(info: SeriesInfo) -> None:
    """Set ``kind``, ``plan`` and ``problem`` from the records' geometry."""
    if info.kind in ("image", "frames"):
        if info.kind == "frames":
            info.problem = ("multi-frame image without frame positions (no PlanePositionSequence or "
                            "GridFrameOffsetVector): its frames have no geometry")
        return
    records = info.records
    broken = [r for r in records if r.position is None or r.orientation is None]
    if broken:
        first = records[0] if records[0] in broken else broken[0]
        info.problem = (f"{first.name} has no ImagePositionPatient/ImageOrientationPatient"
                        + (" (PlanePositionSequence/PlaneOrientationSequence)" if first.ref.frame is not None
                           else "")
                        + (f", nor do {len(broken) - 1} other slices" if len(broken) > 1 else ""))
        return
    spacings = {r.pixel_spacing for r in records}
    if None in spacings:
        name = next(r.name for r in records if r.pixel_spacing is None)
        info.problem = f"{name} has no PixelSpacing"
        return
    if len(spacings) > 1:
        a = records[0]
        b = next(r for r in records if r.pixel_spacing != a.pixel_spacing)
        info.problem = f"mixed pixel spacing: {a.name} has {a.pixel_spacing}, {b.name} has {b.pixel_spacing}"
        return
    positions = np.array([r.position for r in records])
    info.plan = plan_stack(positions, records[0].orientation, records[0].pixel_spacing,  # type: ignore[arg-type]
                           [r.name for r in records], _single_slice_step(records[0]))
    info.problem = info.plan.problem
    if info.problem is None:
        info.kind = "volume" if len(records) > 1 else "slice"


def _single_slice_step(record: SliceRecord) -> float:
    """The slice axis length of a one-slice stack: SpacingBetweenSlices, else 1 mm (as ITK/GDCM do)."""
    value = record.ref.header.get("SpacingBetweenSlices")
    try:
        return float(value) if value not in (None, "") and float(value) > 0 else 1.0
    except (TypeError, ValueError):
        return 1.0


# ---------------------------------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------------------------------
def select_series(listing: SeriesListing, series: str | int | None) -> SeriesInfo:
    """The series picked by index or SeriesInstanceUID, or the only (volume) series when ``None``."""
    found = listing.series
    if not found:
        skipped = f" ({listing.skipped_files} non-image or non-DICOM files skipped)" if listing.skipped_files else ""
        raise InputError(f"no DICOM images found{skipped}", listing.path)
    if series is None or str(series).strip() == "":
        if len(found) == 1:
            return found[0]
        volumes = [s for s in found if s.volume]
        if len(volumes) == 1:
            others = [s for s in found if s.kind == "stack"]
            if others:  # say what was passed over: a stack that failed its checks may be the one wanted
                LOG.warning("%s: reading series %d, the only regular volume; also found %s",
                            listing.path, volumes[0].index,
                            "; ".join(f"{s.label()} ({s.problem})" for s in others))
            return volumes[0]
        raise UsageError(f"{len(found)} series found ({len(volumes)} regular volumes); choose one with "
                         f"--series INDEX|UID: " + "; ".join(s.label() for s in found), listing.path)
    text = str(series).strip()
    if text.isdigit():
        index = int(text)
        if index < len(found):
            return found[index]
        raise UsageError(f"no series with index {index} (there are {len(found)}: 0-{len(found) - 1})",
                         listing.path)
    matches = [s for s in found if s.uid == text]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(f"no series with SeriesInstanceUID {text}; found: "
                         + "; ".join(s.label() for s in found), listing.path)
    volumes = [s for s in matches if s.volume]
    if len(volumes) == 1 and all(s.kind in ("image", "slice") for s in matches if s is not volumes[0]):
        return volumes[0]
    reasons = sorted({s.split or "" for s in matches} - {""})
    a, b = matches[0], matches[1]
    raise GeometryError(f"series {text} mixes {' and '.join(_mix_reason(reasons))} "
                        f"({a.records[0].name}: {_shape_text(a)}, {b.records[0].name}: {_shape_text(b)}); "
                        f"choose one part by index: {', '.join(str(s.index) for s in matches)}", listing.path)


def _mix_reason(reasons: list[str]) -> list[str]:
    words = {"size": "image sizes", "orientation": "orientations", "instance": "separate instances"}
    return sorted({words.get(r, "acquisitions at repeated positions") for r in reasons}) or ["several stacks"]


def _shape_text(info: SeriesInfo) -> str:
    header = info.header
    return f"{header.Columns}×{header.Rows} {info.orientation or ''}".strip()
