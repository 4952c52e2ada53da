"""NRRD, MetaImage and the other formats ITK reads, through SimpleITK (the ``itk`` extra).

Geometry is SimpleITK's: the voxel → RAS+ affine is exactly ``flip(LPS) · [direction · diag(spacing) | origin]``
as the file's origin, spacing and direction say, for any axis order and oblique directions. A 2-D file becomes
``(columns, rows, 1)`` with its in-plane direction and a third axis of 1 mm along z (as ITK embeds 2-D in 3-D); a vector
pixel (RGB, RGBA, a displacement) becomes channels last. Writing goes the other way: a one-slice image whose
grid lies in a patient plane at z = 0 is written 2-D, anything else 3-D with the exact origin, spacing and
direction of the source when it was read from an ITK file.

SimpleITK is imported only when such a file is read or written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mitk.errors import InputError, UsageError
from mitk.extras import install_hint
from mitk.image import Image, ras_to_lps

READ_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd", ".gipl", ".gipl.gz", ".vtk", ".mnc", ".mnc2", ".hdr",
                 ".tif", ".tiff", ".lsm", ".pic", ".mrc", ".rec", ".bmp")
"""Files read through SimpleITK (NRRD, MetaImage, GIPL, VTK structured points, MINC, Analyze, TIFF stacks,
Zeiss LSM, Bio-Rad PIC, MRC, BMP)."""
WRITE_SUFFIXES = (".nrrd", ".mha", ".mnc")
"""Single-file formats mitk writes through SimpleITK (each written to a temporary file and renamed): those that
keep origin, spacing and direction exactly (legacy VTK drops the direction, TIFF the origin and direction)."""
DETACHED = {".nhdr": ".nrrd", ".mhd": ".mha"}
"""Header-and-data-file formats: read, but written as their single-file twin (a detached pair cannot be
renamed into place atomically, and its header names the data file)."""
FORMAT_NAMES = {".nrrd": "NRRD", ".nhdr": "NRRD", ".mha": "MetaImage", ".mhd": "MetaImage"}


def itk_suffix(path: Path) -> str | None:
    """The ITK format suffix ``path`` ends with (lower case), or None."""
    name = path.name.lower()
    return next((suffix for suffix in sorted(READ_SUFFIXES, key=len, reverse=True) if name.endswith(suffix)), None)


def is_itk_file(path: Path) -> bool:
    return itk_suffix(path) is not None


def import_sitk(path: Path | None, what: str = "reading") -> Any:
    """SimpleITK, or a one-line error naming the extra that installs it."""
    try:
        import SimpleITK as sitk
    except ImportError:
        suffix = itk_suffix(path) if path is not None else None
        name = FORMAT_NAMES.get(suffix or "", (suffix or "ITK").lstrip(".").upper())
        raise UsageError(f"{what} {name} files needs SimpleITK, which is not installed; install it with: "
                         f"{install_hint('itk')}", path) from None
    return sitk


def read_itk(path: str | Path) -> Image:
    """Read a file through SimpleITK with its exact geometry (see the module docstring)."""
    path = Path(path)
    sitk = import_sitk(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        source = reader.Execute()
    except RuntimeError as error:
        raise InputError(f"not a readable {FORMAT_NAMES.get(itk_suffix(path) or '', 'ITK')} image "
                         f"({_reason(error)})", path) from None
    image = from_sitk_image(source, path)
    suffix = itk_suffix(path) or ""
    image.meta["itk"]["format"] = FORMAT_NAMES.get(suffix, reader.GetImageIO().replace("ImageIO", ""))
    return image


def from_sitk_image(source: Any, path: Path | None = None) -> Image:
    """A ``SimpleITK.Image`` (2-D, 3-D, or 4-D with a separate fourth axis) as an :class:`Image`."""
    import SimpleITK as sitk

    dimension = source.GetDimension()
    components = source.GetNumberOfComponentsPerPixel()
    pixel = source.GetPixelIDTypeAsString()
    if "complex" in pixel:
        raise InputError(f"unsupported pixel type {pixel}", path)
    array = sitk.GetArrayFromImage(source)  # (…, k, j, i[, components]): reverse the spatial axes
    origin, spacing = np.asarray(source.GetOrigin(), float), np.asarray(source.GetSpacing(), float)
    direction = np.asarray(source.GetDirection(), float).reshape(dimension, dimension)
    vector = components > 1
    if dimension == 2:
        array = np.swapaxes(array, 0, 1)[:, :, None, ...]
        origin, spacing = np.append(origin, 0.0), np.append(spacing, 1.0)
        plane = np.eye(3)  # the third axis along z, as ITK embeds a 2-D image in 3-D
        plane[:2, :2] = direction
        direction = plane
    elif dimension == 3:
        array = array.transpose((2, 1, 0, 3) if vector else (2, 1, 0))
    elif dimension == 4 and not vector and np.allclose(direction[3, :3], 0) and np.allclose(direction[:3, 3], 0):
        array = array.transpose((3, 2, 1, 0))  # a time or channel axis last, as a 4-D NIfTI
        origin, spacing, direction = origin[:3], spacing[:3], direction[:3, :3]
    else:
        raise InputError(f"expected a 2-D or 3-D image (or 4-D with a separate fourth axis), got {dimension}-D "
                         f"with {components} components per pixel", path)
    affine = sitk_affine(origin, spacing, direction)
    summary = {"format": "SimpleITK", "dimension": dimension, "components": components, "pixel_type": pixel,
               "spacing_source": "file header"}
    geometry = {"origin": tuple(map(float, origin)), "spacing": tuple(map(float, spacing)),
                "direction": tuple(map(float, direction.ravel()))}
    return Image(array=array, affine=affine, path=path,
                 meta={"format": "itk", "itk": summary, "itk_geometry": geometry})


def sitk_affine(origin: Any, spacing: Any, direction: Any) -> np.ndarray:
    """The voxel → RAS+ affine of an ITK grid (``origin``, ``spacing``, ``direction`` are LPS)."""
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(direction, dtype=np.float64).reshape(3, 3) @ np.diag(np.asarray(spacing, float))
    lps[:3, 3] = np.asarray(origin, dtype=np.float64)
    return ras_to_lps(lps)


def itk_geometry(like: Image) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Origin, spacing and direction (LPS) of ``like``'s grid: the source file's own values when the image was
    read from an ITK file and its affine is unchanged (so they are written back bit for bit)."""
    stored = like.meta.get("itk_geometry")
    if stored is not None:
        origin, spacing, direction = stored["origin"], stored["spacing"], stored["direction"]
        if np.array_equal(sitk_affine(origin, spacing, direction), like.affine):
            return tuple(origin), tuple(spacing), tuple(direction)
    lps = ras_to_lps(like.affine)
    norms = np.linalg.norm(lps[:3, :3], axis=0)
    return (tuple(float(v) for v in lps[:3, 3]), tuple(float(s) for s in norms),
            tuple(float(v) for v in (lps[:3, :3] / norms).ravel()))


