"""A TID 1500 Measurement Report of a registration's quality when the fixed image is DICOM: one measurement group
whose measurements are the similarity of fixed and moving images before and after, the Dice of the masks when
both are given, the affine part's determinant, scales, rotation and translation, and, for a displacement field,
its smallest Jacobian determinant and folded fraction; its source images are the fixed and moving series.

:func:`registration_figures` computes the figures from the images and the result alone, the same way for every
plugin; :func:`write_registration_sr` writes them (highdicom's Comprehensive 3D SR, as the other tasks' SRs).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mitk.errors import InputError
from mitk.image import Image
from mitk.io.dicom.source import DicomSource
from mitk.tasks.register.result import RegistrationResult

SCHEME = "99MITK"
"""The private coding scheme of the figures no standard code names (PS3.3 §8.2: designators starting "99")."""

FIGURES: dict[str, tuple[str, str, str, str]] = {
    # key: (scheme, code value, code meaning, UCUM unit)
    "ncc_before": (SCHEME, "REG-NCC-0", "Normalized cross-correlation before registration", "1"),
    "ncc_after": (SCHEME, "REG-NCC-1", "Normalized cross-correlation after registration", "1"),
    "similarity_start": (SCHEME, "REG-SIM-0", "Registration metric at start", "1"),
    "similarity_final": (SCHEME, "REG-SIM-1", "Registration metric at end", "1"),
    "dice_before": (SCHEME, "REG-DSC-0", "Dice of the masks before registration", "1"),
    "dice_after": (SCHEME, "REG-DSC-1", "Dice of the masks after registration", "1"),
    "determinant": (SCHEME, "REG-DET", "Determinant of the linear part of the transform", "1"),
    "scale_1": (SCHEME, "REG-SCALE-1", "Largest scale of the transform", "1"),
    "scale_2": (SCHEME, "REG-SCALE-2", "Middle scale of the transform", "1"),
    "scale_3": (SCHEME, "REG-SCALE-3", "Smallest scale of the transform", "1"),
    "rotation_deg": ("DCM", "130523", "Rotation Angle", "deg"),
    "translation_mm": (SCHEME, "REG-TRANS", "Displacement of the fixed image centre", "mm"),
    "jacobian_min": (SCHEME, "REG-JAC-MIN", "Smallest Jacobian determinant of the transform", "1"),
    "folded_percent": (SCHEME, "REG-FOLD", "Folded voxels of the transform", "%"),
}
"""Every figure the SR can hold, in the order it lists them."""

MAX_JACOBIAN_VOXELS = 16_000_000
"""Above this many fixed voxels the Jacobian (9 float64 per voxel) is not computed here: the plugin's own figures
are used when it reports them, else the SR leaves them out."""

UNITS = {"1": "no units", "deg": "degree", "mm": "millimeter", "%": "percent"}


def _ncc(fixed: np.ndarray, moving: np.ndarray, inside: np.ndarray) -> float | None:
    a, b = fixed[inside].astype(np.float64), moving[inside].astype(np.float64)
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.mean((a - a.mean()) * (b - b.mean())) / (a.std() * b.std()))


def _dice(a: np.ndarray, b: np.ndarray) -> float | None:
    total = int(a.sum()) + int(b.sum())
    return None if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total


def registration_figures(fixed: Image, moving: Image, result: RegistrationResult, *,
                         fixed_mask: Image | None = None, moving_mask: Image | None = None) -> dict[str, float]:
    """The figures of :data:`FIGURES` that apply to this registration (``fixed_mask`` on the fixed grid,
    ``moving_mask`` on the moving one; Dice needs both). Normalized cross-correlation is computed over the fixed
    voxels that map inside the moving image (and inside ``fixed_mask``), with the moving image sampled through
    the identity (before) and through the result (after)."""
    from mitk.runner.resample import warp
    from mitk.tasks.register.evaluation import jacobian_statistics
    from mitk.tasks.register.result import total_displacement

    figures: dict[str, float | None] = {}
    fixed_values = np.asarray(fixed.array, dtype=np.float32)
    ones = Image(array=np.ones(moving.spatial_shape, np.float32), affine=moving.affine)
    region = np.ones(fixed.spatial_shape, bool) if fixed_mask is None else np.asarray(fixed_mask.array) != 0
    for when, matrix, displacement in (("before", None, None), ("after", result.matrix, result.displacement)):
        inside = region & (warp(ones, fixed, matrix, displacement) > 0.999)
        sampled = warp(moving, fixed, matrix, displacement) if when == "before" else np.asarray(result.warped.array)
        figures[f"ncc_{when}"] = _ncc(fixed_values, np.asarray(sampled), inside)
        if fixed_mask is not None and moving_mask is not None:
            mask = Image(array=(np.asarray(moving_mask.array) != 0).astype(np.float32), affine=moving_mask.affine)
            figures[f"dice_{when}"] = _dice(warp(mask, fixed, matrix, displacement, mode="nearest") > 0.5, region)
    metrics = result.metrics
    start = metrics.get("similarity_identity", metrics.get("similarity_affine"))
    for key, value in (("similarity_start", start), ("similarity_final", metrics.get("similarity_final"))):
        if isinstance(value, int | float):
            figures[key] = float(value)
    if result.matrix is not None:
        matrix = np.asarray(result.matrix, dtype=np.float64)
        linear = matrix[:3, :3]
        left, scales, right = np.linalg.svd(linear)
        rotation = left @ right
        figures["determinant"] = float(np.linalg.det(linear))
        figures.update({f"scale_{n}": float(s) for n, s in enumerate(scales, start=1)})
        if np.linalg.det(rotation) > 0:  # a mirror has no rotation angle
            figures["rotation_deg"] = float(np.degrees(np.arccos(np.clip((np.trace(rotation) - 1) / 2, -1, 1))))
        centre = fixed.affine @ np.append((np.asarray(fixed.spatial_shape) - 1) / 2, 1.0)
        figures["translation_mm"] = float(np.linalg.norm((matrix @ centre - centre)[:3]))
    if result.displacement is not None and {"jacobian_min", "folded_percent"} <= set(metrics):
        figures["jacobian_min"] = metrics["jacobian_min"]  # the plugin's, on its field's own grid
        figures["folded_percent"] = metrics["folded_percent"]
    elif result.displacement is not None and int(np.prod(fixed.spatial_shape)) <= MAX_JACOBIAN_VOXELS:
        statistics = jacobian_statistics(total_displacement(result.matrix, result.displacement, fixed), fixed.affine)
        figures["jacobian_min"] = float(statistics["min"])
        figures["folded_percent"] = float(statistics["folding_percent"])
    return {key: float(value) for key, value in figures.items()
            if isinstance(value, int | float) and np.isfinite(value)}


def write_registration_sr(figures: Mapping[str, float], fixed: Image, moving: Image | None, path: str | Path, *,
                          plugin_name: str, deidentify: bool = False) -> Path:
    """Write ``figures`` (keys of :data:`FIGURES`) as a TID 1500 SR whose evidence and source images are the
    fixed image's DICOM series and, when it was read from DICOM too, the moving image's; returns ``path``."""
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    from mitk.constants import __version__
    from mitk.io.dicom.sr import evidence_of, highdicom, save_measurement_report
    from mitk.provenance import with_minted_uids

    hd = highdicom()
    unknown = sorted(set(figures) - set(FIGURES))
    if unknown:
        raise ValueError(f"not registration figures: {', '.join(unknown)}")
    source = fixed.meta.get("dicom")
    if not isinstance(source, DicomSource) or not source.headers:
        raise InputError("a registration SR needs a DICOM fixed image (this one was not read from DICOM)", fixed.path)
    evidence = evidence_of(with_minted_uids(source, fixed.path, "SR").headers)
    moving_source = None if moving is None else moving.meta.get("dicom")
    if isinstance(moving_source, DicomSource) and moving_source.headers:
        known = {str(header.SOPInstanceUID) for header in evidence}
        evidence += [header for header in evidence_of(with_minted_uids(moving_source, moving.path if moving else None,
                                                                       "SR").headers)
                     if str(header.SOPInstanceUID) not in known]
    algorithm = hd.sr.AlgorithmIdentification(name=plugin_name, version=__version__)
    measurements = []
    for key, (scheme, value, meaning, unit) in FIGURES.items():
        if key in figures:
            measurements.append(hd.sr.Measurement(
                name=hd.sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning),
                value=float(figures[key]), algorithm_id=algorithm,
                unit=hd.sr.CodedConcept(value=unit, scheme_designator="UCUM", meaning=UNITS[unit])))
    if not measurements:
        raise InputError("no registration figure to report", fixed.path)
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="registration quality"),
        finding_type=codes.DCM.RegistrationResult, algorithm_id=algorithm, measurements=measurements,
        source_images=[hd.sr.SourceImageForMeasurementGroup(str(header.SOPClassUID), str(header.SOPInstanceUID))
                       for header in evidence])
    target = save_measurement_report(evidence, [group], plugin_name, "registration", path, deidentify=deidentify,
                                     source_path=fixed.path, series_number=1400)
    _declare_scheme(target)
    return target


def _declare_scheme(path: Path) -> None:
    """Name the private coding scheme in the SR (Coding Scheme Identification Sequence, PS3.3 C.12.1)."""
    import pydicom
    from pydicom.dataset import Dataset

    dataset = pydicom.dcmread(path)
    item = Dataset()
    item.CodingSchemeDesignator = SCHEME
    item.CodingSchemeName = "mitk registration quality figures"
    item.CodingSchemeResponsibleOrganization = "mitk"
    dataset.CodingSchemeIdentificationSequence = [item]
    dataset.save_as(path, enforce_file_format=True)
