"""Write real NIfTI anatomy out as DICOM series with pydicom, in any orientation, for reader tests.

The objects are valid CT or MR Image Storage instances (or one Enhanced CT/MR multi-frame instance):
SOP class and instance UIDs, study/series/frame-of-reference UIDs, the image plane module
(ImagePositionPatient, ImageOrientationPatient, PixelSpacing), the image pixel module and
RescaleSlope/RescaleIntercept. The patient module carries canary values (``CANARY_NAME``,
``CANARY_ID``...) so that privacy tests can grep every output for them.

:func:`with_unused_high_bits` copies a real file with junk in the bits above BitsStored, which PS3.5
§8.1.1 lets a writer fill with anything, so that tests can check every decoding path masks them.

``write_series`` writes whatever geometry the affine says: columns 0 and 1 become the row and column
directions (ImageOrientationPatient) and spacing, column 2 the step between slice positions. A column 2
that is not perpendicular to the slice plane therefore writes a gantry-tilted (sheared) series.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    CTImageStorage,
    EnhancedCTImageStorage,
    EnhancedMRImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

CANARY_NAME = "CANARY^SECRET"
CANARY_ID = "CANARY-ID-123"
CANARY_ACCESSION = "CANARYACC9"
CANARY_BIRTH_DATE = "19010203"
CANARY_INSTITUTION = "CANARY INSTITUTE"
CANARY_STRINGS = (CANARY_NAME, "CANARY", CANARY_ID, CANARY_ACCESSION, CANARY_BIRTH_DATE)

ORIENTATIONS = ("axial", "sagittal", "coronal", "oblique")
# Voxel axis codes (RAS naming, as nibabel writes them) of the DICOM slice convention for each plane:
# i along the rows, j down the columns, k along the slice normal (row x column).
_AXCODES = {"axial": ("L", "P", "S"), "sagittal": ("P", "I", "R"), "coronal": ("L", "I", "P"),
            "oblique": ("L", "P", "S")}


@dataclass
class SyntheticSeries:
    """What was written, and what a correct reader must return for it."""

    directory: Path
    files: list[Path]
    expected_array: np.ndarray
    """Voxel values after rescale, ``[column, row, slice]`` with slices ordered along the slice normal."""
    expected_affine: np.ndarray
    """Voxel → RAS mm affine for ``expected_array``."""
    series_uid: str


def load_nifti(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    image: Any = nib.load(str(path))
    return np.asarray(image.dataobj), image.affine


def rotation(degrees_x: float, degrees_z: float) -> np.ndarray:
    """A 4x4 rotation about the x axis, then the z axis."""
    ax, az = np.deg2rad(degrees_x), np.deg2rad(degrees_z)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    matrix = np.eye(4)
    matrix[:3, :3] = rz @ rx
    return matrix


def orient_volume(array: np.ndarray, affine: np.ndarray, orientation: str) -> tuple[np.ndarray, np.ndarray]:
    """Permute/flip voxel axes (no interpolation) so that slices lie in ``orientation``'s plane.

    ``"oblique"`` rotates the axial volume's affine by 20° about x and 15° about z around its centre.
    """
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}")
    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(affine),
                                                nib.orientations.axcodes2ornt(_AXCODES[orientation]))
    oriented = nib.orientations.apply_orientation(array, transform)
    new_affine = affine @ nib.orientations.inv_ornt_aff(transform, array.shape)
    if orientation == "oblique":
        centre = new_affine @ np.r_[(np.array(oriented.shape[:3]) - 1) / 2.0, 1.0]
        shift, back = np.eye(4), np.eye(4)
        shift[:3, 3], back[:3, 3] = -centre[:3], centre[:3]
        new_affine = back @ rotation(20.0, 15.0) @ shift @ new_affine
    return np.ascontiguousarray(oriented), new_affine


def _ds(values: np.ndarray | list[float]) -> list[str]:
    return [format_number_as_ds(float(v)) for v in values]


def _stored_values(values: np.ndarray, slope: float, intercept: float, signed: bool) -> np.ndarray:
    stored = np.rint((values.astype(np.float64) - intercept) / slope)
    info = np.iinfo(np.int16 if signed else np.uint16)
    return np.clip(stored, info.min, info.max).astype(np.int16 if signed else np.uint16)


def _base_dataset(modality: str, sop_class: str, study_uid: str, series_uid: str, frame_uid: str,
                  description: str, series_number: int) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyDate, ds.StudyTime, ds.SeriesDate, ds.SeriesTime = "20240102", "101500", "20240102", "101600"
    ds.ContentDate, ds.ContentTime = "20240102", "101700"
    ds.AccessionNumber = CANARY_ACCESSION
    ds.Modality = modality
    ds.Manufacturer = "mitk-test-factory"
    ds.InstitutionName = CANARY_INSTITUTION
    ds.ReferringPhysicianName = "CANARY^DOCTOR"
    ds.SeriesDescription = description
    ds.PatientName = CANARY_NAME
    ds.PatientID = CANARY_ID
    ds.PatientBirthDate = CANARY_BIRTH_DATE
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.Laterality = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.BurnedInAnnotation = "NO"
    if modality == "CT":
        ds.KVP = "120"
        ds.ConvolutionKernel = "STANDARD"
    else:
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "GR", "SP", ""
        ds.MRAcquisitionType = "3D"
        ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = "8.1", "3.7", "1"
        ds.MagneticFieldStrength = "3"
        ds.FlipAngle = "8"
    return ds


def _file_meta(ds: Dataset, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = pydicom.uid.UID(transfer_syntax)
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    return meta


def _save(ds: Dataset, path: Path, stored: np.ndarray, transfer_syntax: str) -> None:
    """Attach native pixel data, compress if asked, and write a Part 10 file."""
    ds.file_meta = _file_meta(ds, ExplicitVRLittleEndian)
    ds.PixelData = stored.tobytes()
    if transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)


def _expected(array: np.ndarray, affine: np.ndarray, values: np.ndarray, keep: list[int]
              ) -> tuple[np.ndarray, np.ndarray]:
    """Expected reader output: the kept slices, ordered along the normal of the slice plane."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    normal = np.cross(lps[:3, 0], lps[:3, 1])
    expected = values[:, :, keep]
    expected_affine = affine.copy()
    expected_affine[:3, 3] = (affine @ np.r_[0, 0, keep[0], 1.0])[:3]
    if float(np.dot(lps[:3, 2], normal)) < 0:
        expected = expected[:, :, ::-1]
        expected_affine[:3, 3] = (affine @ np.r_[0, 0, keep[-1], 1.0])[:3]
        expected_affine[:3, 2] = -affine[:3, 2]
    return np.ascontiguousarray(expected), expected_affine


