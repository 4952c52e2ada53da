"""Grouping DICOM slice records into series: ordering, splitting and classifying their geometry, and selecting one.

Images are grouped by SeriesInstanceUID (or, when it is missing, by study, series number and modality), then split
where one UID holds several stacks: different image sizes, orientations, separate multi-frame objects, or repeated
positions that one acquisition attribute (AcquisitionNumber, EchoNumbers, TemporalPositionIdentifier...) tells
apart. The records themselves come from :mod:`mitk.io.dicom.series`, which reads the headers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mitk.errors import GeometryError, InputError, UsageError
from mitk.image import orientation_code, ras_to_lps
from mitk.io.dicom.pixels import FrameRef
from mitk.io.dicom.volume import StackPlan, plan_stack

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from mitk.io.dicom.header import ParsedHeader

LOG = logging.getLogger("mitk.io.dicom")

# SOP classes whose IOD requires the image plane (IPP/IOP): a file of these without it is broken.
# CT, Enhanced/Legacy CT, MR, Enhanced/Colour/Legacy MR, PET, Legacy/Enhanced PET, RT Dose.
PLANE_REQUIRED = frozenset(f"1.2.840.10008.5.1.4.1.1.{suffix}" for suffix in (
    "2", "2.1", "2.2", "4", "4.1", "4.3", "4.4", "128", "128.1", "130", "481.2"))
ORIENTATION_TOLERANCE = 1e-3
SPLIT_KEYS = ("StackID", "TemporalPositionIndex", "AcquisitionNumber", "EchoNumbers",
              "TemporalPositionIdentifier", "EchoTime", "DiffusionBValue", "TriggerTime", "ImageType")


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
    def header(self) -> Dataset | ParsedHeader:
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
                         f"--series INDEX|UID (series= in Python): " + "; ".join(s.label() for s in found),
                         listing.path)
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
