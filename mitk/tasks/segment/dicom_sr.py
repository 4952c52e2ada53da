"""A TID 1500 Measurement Report for a segmentation: one volumetric measurement group per segment of a DICOM SEG,
its volume in mL, referencing the SEG's segment and the source series (highdicom's Comprehensive 3D SR)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from mitk.constants import __version__
from mitk.errors import InputError
from mitk.image import Image
from mitk.io.dicom.source import DicomSource
from mitk.io.dicom.sr import evidence_of, highdicom, save_measurement_report
from mitk.provenance import with_minted_uids


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

    hd = highdicom()
    source = image.meta.get("dicom")
    if not isinstance(source, DicomSource) or not source.headers:
        raise InputError("a segmentation SR needs a DICOM input (this image was not read from DICOM)", image.path)
    source = with_minted_uids(source, image.path, "SR")
    seg = pydicom.dcmread(seg_path)
    if seg.get("Modality") != "SEG":
        raise InputError("not a DICOM SEG", seg_path)
    evidence = [seg, *evidence_of(source.headers)]
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
    return save_measurement_report(evidence, groups, plugin_name, "segmentation", path, deidentify=deidentify,
                                   source_path=image.path)


def _code(item: Any) -> Any:
    return highdicom().sr.CodedConcept(value=str(item.CodeValue), scheme_designator=str(item.CodingSchemeDesignator),
                              meaning=str(item.CodeMeaning))
