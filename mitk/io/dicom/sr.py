"""What the TID 1500 reports of the tasks share: evidence headers completed for highdicom, and the SR itself."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mitk.errors import InputError, UsageError
from mitk.extras import install_hint

TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyDate",
         "StudyTime", "ReferringPhysicianName")
"""Type 2 attributes highdicom copies from the evidence; an anonymiser may have removed them."""


def highdicom() -> Any:
    """highdicom, or a usage error naming the ``dicom`` extra."""
    try:
        import highdicom as hd
    except ImportError:
        raise UsageError(f"a DICOM SR needs highdicom, which is not installed; {install_hint('dicom')}") from None
    return hd


def evidence_of(headers: Sequence[Any]) -> list[Any]:
    """Copies of ``headers`` with the type 2 attributes highdicom reads (empty where missing)."""
    evidence = []
    for header in headers:
        dataset = copy.deepcopy(header)
        for keyword in TYPE2:
            if keyword not in dataset:
                setattr(dataset, keyword, None)
        evidence.append(dataset)
    return evidence


def save_measurement_report(evidence: list[Any], groups: list[Any], plugin_name: str, what: str, path: str | Path,
                            *, deidentify: bool, source_path: Path | None, series_number: int = 1200) -> Path:
    """A Comprehensive 3D SR (TID 1500) of ``groups`` observed by the mitk plugin as a device, saved at ``path``."""
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    from mitk.constants import __version__
    from mitk.io.dicom.deidentify import deidentify_dataset

    hd = highdicom()
    observer = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name=f"mitk {plugin_name}"[:64], manufacturer_name="mitk",
            model_name=f"mitk {plugin_name} {__version__}"[:64])))
    procedures = {"CT": codes.LN.CTUnspecifiedBodyRegion, "MR": codes.LN.MRIUnspecifiedBodyRegion,
                  "PT": codes.LN.PETUnspecifiedBodyRegion, "NM": codes.LN.NMUnspecifiedBodyRegion}
    procedure = procedures.get(str(evidence[-1].get("Modality") or ""), codes.LN.CTUnspecifiedBodyRegion)
    report = hd.sr.MeasurementReport(observation_context=observer, procedure_reported=procedure,
                                     imaging_measurements=groups)
    try:
        sr = hd.sr.Comprehensive3DSR(
            evidence=evidence, content=report[0], series_instance_uid=generate_uid(), series_number=series_number,
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
