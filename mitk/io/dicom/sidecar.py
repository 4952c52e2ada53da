"""A non-identifying summary of a DICOM series, and the JSON sidecar ``mitk convert`` writes beside a NIfTI.

Only attributes on an explicit allow-list are copied: acquisition and equipment parameters (modality,
manufacturer, kVp, TR/TE...). No attribute that PS3.15's Basic Application Level Confidentiality Profile
removes or replaces (:data:`~mitk.io.dicom.deidentify.ACTIONS`) is ever included: no names, IDs, dates,
times, UIDs, institution, station or device serial number, no comments. The free-text descriptions
(:data:`DESCRIPTION_KEYWORDS`: SeriesDescription, ProtocolName, StudyDescription), which the profile
removes because they can hold a name, are left out too unless a caller asks for them with
:func:`descriptions` (``--include-descriptions``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mitk.io.atomic import split_suffix
from mitk.io.dicom.deidentify import ACTIONS

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from mitk.io.dicom.header import ParsedHeader

DESCRIPTION_KEYWORDS = ("SeriesDescription", "ProtocolName", "StudyDescription")
"""Free text that PS3.15's basic profile removes; copied only on request (:func:`descriptions`)."""

# DICOM keywords copied as they are (numbers become floats or ints, lists stay lists).
ACQUISITION_KEYWORDS = (
    "Modality", "Manufacturer", "ManufacturerModelName", "BodyPartExamined", "ImageType", "PatientPosition",
    "SliceThickness", "SpacingBetweenSlices",
    # CT
    "KVP", "XRayTubeCurrent", "ExposureTime", "Exposure", "ConvolutionKernel", "FilterType",
    "SpiralPitchFactor", "CTDIvol", "ReconstructionDiameter", "RescaleType",
    # MR
    "MagneticFieldStrength", "RepetitionTime", "EchoTime", "EffectiveEchoTime", "InversionTime",
    "FlipAngle", "EchoTrainLength", "ScanningSequence", "SequenceVariant", "ScanOptions",
    "MRAcquisitionType", "SequenceName", "PulseSequenceName", "PixelBandwidth", "ImagingFrequency",
    "ReceiveCoilName", "PercentPhaseFieldOfView", "InPlanePhaseEncodingDirection",
    "ParallelReductionFactorInPlane", "DiffusionBValue",
    # PET / NM
    "Units", "DecayCorrection", "AttenuationCorrectionMethod", "ReconstructionMethod",
    # Pixels
    "PhotometricInterpretation", "BitsStored", "SamplesPerPixel",
)
FORBIDDEN_KEYWORDS = frozenset(ACTIONS) | frozenset({
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientSex", "PatientAge",
    "PatientWeight", "PatientSize", "PatientAddress", "OtherPatientIDs", "OtherPatientNames",
    "AccessionNumber", "InstitutionName", "InstitutionAddress", "StationName", "DeviceSerialNumber",
    "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName", "StudyID", "ImageComments",
})
"""Never in a summary or sidecar: every attribute the basic profile removes, empties or replaces, and more."""
_FUNCTIONAL_DEPTH = 3


def summarize(header: Dataset | ParsedHeader, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Allow-listed acquisition parameters of ``header`` (looked up in enhanced functional groups too).

    Never a description: see :func:`descriptions`.
    """
    summary: dict[str, Any] = {}
    for keyword in ACQUISITION_KEYWORDS:
        if keyword in FORBIDDEN_KEYWORDS:  # pragma: no cover - guards edits of the allow-list
            continue
        value = _lookup(header, keyword)
        if value is not None:
            summary[keyword] = value
    syntax = getattr(getattr(header, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None:
        summary["TransferSyntax"] = syntax.name
    sop_class = header.get("SOPClassUID")
    if sop_class:
        summary["SOPClass"] = getattr(sop_class, "name", str(sop_class))
    summary.update(extra or {})
    return summary


def descriptions(header: Dataset | ParsedHeader) -> dict[str, str]:
    """The free-text SeriesDescription, ProtocolName and StudyDescription of ``header`` that are present.

    PS3.15's basic profile removes them (a technologist may type a name into them), so mitk shows or
    writes them only when the user asks (``--include-descriptions``).
    """
    found: dict[str, str] = {}
    for keyword in DESCRIPTION_KEYWORDS:
        value = _lookup(header, keyword)
        if value is not None:
            found[keyword] = value if isinstance(value, str) else str(value)
    return found


def _lookup(header: Dataset | ParsedHeader, keyword: str) -> Any:
    value = _plain(header.get(keyword))
    if value is not None:
        return value
    for sequence in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = header.get(sequence)
        if items:
            value = _search(items[0], keyword, _FUNCTIONAL_DEPTH)
            if value is not None:
                return value
    return None


def _search(dataset: Dataset, keyword: str, depth: int) -> Any:
    value = _plain(dataset.get(keyword))
    if value is not None or depth == 0:
        return value
    for element in dataset:
        if element.VR == "SQ" and element.value:
            value = _search(element.value[0], keyword, depth - 1)
            if value is not None:
                return value
    return None


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of an element value; ``None`` when empty or of a type not summarised."""
    if value is None or value == "":
        return None
    if isinstance(value, bytes) or type(value).__name__ in ("Sequence", "PersonName") or _is_dataset(value):
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        items = [_plain(v) for v in value]
        return [v for v in items if v is not None] or None
    if isinstance(value, (int, float)):
        number = float(value)
        return int(number) if number.is_integer() and not isinstance(value, float) else round(number, 6)
    text = str(value).strip()
    return text or None


def _is_dataset(value: Any) -> bool:
    """Whether ``value`` is a pydicom ``Dataset`` (there is none unless pydicom was imported)."""
    module = sys.modules.get("pydicom.dataset")
    return module is not None and isinstance(value, module.Dataset)


def sidecar_path(nifti: str | Path) -> Path:
    """``OUT.nii.gz`` → ``OUT.json``."""
    nifti = Path(nifti)
    return nifti.with_name(split_suffix(nifti)[0] + ".json")


def sidecar_document(summary: dict[str, Any], include_descriptions: bool = False) -> dict[str, Any]:
    """The sidecar's content: the summary, with any forbidden keyword removed as a last guard.

    The descriptions (:data:`DESCRIPTION_KEYWORDS`) pass only with ``include_descriptions``.
    """
    from mitk.constants import __version__

    allowed = frozenset(DESCRIPTION_KEYWORDS) if include_descriptions else frozenset()
    document = {key: value for key, value in summary.items() if key not in FORBIDDEN_KEYWORDS - allowed}
    document["ConversionSoftware"] = f"mitk {__version__}"
    return document
