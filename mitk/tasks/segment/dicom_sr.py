"""A TID 1500 Measurement Report for a segmentation: one volumetric measurement group per segment of a DICOM SEG,
its volume in mL, referencing the SEG's segment and the source series (highdicom's Comprehensive 3D SR)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from mitk.constants import __version__
from mitk.errors import InputError, UsageError
from mitk.extras import install_hint
from mitk.image import Image
from mitk.io.dicom.deidentify import deidentify_dataset
from mitk.io.dicom.source import DicomSource
from mitk.provenance import with_minted_uids

try:
    import highdicom as hd
except ImportError:  # pragma: no cover - the dicom extra
    hd = None  # type: ignore[assignment]

TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyDate",
         "StudyTime", "ReferringPhysicianName")


def segment_volumes(result: Any, rows: list[dict[str, Any]]) -> dict[int, float]:
    """Segment number (as :func:`mitk.tasks.segment.dicom_seg.write_dicom_seg` numbers them: the named labels in
    ascending order from 1) → volume in mL, from the rows of ``result.statistics``."""
    numbers = {value: number for number, value in enumerate(sorted(v for v in result.labels if v != 0), start=1)}
    return {numbers[int(row["label"])]: float(row["volume_ml"]) for row in rows
            if int(row["label"]) in numbers and row.get("volume_ml") is not None}


def write_segmentation_sr(seg_path: str | Path, volumes_ml: Mapping[int, float], image: Image, path: str | Path, *,
                          plugin_name: str, deidentify: bool = False) -> Path:
    """Write the volumes of the segments of the SEG at ``seg_path`` (``volumes_ml``: segment number → mL) as a
    TID 1500 SR whose evidence is the SEG and the series ``image`` was read from; returns ``path``."""
    import pydicom

    if hd is None:
        raise UsageError(f"a DICOM SR needs highdicom, which is not installed; {install_hint('dicom')}")
    source = image.meta.get("dicom")
    if not isinstance(source, DicomSource) or not source.headers:
        raise InputError("a segmentation SR needs a DICOM input (this image was not read from DICOM)", image.path)
    source = with_minted_uids(source, image.path, "SR")
    seg = pydicom.dcmread(seg_path)
    if seg.get("Modality") != "SEG":
        raise InputError("not a DICOM SEG", seg_path)
    evidence = [seg]
    for header in source.headers:
        dataset = copy.deepcopy(header)
        for keyword in TYPE2:
            if keyword not in dataset:
                setattr(dataset, keyword, None)
        evidence.append(dataset)
    algorithm = hd.sr.AlgorithmIdentification(name=plugin_name, version=__version__)
    series = hd.sr.SourceSeriesForSegmentation(str(source.headers[0].SeriesInstanceUID))
    millilitre = hd.sr.CodedConcept(value="mL", scheme_designator="UCUM", meaning="milliliter")
    groups = []
    for item in seg.SegmentSequence:
        number = int(item.SegmentNumber)
        if number not in volumes_ml:
            continue
        referenced = hd.sr.ReferencedSegment(sop_class_uid=str(seg.SOPClassUID),
                                             sop_instance_uid=str(seg.SOPInstanceUID), segment_number=number,
                                             source_series=series)
        volume = hd.sr.Measurement(name=codes.SCT.Volume, value=float(volumes_ml[number]), unit=millilitre,
                                   algorithm_id=algorithm)
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(),
                                                         identifier=f"segment {number}: {item.SegmentLabel}"[:64]),
            referenced_segment=referenced, finding_type=_code(item.SegmentedPropertyTypeCodeSequence[0]),
            finding_category=_code(item.SegmentedPropertyCategoryCodeSequence[0]), algorithm_id=algorithm,
            measurements=[volume]))
    return _save(evidence, groups, plugin_name, "segmentation", path, deidentify, image.path)


def _code(item: Any) -> Any:
    return hd.sr.CodedConcept(value=str(item.CodeValue), scheme_designator=str(item.CodingSchemeDesignator),
                              meaning=str(item.CodeMeaning))


def _save(evidence: list[Any], groups: list[Any], plugin_name: str, what: str, path: str | Path, deidentify: bool,
          source_path: Path | None) -> Path:
    observer = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name=f"mitk {plugin_name}"[:64], manufacturer_name="mitk",
            model_name=f"mitk {plugin_name}"[:64])))
    procedures = {"CT": codes.LN.CTUnspecifiedBodyRegion, "MR": codes.LN.MRIUnspecifiedBodyRegion,
                  "PT": codes.LN.PETUnspecifiedBodyRegion, "NM": codes.LN.NMUnspecifiedBodyRegion}
    procedure = procedures.get(str(evidence[-1].get("Modality") or ""), codes.LN.CTUnspecifiedBodyRegion)
    report = hd.sr.MeasurementReport(observation_context=observer, procedure_reported=procedure,
                                     imaging_measurements=groups)
    try:
        sr = hd.sr.Comprehensive3DSR(
            evidence=evidence, content=report[0], series_instance_uid=generate_uid(), series_number=1200,
            sop_instance_uid=generate_uid(), instance_number=1, manufacturer="mitk", is_complete=True,
            series_description=f"mitk {plugin_name} {what}"[:64])
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise InputError(f"cannot build a DICOM SR for this series ({type(error).__name__}: {error})",
                         source_path) from None
    if deidentify:
        deidentify_dataset(sr, keep=("SeriesDescription",))
    target = Path(path)
    sr.save_as(target, enforce_file_format=True)
    return target