def write_series(array: np.ndarray, affine: np.ndarray, directory: str | Path, *, modality: str = "CT",
                 order: str = "sorted", shuffle_instance_numbers: bool = False, slope: float = 1.0,
                 intercept: float | None = None, transfer_syntax: str = ExplicitVRLittleEndian,
                 drop: tuple[int, ...] = (), enhanced: bool = False, per_frame_orientation: bool = False,
                 series_uid: str | None = None, study_uid: str | None = None, frame_uid: str | None = None,
                 description: str = "mitk factory series", series_number: int = 1, seed: int = 0,
                 prefix: str = "IM", signed: bool | None = None, bits_stored: int = 16,
                 attributes: dict[str, Any] | None = None) -> SyntheticSeries:
    """Write ``array`` (indexed ``[i, j, k]``, voxel→RAS ``affine``) as a DICOM series in ``directory``.

    ``order``: ``"sorted"`` (files named and numbered along k), ``"reversed"`` or ``"shuffled"`` (file names
    and InstanceNumbers follow that order). ``shuffle_instance_numbers`` scrambles InstanceNumber
    independently of positions. ``drop`` leaves out slices (a gap). ``enhanced`` writes one Enhanced
    CT/MR multi-frame file with per-frame PlanePositionSequence (frames in ``order``). ``signed`` sets
    PixelRepresentation (default: signed for CT and for negative data); ``bits_stored`` sets BitsStored
    and HighBit (the stored values must fit). ``attributes`` (keyword → value) are added to every header.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    array = np.asarray(array)
    if signed is None:
        signed = bool(array.min() < 0) or modality == "CT"
    if intercept is None:
        intercept = -1024.0 if modality == "CT" else 0.0
    stored = _stored_values(array, slope, intercept, signed)
    low, high = (-(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1) if signed else (0, (1 << bits_stored) - 1)
    if stored.size and (int(stored.min()) < low or int(stored.max()) > high):
        raise ValueError(f"stored values {stored.min()}..{stored.max()} do not fit BitsStored {bits_stored}")
    header = {"BitsStored": bits_stored, "HighBit": bits_stored - 1, **(attributes or {})}
    values = stored.astype(np.float64) * slope + intercept
    if float(slope).is_integer() and float(intercept).is_integer():
        values = values.astype(np.int32)
    keep = [k for k in range(array.shape[2]) if k not in set(drop)]
    expected, expected_affine = _expected(array, affine, values, keep)

    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    dx, dy = float(np.linalg.norm(lps[:3, 0])), float(np.linalg.norm(lps[:3, 1]))
    orientation = _ds(np.r_[lps[:3, 0] / dx, lps[:3, 1] / dy])
    pixel_spacing = _ds([dy, dx])  # row spacing (between rows), then column spacing
    thickness = format_number_as_ds(float(abs(np.dot(lps[:3, 2], np.cross(lps[:3, 0] / dx, lps[:3, 1] / dy)))))
    positions = {k: _ds((lps @ np.r_[0, 0, k, 1.0])[:3]) for k in keep}

    write_order = list(keep)
    if order == "reversed":
        write_order.reverse()
    elif order == "shuffled":
        rng.shuffle(write_order)
    elif order != "sorted":
        raise ValueError("order must be sorted, reversed or shuffled")
    numbers = list(range(1, len(write_order) + 1))
    if shuffle_instance_numbers:
        rng.shuffle(numbers)

    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = frame_uid or generate_uid()
    rows, columns = array.shape[1], array.shape[0]
    if enhanced:
        path = directory / f"{prefix}_enhanced.dcm"
        _write_enhanced(path, stored, write_order, positions, orientation, pixel_spacing, thickness, modality,
                        slope, intercept, signed, transfer_syntax, study_uid, series_uid, frame_uid,
                        description, series_number, per_frame_orientation, header)
        return SyntheticSeries(directory, [path], expected, expected_affine, series_uid)

    files: list[Path] = []
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    for number, k in zip(numbers, write_order, strict=True):
        ds = _base_dataset(modality, sop_class, study_uid, series_uid, frame_uid, description, series_number)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL" if modality == "CT" else "OTHER"]
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = number
        ds.ImagePositionPatient = positions[k]
        ds.ImageOrientationPatient = orientation
        ds.PixelSpacing = pixel_spacing
        ds.SliceThickness = thickness
        ds.Rows, ds.Columns = rows, columns
        ds.PixelRepresentation = int(signed)
        ds.RescaleSlope = format_number_as_ds(float(slope))
        ds.RescaleIntercept = format_number_as_ds(float(intercept))
        if modality == "CT":
            ds.RescaleType = "HU"
        for keyword, value in header.items():
            setattr(ds, keyword, value)
        path = directory / f"{prefix}{len(files) + 1:05d}.dcm"
        _save(ds, path, np.ascontiguousarray(stored[:, :, k].T), transfer_syntax)
        files.append(path)
    return SyntheticSeries(directory, files, expected, expected_affine, series_uid)


def _write_enhanced(path: Path, stored: np.ndarray, write_order: list[int], positions: dict[int, list[str]],
                    orientation: list[str], pixel_spacing: list[str], thickness: str, modality: str,
                    slope: float, intercept: float, signed: bool, transfer_syntax: str, study_uid: str,
                    series_uid: str, frame_uid: str, description: str, series_number: int,
                    per_frame_orientation: bool, header: dict[str, Any]) -> None:
    sop_class = EnhancedCTImageStorage if modality == "CT" else EnhancedMRImageStorage
    ds = _base_dataset(modality, sop_class, study_uid, series_uid, frame_uid, description, series_number)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.InstanceNumber = 1
    ds.ContentQualification = "PRODUCT"
    ds.AcquisitionDateTime = "20240102101500"
    ds.Rows, ds.Columns = stored.shape[1], stored.shape[0]
    ds.NumberOfFrames = len(write_order)
    ds.PixelRepresentation = int(signed)
    dimension_uid = generate_uid()
    dimensions = []
    for pointer, group in ((0x00209056, 0x00209111), (0x00209057, 0x00209111)):
        item = Dataset()
        item.DimensionOrganizationUID = dimension_uid
        item.DimensionIndexPointer = pointer
        item.FunctionalGroupPointer = group
        dimensions.append(item)
    ds.DimensionOrganizationSequence = Sequence([Dataset()])
    ds.DimensionOrganizationSequence[0].DimensionOrganizationUID = dimension_uid
    ds.DimensionIndexSequence = Sequence(dimensions)

    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = pixel_spacing
    measures.SliceThickness = thickness
    shared.PixelMeasuresSequence = Sequence([measures])
    transformation = Dataset()
    transformation.RescaleSlope = format_number_as_ds(float(slope))
    transformation.RescaleIntercept = format_number_as_ds(float(intercept))
    transformation.RescaleType = "HU" if modality == "CT" else "US"
    shared.PixelValueTransformationSequence = Sequence([transformation])
    plane_orientation = Dataset()
    plane_orientation.ImageOrientationPatient = orientation
    if not per_frame_orientation:
        shared.PlaneOrientationSequence = Sequence([plane_orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])

    in_stack = {k: n + 1 for n, k in enumerate(sorted(write_order))}
    frames = []
    for k in write_order:
        frame = Dataset()
        position = Dataset()
        position.ImagePositionPatient = positions[k]
        frame.PlanePositionSequence = Sequence([position])
        content = Dataset()
        content.StackID = "1"
        content.InStackPositionNumber = in_stack[k]
        content.DimensionIndexValues = [1, in_stack[k]]
        frame.FrameContentSequence = Sequence([content])
        if per_frame_orientation:
            item = Dataset()
            item.ImageOrientationPatient = orientation
            frame.PlaneOrientationSequence = Sequence([item])
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    pixels = np.stack([stored[:, :, k].T for k in write_order])
    _save(ds, path, np.ascontiguousarray(pixels), transfer_syntax)


def series_from_nifti(nifti: str | Path, directory: str | Path, orientation: str = "axial",
                      **options: object) -> SyntheticSeries:
    """Write the real volume in ``nifti`` as a series in ``orientation`` (see :func:`write_series`)."""
    array, affine = load_nifti(nifti)
    oriented, oriented_affine = orient_volume(array, affine, orientation)
    return write_series(oriented, oriented_affine, directory, **options)  # type: ignore[arg-type]


def with_unused_high_bits(source: str | Path, target: str | Path, *, seed: int = 0,
                          transfer_syntax: str | None = None) -> Path:
    """Copy the native DICOM file ``source`` to ``target`` with random bits above BitsStored in every value.

    The bits a reader must ignore (BitsStored < BitsAllocated) get junk; the stored values themselves are
    unchanged. ``transfer_syntax`` re-encodes the copy: a compressed syntax (RLE...) or Explicit VR Big
    Endian; by default the source's syntax is kept.
    """
    dataset = pydicom.dcmread(source)
    syntax = dataset.file_meta.TransferSyntaxUID
    allocated, stored = int(dataset.BitsAllocated), int(dataset.BitsStored)
    if syntax.is_compressed or stored >= allocated:
        raise ValueError(f"{source}: needs native pixel data with BitsStored < BitsAllocated")
    dtype = np.dtype(f"u{allocated // 8}").newbyteorder("<" if syntax.is_little_endian else ">")
    values = np.frombuffer(dataset.PixelData, dtype=dtype).copy()
    junk = np.random.default_rng(seed).integers(0, 1 << (allocated - stored), size=values.shape)
    values |= (junk.astype(values.dtype) << stored).astype(values.dtype)
    target = Path(target)
    if transfer_syntax == ExplicitVRBigEndian and syntax != ExplicitVRBigEndian:
        dataset.PixelData = values.astype(values.dtype.newbyteorder(">")).tobytes()
        dataset.file_meta.TransferSyntaxUID = UID(ExplicitVRBigEndian)
        dcmwrite(target, dataset, little_endian=False, implicit_vr=False, force_encoding=True)
        return target
    dataset.PixelData = values.tobytes()
    if transfer_syntax is not None and transfer_syntax != syntax:
        dataset.compress(transfer_syntax, generate_instance_uid=False)
    dataset.save_as(target)
    return target
