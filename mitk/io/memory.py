"""Images already in memory: nibabel, SimpleITK, MONAI ``MetaTensor`` and numpy arrays as :class:`Image`.

:func:`as_image` is what the Python API calls on every input. Each source's geometry becomes the
voxel → RAS+ millimetre affine mitk uses everywhere: SimpleITK's LPS direction, spacing and origin are
converted explicitly, a ``MetaTensor`` in LPS space likewise, and a numpy array must come with its affine
(there is no silent identity). :func:`to_sitk` goes the other way for the results.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from mitk.errors import InputError, UsageError
from mitk.image import Image, ras_to_lps
from mitk.io.itk import sitk_affine  # noqa: F401  (re-exported: its home before mitk.io.itk)

ImageLike = Any
"""What the Python API accepts as an image: a path (``str`` or ``os.PathLike``), an :class:`Image`, a nibabel
image, a ``SimpleITK.Image``, a MONAI ``MetaTensor``, or a numpy array / torch tensor with ``affine=``."""


def is_path(source: object) -> bool:
    return isinstance(source, str | os.PathLike)


def as_image(source: ImageLike, *, affine: Any = None, series: str | None = None,
             allow_resample: bool = False) -> Image:
    """Return ``source`` as an :class:`Image` with its voxel → RAS+ mm affine.

    ``series`` and ``allow_resample`` apply to DICOM paths (as ``--series`` and ``--allow-resample``);
    ``affine`` (4×4, voxel → RAS+ mm) is required for a numpy array or a plain tensor and refused for
    sources that carry their own geometry. An :class:`Image` is returned as a shallow copy, so checks that
    drop trailing singleton axes never change the caller's object.
    """
    if is_path(source):
        if affine is not None:
            raise UsageError("affine= is for arrays; a file carries its own geometry", Path(source))
        from mitk.io.reader import load_image

        return load_image(source, series=series, allow_resample=allow_resample)
    if series is not None:
        raise UsageError("series= picks a DICOM series of a path; this input is an image in memory")
    if isinstance(source, Image):
        _no_affine(affine, "an mitk Image")
        return dataclasses.replace(source, meta=dict(source.meta))
    kind = _kind(source)
    if kind == "metatensor":
        _no_affine(affine, "a MONAI MetaTensor")
        return _from_metatensor(source)
    if kind == "sitk":
        _no_affine(affine, "a SimpleITK image")
        return _from_sitk(source)
    if kind == "nibabel":
        _no_affine(affine, "a nibabel image")
        return _from_nibabel(source)
    if kind == "array":
        if affine is None:
            raise UsageError("an array has no geometry: pass affine= (the 4x4 voxel-to-RAS+ mm matrix, e.g. "
                             "nibabel's image.affine); mitk never assumes an identity")
        array = np.asarray(source.detach().cpu().numpy() if hasattr(source, "detach") else source)
        matrix = np.asarray(affine, dtype=np.float64)
        if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
            raise UsageError(f"affine= must be a finite 4x4 matrix, got shape {matrix.shape}")
        if abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
            raise UsageError("affine= is singular: its 3x3 part must map voxels to a volume")
        return Image(array=array, affine=matrix, meta={"format": "array"})
    raise UsageError(f"cannot use a {type(source).__module__}.{type(source).__qualname__} as an image: give a "
                     "path, a nibabel or SimpleITK image, a MONAI MetaTensor, or a numpy array with affine=")


def _no_affine(affine: Any, what: str) -> None:
    if affine is not None:
        raise UsageError(f"affine= is for arrays; {what} carries its own geometry")


def _kind(source: object) -> str | None:
    """Classify by type without importing libraries the caller has not imported."""
    modules = {klass.__module__.split(".")[0] for klass in type(source).__mro__}
    if "monai" in modules and hasattr(source, "affine"):
        return "metatensor"
    if "SimpleITK" in modules:
        return "sitk"
    if "nibabel" in modules and hasattr(source, "affine") and hasattr(source, "dataobj"):
        return "nibabel"
    if isinstance(source, np.ndarray) or "torch" in modules:
        return "array"
    return None


def _from_nibabel(source: Any) -> Image:
    """The array as nibabel's ``dataobj`` gives it (scaled when the header says so), its affine, and — for
    NIfTI — its header, so that results are written exactly as from the file."""
    import nibabel as nib

    array = np.asanyarray(source.dataobj)
    meta: dict[str, Any] = {"format": "nibabel"}
    if isinstance(source, nib.Nifti1Image | nib.Nifti2Image):
        meta = {"nifti_header": source.header, "format": "nifti"}
    if source.affine is None:
        raise InputError("the nibabel image has no affine")
    filename = source.get_filename() if hasattr(source, "get_filename") else None
    return Image(array=array, affine=np.asarray(source.affine, dtype=np.float64),
                 path=Path(filename) if filename else None, meta=meta)


def _from_sitk(source: Any) -> Image:
    """A 2-D or 3-D ``SimpleITK.Image`` (vector pixels as channels last), as :func:`mitk.io.itk.read_itk` reads
    a file."""
    from mitk.io.itk import from_sitk_image

    image = from_sitk_image(source)
    image.meta["format"] = "sitk"
    return image


def _from_metatensor(source: Any) -> Image:
    """A MONAI ``MetaTensor``: 3-D, or 4-D channel first (MONAI's convention); its ``space`` may be LPS."""
    array = source.detach().cpu().numpy() if hasattr(source, "detach") else np.asarray(source)
    if array.ndim == 5:
        raise UsageError("a 5-D MetaTensor is a batch: pass its items one by one (or as a list)")
    if array.ndim == 4:
        array = np.moveaxis(array, 0, -1)  # channels last, as in every mitk Image
    affine: np.ndarray = np.asarray(source.affine.detach().cpu().numpy() if hasattr(source.affine, "detach")
                                    else source.affine, dtype=np.float64)
    meta = getattr(source, "meta", None) or {}
    if str(meta.get("space", "RAS")).upper().endswith("LPS"):
        affine = ras_to_lps(affine)
    filename = meta.get("filename_or_obj")  # set by MONAI's LoadImage: the file the tensor was read from
    path = Path(filename) if isinstance(filename, str | os.PathLike) and str(filename) else None
    return Image(array=array, affine=affine, path=path, meta={"format": "metatensor"})


def to_sitk(array: np.ndarray, affine: Any) -> Any:
    """A ``SimpleITK.Image`` of ``array`` (``(I, J, K[, C])``) on the grid of the RAS ``affine`` (ITK's LPS)."""
    import SimpleITK as sitk

    values = np.asarray(array)
    if values.dtype == np.bool_:
        values = values.astype(np.uint8)
    vector = values.ndim == 4
    image = sitk.GetImageFromArray(np.ascontiguousarray(values.transpose((2, 1, 0, 3) if vector else (2, 1, 0))),
                                   isVector=vector)
    lps = ras_to_lps(affine)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    image.SetOrigin([float(v) for v in lps[:3, 3]])
    return image
