"""Write a label map as a DICOM Segmentation (SEG) that references the DICOM series it was computed from.

The SEG is a highdicom ``Segmentation`` of type BINARY: one segment per named label, each stored as
1-bit frames (no fractional values), the form every SEG-capable viewer reads (3D Slicer, OHIF, dcmqi,
QIICR tools; LABELMAP SEG is newer and less widely supported). Frame ``k`` of a segment lies on source
slice ``k`` (``label_map[:, :, k].T``, shaped Rows × Columns) and references it through the Derivation
Image and Referenced Series sequences; empty frames are left out, and a segment whose label is absent
from this case keeps its number with no frames, so that segment numbers mean the same in every case.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.sr.codedict import codes as dicom_codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid
from pydicom.valuerep import PersonName

from mitk.constants import __version__
from mitk.errors import GeometryError, InputError, PluginError, UsageError
from mitk.extras import install_hint
from mitk.image import Image, ras_to_lps, voxel_spacing
from mitk.io.dicom.deidentify import deidentify_dataset
from mitk.io.dicom.source import DicomSource
from mitk.provenance import with_minted_uids
from mitk.tasks.segment.result import SegmentationResult

try:
    import highdicom as hd
except ImportError:  # the dicom extra; `mitk segment --format dicom-seg` checks for it before the model loads
    raise UsageError(f"DICOM SEG output needs highdicom, which is not installed; install it with: "
                     f"{install_hint('dicom')}") from None

from mitk.io.dicom.codes import CodePair, property_codes


def _content_label(plugin_name: str) -> str:
    """A valid CS value (upper case, digits, space, underscore; at most 16 characters)."""
    label = re.sub(r"[^A-Z0-9_ ]", "_", plugin_name.upper())[:12].strip()
    return f"{label}_SEG" if label else "MITK_SEG"


def _frame_group(dataset: Any, frame: int, name: str) -> Any:
    """Item ``name`` of frame ``frame``'s functional groups (per-frame first, then shared), or None."""
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame) and name in per_frame[frame]:
        return per_frame[frame][name][0]
    shared = dataset.get("SharedFunctionalGroupsSequence")
    if shared and name in shared[0]:
        return shared[0][name][0]
    return None


def source_geometry(source: DicomSource) -> tuple[np.ndarray, np.ndarray]:
    """Image Position (Patient) of each slice ``k`` (K × 3, LPS mm) and the row/column cosines (6,)."""
    if source.frames is not None:
        dataset = source.headers[0]
        positions, cosines = [], []
        for frame in source.frames:
            position = _frame_group(dataset, frame, "PlanePositionSequence")
            orientation = _frame_group(dataset, frame, "PlaneOrientationSequence")
            if position is None or orientation is None:
                raise InputError("multi-frame source has no plane position or orientation per frame")
            positions.append(position.ImagePositionPatient)
            cosines.append(orientation.ImageOrientationPatient)
    else:
        positions = [header.get("ImagePositionPatient") for header in source.headers]
        cosines = [header.get("ImageOrientationPatient") for header in source.headers]
        if any(p is None or len(p) != 3 for p in positions) or cosines[0] is None or len(cosines[0]) != 6:
            raise InputError("a source slice has no Image Position or Orientation (Patient)")
    return np.asarray(positions, dtype=float), np.asarray(cosines[0], dtype=float)


def check_on_source_grid(shape: tuple[int, ...], image: Image, source: DicomSource) -> None:
    """Raise :class:`GeometryError` unless voxel (i, j, k) is pixel (row j, column i) of source slice k."""
    first = source.headers[0]
    slices = len(source.frames) if source.frames is not None else len(source.headers)
    expected_shape = (int(first.Columns), int(first.Rows), slices)
    hint = "a DICOM SEG must lie on the source slices; write NIfTI instead (--format nifti)"
    if tuple(shape) != expected_shape:
        raise GeometryError(f"label map shape {tuple(shape)} is not the source grid {expected_shape}; {hint}",
                            image.path)
    try:
        positions, cosines = source_geometry(source)
    except InputError as error:
        raise InputError(str(error), image.path) from None
    lps = ras_to_lps(image.affine)
    corners = np.c_[np.zeros((slices, 2)), np.arange(slices), np.ones(slices)]
    expected = (lps @ corners.T).T[:, :3]
    tolerance = 0.1 * min(voxel_spacing(image.affine)) + 1e-3
    axes = lps[:3, :2] / np.linalg.norm(lps[:3, :2], axis=0)
    if (np.abs(expected - positions).max() > tolerance
            or not np.allclose(axes.T.ravel(), cosines, atol=1e-3)):
        raise GeometryError(f"the image grid does not match its DICOM source slices (resampled?); {hint}",
                            image.path)


SITE_ATTRIBUTES = ("InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
                   "DeviceSerialNumber", "AcquisitionDateTime", "AcquisitionDate", "AcquisitionTime")
