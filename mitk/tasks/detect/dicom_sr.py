"""Write detection boxes as a DICOM Comprehensive 3D SR: a TID 1500 Measurement Report, one finding per box.

Each box is a TID 1411 "Volumetric ROI measurements and qualitative evaluations" group whose region is a
volume surface (SCOORD3D) of six closed POLYGONs — the box's faces — with corners in LPS millimetres in the
source series' Frame of Reference (exact for oblique grids: the corners are the box's own, not an enclosing
world box). The group carries a tracking identifier and UID, the finding type and category coded from the
label name (SNOMED CT where known, as for SEG), and the detector's score as a "Probability" measurement
(:data:`SCORE`, DCM "Probability") with no units. The report references every source image as evidence.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from mitk.constants import __version__
from mitk.errors import InputError, UsageError
from mitk.extras import install_hint
from mitk.image import Image, ras_to_lps
from mitk.io.dicom.codes import CodePair
from mitk.io.dicom.deidentify import deidentify_dataset
from mitk.io.dicom.source import DicomSource
from mitk.provenance import with_minted_uids
from mitk.tasks.detect.result import DetectionResult

try:
    import highdicom as hd
except ImportError:  # the dicom extra; `mitk detect --format dicom-sr` checks for it before the model loads
    raise UsageError(f"DICOM SR output needs highdicom, which is not installed; install it with: "
                     f"{install_hint('dicom')}") from None

SCORE = codes.DCM.Probability
"""The concept name of a box's score."""
PROCEDURES = {"CT": codes.LN.CTUnspecifiedBodyRegion, "MR": codes.LN.MRIUnspecifiedBodyRegion,
              "PT": codes.LN.PETUnspecifiedBodyRegion, "NM": codes.LN.NMUnspecifiedBodyRegion}
_FACES = ((0, 1, 3, 2), (4, 5, 7, 6), (0, 1, 5, 4), (2, 3, 7, 6), (0, 2, 6, 4), (1, 3, 7, 5))
"""Corner indices (bit 2: i end, bit 1: j end, bit 0: k end) of each face, in order around it."""


def box_faces_lps(box_voxel: np.ndarray, affine: np.ndarray) -> list[np.ndarray]:
    """The six faces of a voxel box ``(i0, j0, k0, i1, j1, k1)`` (extent ``start - 0.5 .. end - 0.5``) as closed
    polygons (first point repeated) of LPS mm points."""
    low, high = np.asarray(box_voxel[:3], float) - 0.5, np.asarray(box_voxel[3:], float) - 0.5
    corners = np.array([[high[0] if a else low[0], high[1] if b else low[1], high[2] if c else low[2]]
                        for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    lps = ras_to_lps(affine)
    world = corners @ lps[:3, :3].T + lps[:3, 3]
    return [np.vstack([world[list(face)], world[face[0]]]) for face in _FACES]


def finding_codes(name: str) -> CodePair:
    """(category, type) of a box label: the SEG table's SNOMED CT concept for the name or, failing that, for its
    last word ("bright lesion" → Lesion); "Tissue" when neither is known."""
    from mitk.io.dicom.codes import TISSUE, property_codes

    codes_found = property_codes(name)
    if codes_found[1] == TISSUE and name.split():
        codes_found = property_codes(name.split()[-1])
    return codes_found


def _evidence(source: DicomSource, path: Path | None) -> list[Dataset]:
    """The source headers as evidence, each completed with the attributes highdicom reads."""
    evidence = []
    for header in source.headers:
        dataset = copy.deepcopy(header)
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
            if not dataset.get(keyword):
                raise InputError(f"the DICOM source has no {keyword}; cannot reference it from an SR", path)
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
                        "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName"):
            if keyword not in dataset:
                setattr(dataset, keyword, None)
        evidence.append(dataset)
    return evidence


def write_detection_sr(result: DetectionResult, image: Image, path: str | Path, *, plugin_name: str,
                       deidentify: bool = False) -> Path:
    """Write ``result`` (boxes on ``image``'s grid) as a TID 1500 Comprehensive 3D SR referencing the DICOM
    series ``image`` was read from; return ``path``."""
    source = image.meta.get("dicom")
    if not isinstance(source, DicomSource) or not source.headers:
        raise InputError("--format dicom-sr needs a DICOM input (this image was not read from DICOM)", image.path)
    source = with_minted_uids(source, image.path, "SR")
    evidence = _evidence(source, image.path)
    first = evidence[0]
    frame_of_reference = str(first.FrameOfReferenceUID)
    algorithm = hd.sr.AlgorithmIdentification(name=plugin_name, version=__version__)
    series = hd.sr.SourceSeriesForSegmentation(str(first.SeriesInstanceUID))
    groups = []
    boxes = np.asarray(result.boxes_voxel, dtype=float).reshape(-1, 6)
    for number, (box, score, label) in enumerate(zip(boxes, result.scores, result.labels, strict=True), start=1):
        name = result.label_names.get(int(label), str(int(label)))
        category, finding = finding_codes(name)
        surface = hd.sr.VolumeSurface(graphic_type=hd.sr.GraphicTypeValues3D.POLYGON,
                                      graphic_data=box_faces_lps(box, image.affine),
                                      frame_of_reference_uid=frame_of_reference, source_series=series)
        score_measurement = hd.sr.Measurement(name=SCORE, value=float(score), unit=codes.UCUM.NoUnits,
                                              algorithm_id=algorithm)
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"box {number}: {name}"[:64]),
            referenced_volume_surface=surface, finding_type=finding, finding_category=category,
            algorithm_id=algorithm, measurements=[score_measurement]))
    observer = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name=f"mitk {plugin_name}"[:64], manufacturer_name="mitk",
            model_name=f"mitk {plugin_name}"[:64])))
    modality = str(first.get("Modality") or "")
    report = hd.sr.MeasurementReport(observation_context=observer,
                                     procedure_reported=PROCEDURES.get(modality, codes.LN.CTUnspecifiedBodyRegion),
                                     imaging_measurements=groups)
    try:
        series_number = 1100 + int(first.get("SeriesNumber") or 0)
    except (TypeError, ValueError):
        series_number = 1100
    try:
        sr = hd.sr.Comprehensive3DSR(
            evidence=evidence, content=report[0], series_instance_uid=generate_uid(),
            series_number=min(series_number, 2**31 - 1), sop_instance_uid=generate_uid(), instance_number=1,
            manufacturer="mitk", is_complete=True, series_description=f"mitk {plugin_name} detection"[:64])
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise InputError(f"cannot build a DICOM SR for this series ({type(error).__name__}: {error})",
                         image.path) from None
    if deidentify:
        deidentify_dataset(sr, keep=("SeriesDescription",))
    path = Path(path)
    sr.save_as(path, enforce_file_format=True)
    return path
