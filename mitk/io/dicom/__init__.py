"""DICOM input: list the series in a file, folder or zip, and read one as an :class:`~mitk.image.Image`.

``read_dicom(path)`` returns ``Image.array[i, j, k]`` = column ``i``, row ``j`` of slice ``k`` (ITK order),
slices ordered along the slice normal, and ``Image.affine`` = voxel → RAS mm. A 2-D image without a
position (CR, DX, US, secondary capture) has shape ``(columns, rows, 1)``, or ``(columns, rows, 1, 3)``
for colour. See ``docs/dicom.md``.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mitk.errors import GeometryError, MitkWarning
from mitk.image import Image, orientation_code, ras_to_lps
from mitk.io.dicom.pixels import FrameRef, raw_value
from mitk.io.dicom.series import SeriesInfo, SeriesListing, SliceRecord, list_series, select_series
from mitk.io.dicom.sidecar import summarize
from mitk.io.dicom.source import DicomSource
from mitk.io.dicom.volume import assemble, resample_stack

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from mitk.io.dicom.header import ParsedHeader

__all__ = ["DicomSource", "SeriesInfo", "SeriesListing", "list_series", "read_dicom", "read_series"]

LOG = logging.getLogger("mitk.io.dicom")


def read_dicom(path: str | Path, series: str | int | None = None, allow_resample: bool = False) -> Image:
    """Read one DICOM series from a file, a folder (searched recursively) or a ``.zip``.

    ``series`` is an index or SeriesInstanceUID as ``list_series`` lists them; without it the input must
    hold one series, or exactly one regular volume. Irregular spacing and gantry tilt are refused with a
    GeometryError unless ``allow_resample`` is true, in which case the stack is resampled onto a regular
    grid (with a logged warning).

    Voxel values are the stored values, with the bits above BitsStored masked (sign-extended where
    PixelRepresentation is 1, as pydicom's ``pixel_array`` and SimpleITK read them), through
    RescaleSlope/RescaleIntercept. MONOCHROME1 images (higher is darker) are not inverted: their values
    stay physical, and ``meta["dicom_summary"]["PhotometricInterpretation"]`` says how to display them
    (SimpleITK returns ``2**BitsStored - 1 - value`` instead).
    """
    path = Path(path)
    listing = list_series(path)
    info = select_series(listing, series)
    return read_series(info, path, allow_resample=allow_resample)


def read_series(info: SeriesInfo, path: Path, allow_resample: bool = False) -> Image:
    """Decode the series ``info`` found under ``path``."""
    if info.kind == "image":
        return _read_image(info, path)
    if info.kind == "frames" or info.plan is None:
        raise GeometryError(f"series {info.index} is not a volume: {info.problem}", path)
    plan = info.plan
    if plan.problem is not None and not (allow_resample and plan.resamplable):
        hint = (" (resample it onto a regular grid with --allow-resample, or allow_resample=True in Python)"
                if plan.resamplable else "")
        raise GeometryError(f"{plan.problem}{hint}", path)
    records = [info.records[k] for k in plan.order]
    volume = assemble([r.ref for r in records])
    resampled = None
    if plan.problem is not None:
        spacing = records[0].pixel_spacing
        assert spacing is not None
        volume = resample_stack(volume, plan, spacing)
        resampled = f"{plan.problem}; resampled {len(records)} slices onto {plan.output_slices} regular slices"
        LOG.warning("%s: %s", path, resampled)
    array = np.moveaxis(volume, (0, 1, 2), (2, 1, 0))  # [slice, row, column] -> [column, row, slice]
    affine = ras_to_lps(plan.affine_lps)
    frames = [r.ref.frame for r in records]
    multiframe = all(f is not None for f in frames) and len({(r.ref.path, r.ref.member) for r in records}) == 1
    refs = [records[0].ref] if multiframe else [r.ref for r in records]
    return _image(info, path, array, affine, refs, [int(f) for f in frames if f is not None] if multiframe else None,
                  resampled)


def _read_image(info: SeriesInfo, path: Path) -> Image:
    """A 2-D image without position: identity LPS directions and origin 0, as ITK reads it."""
    record = info.records[0]
    ref = record.ref
    header = ref.header
    values = assemble([ref])[0]  # the same decoding and rescaling (and dtype choice) as a volume's slices
    array = np.swapaxes(values, 0, 1)[:, :, None, ...]  # [row, column(, sample)] -> [column, row, 1(, sample)]
    spacing, source = _image_spacing(record, header)
    affine = ras_to_lps(np.diag([spacing[1], spacing[0], 1.0, 1.0]))
    image = _image(info, path, array, affine, [ref], None, None)
    image.meta["dicom_summary"]["spacing_source"] = source
    return image


def _image_spacing(record: SliceRecord, header: Dataset | ParsedHeader) -> tuple[tuple[float, float], str]:
    """PixelSpacing, else ImagerPixelSpacing, else one ultrasound region's physical deltas (cm → mm).

    A spacing element that has a value but not two positive finite numbers (``0\\0``, negative, NaN) is
    skipped with a :class:`~mitk.errors.MitkWarning` that says what was used instead."""
    broken = [f"{keyword} {_spacing_text(header, keyword)}" for keyword in ("PixelSpacing", "ImagerPixelSpacing")
              if raw_value(header, keyword) is not None and not _usable_spacing(header, keyword)]  # empty: unknown
    spacing, source = _found_spacing(record, header)
    if broken:
        unused = " and ".join(broken)
        instead = "1 mm assumed" if source.startswith("unknown") else f"{source} used instead"
        warnings.warn(MitkWarning(f"{record.ref.name}: {unused} {'is' if len(broken) == 1 else 'are'} not a "
                                  f"pixel spacing (two positive numbers); {instead}"), stacklevel=3)
    return spacing, source


def _usable_spacing(header: Dataset | ParsedHeader, keyword: str) -> bool:
    try:
        numbers = [float(v) for v in _values(header, keyword)]
    except (TypeError, ValueError):
        return False
    return len(numbers) == 2 and all(math.isfinite(v) and v > 0 for v in numbers)


def _values(header: Dataset | ParsedHeader, keyword: str) -> list[Any]:
    value = raw_value(header, keyword)
    return list(value) if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else [value]


def _spacing_text(header: Dataset | ParsedHeader, keyword: str) -> str:
    text = "\\".join(str(v) for v in _values(header, keyword))
    return f"'{text if len(text) <= 40 else text[:37] + '...'}'"


def _found_spacing(record: SliceRecord, header: Dataset | ParsedHeader) -> tuple[tuple[float, float], str]:
    spacing = record.pixel_spacing
    if spacing is not None:
        source = "PixelSpacing" if _usable_spacing(header, "PixelSpacing") else "ImagerPixelSpacing"
        return spacing, source
    regions = header.get("SequenceOfUltrasoundRegions") or []
    deltas = {(float(r.PhysicalDeltaY), float(r.PhysicalDeltaX)) for r in regions
              if r.get("PhysicalUnitsXDirection") == 3 and r.get("PhysicalUnitsYDirection") == 3
              and r.get("PhysicalDeltaX") and r.get("PhysicalDeltaY")}
    if len(deltas) == 1:
        dy, dx = deltas.pop()
        return (dy * 10.0, dx * 10.0), "SequenceOfUltrasoundRegions"
    return (1.0, 1.0), "unknown (1 mm assumed)"


def _image(info: SeriesInfo, path: Path, array: np.ndarray, affine: np.ndarray, refs: list[FrameRef],
           frames: list[int] | None, resampled: str | None) -> Image:
    header = refs[0].header
    spacing = [round(float(s), 6) for s in np.linalg.norm(affine[:3, :3], axis=0)]
    extra = {"slices": int(array.shape[2]), "shape": [int(n) for n in array.shape],
             "spacing": spacing, "orientation": orientation_code(affine), "series_index": info.index,
             "kind": info.kind, "dtype": str(array.dtype)}
    if refs[0].slope != 1 or refs[0].intercept != 0:
        extra["RescaleSlope"], extra["RescaleIntercept"] = float(refs[0].slope), float(refs[0].intercept)
    if resampled:
        extra["resampled"] = resampled
    summary = summarize(header, extra)
    source = DicomSource(files=[r.path if r.member is None else Path(r.member) for r in refs],
                         headers=[r.header for r in refs], series_uid=info.uid, frames=frames,
                         modality=info.modality, summary=summary,
                         archive=refs[0].path if refs[0].member is not None else None)
    return Image(array=array, affine=affine, path=path,
                 meta={"format": "dicom", "dicom": source, "dicom_summary": summary})