"""Left out of the acquisition equipment that highdicom records: the SEG needs no place, device or time."""


def _source_images(source: DicomSource, slice_thickness: float, path: Path | None) -> list[Any]:
    """The source headers, the first copied, completed with the type 2 attributes highdicom reads and
    stripped of the site attributes it would otherwise copy into Contributing Equipment."""
    first = copy.deepcopy(source.headers[0])
    for keyword in SITE_ATTRIBUTES:
        if keyword in first:
            delattr(first, keyword)
    for keyword in ("StudyInstanceUID", "FrameOfReferenceUID"):
        if not first.get(keyword):
            raise InputError(f"the DICOM source has no {keyword}; cannot reference it from a SEG", path)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
                    "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName"):
        if keyword not in first:
            setattr(first, keyword, None)
    if source.frames is None and not first.get("SliceThickness"):
        first.SliceThickness = round(slice_thickness, 6)
    return [first, *source.headers[1:]] if source.frames is None else [first]


def _segment_numbers(label_map: np.ndarray, values: list[int]) -> np.ndarray:
    """Map label values to segment numbers 1..N (in ascending label order); 0 stays background."""
    present = np.unique(label_map)
    unnamed = sorted(set(int(v) for v in present) - {0, *values})
    if unnamed:
        raise PluginError(f"label map holds values {unnamed} that the plugin's labels do not name")
    dtype = np.uint8 if len(values) < 256 else np.uint16
    lookup = np.zeros(max(*values, int(present.max())) + 1, dtype=dtype)
    for number, value in enumerate(values, start=1):
        lookup[value] = number
    return lookup[label_map]


def write_dicom_seg(result: SegmentationResult, image: Image, path: str | Path, *, plugin_name: str,
                    deidentify: bool = False, codes: Mapping[int, CodePair] | None = None,
                    algorithm_family: Code | None = None) -> Path:
    """Write ``result`` as a DICOM SEG referencing the series ``image`` was read from; return ``path``.

    ``codes`` maps label values to (category, type) codes that override the built-in table;
    ``algorithm_family`` defaults to DCM "Artificial Intelligence" (CID 7162). With ``deidentify`` the
    SEG goes through the PS3.15 Basic Profile (:mod:`mitk.io.dicom.deidentify`).
    """
    source = image.meta.get("dicom")
    if not isinstance(source, DicomSource) or not source.headers:
        raise InputError("--format dicom-seg needs a DICOM input (this image was not read from DICOM)",
                         image.path)
    source = with_minted_uids(source, image.path, "SEG")  # an anonymised series: mint, warn, record
    label_map = np.asarray(result.label_map)
    check_on_source_grid(label_map.shape, image, source)
    values = sorted(value for value in result.labels if value != 0)
    if not values:
        raise PluginError("the segmentation names no labels besides background; nothing to write as a SEG")
    numbers = _segment_numbers(label_map, values)
    frames = np.ascontiguousarray(numbers.transpose(2, 1, 0))  # (slice k, row j, column i)
    if source.frames is not None:
        planes = np.zeros((int(source.headers[0].NumberOfFrames), *frames.shape[1:]), dtype=frames.dtype)
        planes[np.asarray(source.frames)] = frames
        frames = planes

    algorithm = hd.AlgorithmIdentificationSequence(
        name=plugin_name, version=__version__,
        family=algorithm_family or dicom_codes.cid7162.ArtificialIntelligence)
    descriptions = []
    for number, value in enumerate(values, start=1):
        name = str(result.labels[value])
        category, property_type = (codes or {}).get(value) or property_codes(name)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=name[:64], segmented_property_category=category,
            segmented_property_type=property_type, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm))

    first = source.headers[0]
    description = f"mitk {plugin_name} segmentation"[:64]
    try:
        series_number = 1000 + int(first.get("SeriesNumber") or 0)
    except (TypeError, ValueError):
        series_number = 1000
    try:
        seg = hd.seg.Segmentation(
            source_images=_source_images(source, voxel_spacing(image.affine)[2], image.path),
            pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=generate_uid(), series_number=min(series_number, 2**31 - 1),
            sop_instance_uid=generate_uid(), instance_number=1,
            manufacturer="mitk", manufacturer_model_name=f"mitk {plugin_name}"[:64],
            software_versions=__version__, device_serial_number="none",
            content_label=_content_label(plugin_name), content_description=description,
            content_creator_name=PersonName.from_named_components(family_name="mitk", given_name=plugin_name),
            series_description=description,
            omit_empty_frames=bool(frames.any()),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise InputError(f"cannot build a DICOM SEG for this series ({type(error).__name__}: {error})",
                         image.path) from None
    if deidentify:
        deidentify_dataset(seg, keep=("SeriesDescription", "ContentDescription", "ContentCreatorName",
                                      "DeviceSerialNumber"))
    path = Path(path)
    seg.save_as(path, enforce_file_format=True)
    return path