def writes_planar(like: Image, array: np.ndarray) -> bool:
    """True when a one-slice ``array`` on ``like``'s grid can be written 2-D without losing geometry: its rows
    and columns lie in the patient's z = 0 plane and the slice axis is along z."""
    if array.ndim < 3 or array.shape[2] != 1:
        return False
    origin, _, direction = itk_geometry(like)
    matrix = np.asarray(direction).reshape(3, 3)
    return bool(origin[2] == 0 and matrix[2, 0] == 0 and matrix[2, 1] == 0 and matrix[0, 2] == 0
                and matrix[1, 2] == 0 and matrix[2, 2] == 1)


def write_itk(array: np.ndarray, path: str | Path, like: Image, *, compress: bool = True) -> Path:
    """Write ``array`` (``(I, J, K[, C])``) on ``like``'s grid in the format ``path``'s suffix names."""
    path = Path(path)
    sitk = import_sitk(path, "writing")
    values = np.asarray(array)
    if values.dtype == np.bool_:
        values = values.astype(np.uint8)
    if tuple((*values.shape, 1, 1)[:3]) != tuple(like.spatial_shape):
        raise ValueError(f"array shape {values.shape} does not match the image grid {like.spatial_shape}")
    if values.ndim == 2:
        values = values[:, :, None]
    vector = values.ndim == 4
    origin, spacing, direction = itk_geometry(like)
    if writes_planar(like, values):
        plane = values[:, :, 0, ...]
        image = sitk.GetImageFromArray(np.ascontiguousarray(np.swapaxes(plane, 0, 1)), isVector=vector)
        matrix = np.asarray(direction).reshape(3, 3)
        image.SetOrigin(origin[:2])
        image.SetSpacing(spacing[:2])
        image.SetDirection(tuple(float(v) for v in matrix[:2, :2].ravel()))
    else:
        order = (2, 1, 0, 3) if vector else (2, 1, 0)
        image = sitk.GetImageFromArray(np.ascontiguousarray(values.transpose(order)), isVector=vector)
        image.SetOrigin(origin)
        image.SetSpacing(spacing)
        image.SetDirection(direction)
    try:
        sitk.WriteImage(image, str(path), compress)
    except RuntimeError as error:
        raise UsageError(f"SimpleITK cannot write this image as {path.suffix} ({_reason(error)})", path) from None
    return path


def _reason(error: RuntimeError) -> str:
    """ITK's own explanation from a SimpleITK exception: its last non-empty line, without the source location."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[-1] if lines else "SimpleITK cannot read it"
    return " ".join(text.split())[:200]
