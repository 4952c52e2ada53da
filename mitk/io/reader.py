"""One entry point for reading any supported image: NIfTI files, DICOM files, folders and zips, NRRD, MetaImage
and the other formats ITK reads (through SimpleITK, the ``itk`` extra), PNG and JPEG pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mitk.errors import InputError
from mitk.image import Image
from mitk.io.itk import is_itk_file
from mitk.io.nifti_plain import is_nifti
from mitk.io.photo import is_photo, read_photo

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima", ".zip")


def looks_like_dicom(path: Path) -> bool:
    """A directory, a zip, a ``.dcm`` file, or any file with the ``DICM`` preamble marker."""
    if path.is_dir() or path.name.lower().endswith(DICOM_SUFFIXES):
        return True
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def load_image(path: str | Path, series: str | None = None, allow_resample: bool = False) -> Image:
    """Read an image from ``path``; ``series`` picks one series of a multi-series DICOM input."""
    path = Path(path)
    if not path.exists():
        raise InputError("broken symlink or symlink loop" if path.is_symlink() else "no such file or directory", path)
    if is_nifti(path):
        from mitk.io.nifti import read_nifti

        return read_nifti(path)
    if not path.is_dir() and is_itk_file(path):
        from mitk.io.itk import read_itk

        return read_itk(path)
    if looks_like_dicom(path):
        from mitk.io.dicom import read_dicom

        return read_dicom(path, series=series, allow_resample=allow_resample)
    if is_photo(path):
        return read_photo(path)
    raise InputError("not a NIfTI (.nii, .nii.gz), DICOM, NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd), other ITK "
                     "format, PNG or JPEG image", path)


def load_for_conversion(path: str | Path, series: str | None = None, allow_resample: bool = False) -> Image:
    """:func:`load_image` for ``mitk convert``: a plain DICOM series (one regular CT, MR or PET volume in a native
    little-endian syntax) is read without importing pydicom (:mod:`mitk.io.dicom.native`), with the same array,
    affine and summary; its ``meta["dicom"].headers`` then hold only the attributes mitk reads, not pydicom
    datasets. Everything else goes to :func:`load_image`."""
    path = Path(path)
    if series is None and path.exists() and not is_nifti(path) and (path.is_dir() or not is_itk_file(path)) \
            and looks_like_dicom(path):
        from mitk.io.dicom.native import read_native_series

        image = read_native_series(path)
        if image is not None:
            return image
    return load_image(path, series=series, allow_resample=allow_resample)


def is_planar(image: Image) -> bool:
    """True for a picture, radiograph or single slice: one voxel deep (its areas are in mm², not mL)."""
    return image.spatial_shape[2] == 1


def spacing_source(image: Image) -> str:
    """Where the pixel spacing came from: the file header, a DICOM attribute, or ``"unknown (1 mm assumed)"``
    for a picture or a radiograph without one."""
    for key in ("photo", "dicom_summary", "itk"):
        found = (image.meta.get(key) or {}).get("spacing_source")
        if found:
            return str(found)
    return "DICOM PixelSpacing" if image.meta.get("dicom_summary") else "file header"


def as_volume_array(array: np.ndarray) -> np.ndarray:
    """``array`` with trailing singleton axes beyond the third dropped, and a 2-D slice given a third axis of 1
    (a view: NIfTI stores a volume as 4-D or 5-D with ones at the end, a single slice as 2-D)."""
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return array[..., None] if array.ndim == 2 else array


SINGULAR_CONDITION = 1e12
"""An affine's linear part with a larger condition number is singular for mitk's purposes (float64 inverses
of it are noise): its voxel axes do not span three dimensions."""


def require_invertible_affine(image: Image) -> None:
    """Refuse an image whose voxel-to-world affine is not finite or is singular (a zero voxel size, or two voxel
    axes along one direction): no resampling, mapping back or world position can be computed on it."""
    affine = np.asarray(image.affine, dtype=np.float64)
    if not np.isfinite(affine).all():
        raise InputError("the affine (voxel-to-world matrix) has NaN or infinite entries", image.path)
    with np.errstate(all="ignore"):
        condition = np.linalg.cond(affine[:3, :3])
    if not np.isfinite(condition) or condition > SINGULAR_CONDITION:
        spacing = ", ".join(f"{n:g}" for n in np.linalg.norm(affine[:3, :3], axis=0))
        raise InputError(f"the affine is singular (voxel sizes {spacing} mm; its voxel axes do not span 3-D "
                         "space): fix the header's sform/qform", image.path)


def require_volume(image: Image, channels: bool = False) -> Image:
    """Check that ``image`` is a finite 3-D volume (trailing singleton axes are dropped) on a grid whose affine
    is finite and invertible."""
    require_invertible_affine(image)
    array = as_volume_array(image.array)
    if array.ndim == 4 and not channels and array.shape[3] in (3, 4) and array.shape[2] == 1:
        colour = "RGB" if array.shape[3] == 3 else "RGBA"
        raise InputError(f"a colour image ({colour}, {array.shape[3]} channels): this command takes one channel; "
                         "convert the image to greyscale first", image.path)
    if array.ndim != 3 and not (channels and array.ndim == 4):
        raise InputError(f"expected a 3-D volume, got {array.ndim}-D data of shape {array.shape}", image.path)
    if min(array.shape[:3]) < 1:
        raise InputError(f"empty volume of shape {array.shape}", image.path)
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            bad = int(array.size - np.count_nonzero(finite))
            raise InputError(f"{bad} voxels are NaN or infinite", image.path)
    elif array.dtype.kind not in "iub":
        raise InputError(f"unsupported voxel type {array.dtype}", image.path)
    image.array = array
    return image
