"""A TID 1500 Measurement Report for a classification: one measurement group per class, the class as the
finding and its probability as the measurement, the predicted class marked present; the evidence is the series
the image was read from."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from mitk.constants import __version__
from mitk.errors import InputError
from mitk.image import Image
from mitk.io.dicom.codes import property_codes
from mitk.io.dicom.source import DicomSource
from mitk.io.dicom.sr import evidence_of, highdicom, save_measurement_report
from mitk.provenance import with_minted_uids


def write_classification_sr(probabilities: Mapping[str, float], predicted: str | list[str], image: Image,
                            path: str | Path, *, plugin_name: str, deidentify: bool = False) -> Path:
    """Write the class ``probabilities`` (and which class was ``predicted``) for ``image``'s DICOM series as a
    TID 1500 SR; returns ``path``."""
    hd = highdicom()
    source = image.meta.get("dicom")
    if not isinstance(source, DicomSource) or not source.headers:
        raise InputError("a classification SR needs a DICOM input (this image was not read from DICOM)", image.path)
    source = with_minted_uids(source, image.path, "SR")
    chosen = set(predicted if isinstance(predicted, list) else [p for p in str(predicted).split(";") if p])
    algorithm = hd.sr.AlgorithmIdentification(name=plugin_name, version=__version__)
    unit = hd.sr.CodedConcept(value="1", scheme_designator="UCUM", meaning="no units")
    groups: list[Any] = []
    for name, probability in probabilities.items():
        category, finding = property_codes(name)
        evaluation = hd.sr.QualitativeEvaluation(name=codes.DCM.Finding, value=codes.SCT.Present
                                                 if name in chosen else codes.SCT.Absent)
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"class {name}"[:64]),
            finding_type=finding, finding_category=category, algorithm_id=algorithm,
            measurements=[hd.sr.Measurement(name=codes.DCM.Probability, value=float(probability), unit=unit,
                                            algorithm_id=algorithm)],
            qualitative_evaluations=[evaluation]))
    return save_measurement_report(evidence_of(source.headers), groups, plugin_name, "classification", path,
                                   deidentify=deidentify, source_path=image.path, series_number=1300)
