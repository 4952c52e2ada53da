"""Write a label map as a DICOM RT Structure Set (RTSTRUCT) for radiotherapy systems, with rt-utils.

One ROI per named label (its name, a colour, generation algorithm AUTOMATIC), each a set of CLOSED_PLANAR
contours per source slice in the series' patient coordinates (the input series' frame of reference), traced
along the centres of the boundary pixels (holes are inner contours: viewers fill them by the even-odd rule).
The label map must lie on the source slices, as for a SEG (:func:`mitk.tasks.segment.dicom_seg.check_on_source_grid`).

rt-utils builds the structure set and traces the contours (OpenCV). Two of its habits are corrected here:
its pixel→patient matrix multiplies the row direction by PixelSpacing[0] (the spacing between rows), which is
right only for square pixels, so it is given headers whose PixelSpacing is swapped; and it writes contour
coordinates and point counts as NumPy floats, which are rewritten as valid DS/IS values.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from mitk.constants import __version__
from mitk.errors import InputError, PluginError, UsageError
from mitk.extras import install_hint
from mitk.image import Image
from mitk.io.dicom.source import DicomSource
from mitk.provenance import with_minted_uids
from mitk.tasks.segment.result import SegmentationResult

SITE_ATTRIBUTES = ("InstitutionName", "InstitutionAddress", "StationName", "DeviceSerialNumber")


def rt_utils() -> Any:
    """The rt_utils package, or a one-line usage error naming the ``rtstruct`` extra."""
    try:
        import rt_utils
        from rt_utils import ds_helper
    except ImportError:
        raise UsageError(f"--rtstruct needs rt-utils, which is not installed; install it with: "
                         f"{install_hint('rtstruct')}") from None
    return rt_utils, ds_helper


def _ds(value: float) -> str:
    from pydicom.valuerep import format_number_as_ds

    return str(format_number_as_ds(round(float(value), 4)))


def write_rtstruct(result: SegmentationResult, image: Image, path: str | Path, *, plugin_name: str,
                   deidentify: bool = False) -> Path:
    """Write ``result``'s labels as the ROIs of an RTSTRUCT referencing the series ``image`` was read from;
    returns ``path``. An anonymised series without Study or Frame of Reference UIDs gets minted ones (a warning,
    and the case's provenance says so)."""
    from mitk.io.dicom.sr import evidence_of
    from mitk.tasks.segment.dicom_seg import check_on_source_grid

    package, ds_helper = rt_utils()
    source = image.meta.get("dicom")
    if not isinstance(source, DicomSource) or not source.headers:
        raise InputError("--rtstruct needs a DICOM input (this image was not read from DICOM)", image.path)
    if source.frames is not None:
        raise InputError("--rtstruct needs a series of single-frame images (RTSTRUCT contours reference "
                         "instances); this is a multi-frame image", image.path)
    source = with_minted_uids(source, image.path, "RTSTRUCT")
    label_map = np.asarray(result.label_map)
    check_on_source_grid(label_map.shape, image, source)
    values = sorted(value for value in result.labels if value != 0)
    if not values:
        raise PluginError("the segmentation names no labels besides background; nothing to write as an RTSTRUCT")
    headers = evidence_of(source.headers)
    for header in headers:
        row_spacing, column_spacing = (float(v) for v in header.PixelSpacing)
        header.PixelSpacing = [column_spacing, row_spacing]  # see the module docstring
    normal = np.cross(*np.asarray(headers[0].ImageOrientationPatient, float).reshape(2, 3))
    order = np.argsort([normal @ np.asarray(header.ImagePositionPatient, float) for header in headers], kind="stable")
    headers = [headers[k] for k in order]  # rt-utils steps from the first slice along the normal
    try:
        dataset = ds_helper.create_rtstruct_dataset(headers)
        structure = package.RTStruct(headers, dataset)
        for value in values:
            mask = (label_map == value).transpose(1, 0, 2)[:, :, order]  # (row j, column i, slice)
            name = str(result.labels[value])[:64]
            if mask.any():
                structure.add_roi(mask=np.ascontiguousarray(mask), name=name, approximate_contours=False,
                                  roi_generation_algorithm=0)
            else:  # absent from this case: the ROI without contours (add_roi would print on stdout)
                _add_empty_roi(structure, ds_helper, mask, name)
    except Exception as error:  # rt-utils raises bare Exceptions
        raise InputError(f"cannot build an RTSTRUCT for this series ({type(error).__name__}: {error})",
                         image.path) from None
    _finish(dataset, headers[0], plugin_name, deidentify)
    target = Path(path)
    dataset.save_as(target, enforce_file_format=True)
    return target


def _add_empty_roi(structure: Any, ds_helper: Any, mask: np.ndarray, name: str) -> None:
    """What rt-utils' ``add_roi`` adds for a mask, without contours: the ROI, its colour and its observation."""
    from pydicom.dataset import Dataset
    from rt_utils.utils import ROIData

    dataset = structure.ds
    roi = ROIData(mask, None, len(dataset.StructureSetROISequence) + 1, name, structure.frame_of_reference_uid,
                  "", False, False, 0)
    contour = Dataset()
    contour.ROIDisplayColor = roi.color
    contour.ReferencedROINumber = str(roi.number)
    dataset.ROIContourSequence.append(contour)
    dataset.StructureSetROISequence.append(ds_helper.create_structure_set_roi(roi))
    dataset.RTROIObservationsSequence.append(ds_helper.create_rtroi_observation(roi))


def _finish(dataset: Any, first: Any, plugin_name: str, deidentify: bool) -> None:
    """Valid values where rt-utils writes NumPy floats or its own names, and the attributes it leaves out."""
    for roi in dataset.ROIContourSequence:
        for contour in roi.get("ContourSequence", []):
            points = np.asarray(contour.ContourData, dtype=float)
            contour.ContourData = [_ds(v) for v in points]
            contour.NumberOfContourPoints = len(points) // 3
    for observation in dataset.RTROIObservationsSequence:
        if "ROIObservationDescription" in observation:
            del observation.ROIObservationDescription
        observation.RTROIInterpretedType = "ORGAN"
    for keyword in SITE_ATTRIBUTES:
        if keyword in dataset:
            delattr(dataset, keyword)
    dataset.Manufacturer = "mitk"
    dataset.ManufacturerModelName = f"mitk {plugin_name}"[:64]
    dataset.SoftwareVersions = __version__
    dataset.StructureSetLabel = "MITK"
    dataset.SeriesDescription = f"mitk {plugin_name} structures"[:64]
    dataset.SeriesNumber = 1100
    dataset.InstanceNumber = 1
    dataset.FrameOfReferenceUID = first.FrameOfReferenceUID  # the Frame of Reference module of newer editions
    for keyword in ("ReferringPhysicianName", "AccessionNumber", "OperatorsName", "PositionReferenceIndicator"):
        setattr(dataset, keyword, copy.deepcopy(first.get(keyword)) if first.get(keyword) else None)
    if deidentify:
        from mitk.io.dicom.deidentify import deidentify_dataset

        deidentify_dataset(dataset, keep=("SeriesDescription", "StructureSetLabel"))
