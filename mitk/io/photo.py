"""PNG and JPEG photographs (fundus photographs, exported radiographs) as mitk images.

A photograph has no geometry of its own: its pixels are laid out as a DICOM image with the standard
orientation (columns along patient left, rows along posterior; LPS), 1 mm apart, so that the voxel
array is ``(columns, rows, 1)`` for greyscale and ``(columns, rows, 1, 3)`` for colour, and a PNG written
from ``array[:, :, 0].T`` shows the picture the right way up. Alpha is dropped, palettes are expanded,
and a JPEG's EXIF orientation is applied first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mitk.errors import InputError
from mitk.image import Image

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")
PHOTO_AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])
"""Columns → patient left (−x in RAS), rows → posterior (−y in RAS), as a DICOM image in LPS."""
MAX_PIXELS = 100_000_000
"""Larger pictures are refused before decoding (Pillow's own decompression-bomb guard is 89 Mpx)."""


def is_photo(path: Path) -> bool:
    return path.name.lower().endswith(PHOTO_SUFFIXES)


def read_photo(path: str | Path) -> Image:
    """Read a PNG or JPEG file: greyscale as ``(columns, rows, 1)``, colour as ``(columns, rows, 1, 3)``."""
    from PIL import Image as PillowImage
    from PIL import ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with PillowImage.open(path) as picture:  # over twice Pillow's limit, open() itself refuses (below)
            if picture.width * picture.height > MAX_PIXELS:
                raise InputError(f"picture of {picture.width}×{picture.height} pixels is too large", path)
            picture = ImageOps.exif_transpose(picture) or picture
            mode = picture.mode
            picture.load()
            if mode in ("I;16", "I;16B", "I;16L", "I", "F", "L"):
                pixels = np.asarray(picture)
            elif mode in ("1", "LA"):
                pixels = np.asarray(picture.convert("L"))
            else:  # RGB, RGBA, P, CMYK, YCbCr, LAB …
                pixels = np.asarray(picture.convert("RGB"))
            file_format = picture.format or path.suffix.lstrip(".").upper()
    except PillowImage.DecompressionBombError:
        raise InputError(f"picture is too large (over twice Pillow's decompression-bomb limit of "
                         f"{PillowImage.MAX_IMAGE_PIXELS or 0:,} pixels; mitk reads up to {MAX_PIXELS:,})",
                         path) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise InputError(f"not a readable PNG or JPEG picture ({error})", path) from None
    if pixels.ndim == 3 and pixels.shape[2] == 3 and _is_grey(pixels):
        pixels = pixels[..., 0]
    if pixels.ndim == 2:
        array = np.ascontiguousarray(pixels.T)[:, :, None]
    else:
        array = np.ascontiguousarray(np.transpose(pixels, (1, 0, 2)))[:, :, None, :]
    summary = {"format": file_format, "mode": mode, "shape": list(array.shape),
               "channels": 1 if array.ndim == 3 else int(array.shape[-1]), "spacing_source": "unknown (1 mm assumed)"}
    return Image(array=array, affine=PHOTO_AFFINE.copy(), path=path, meta={"format": "photo", "photo": summary})


LUMA = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights of red, green and blue: Pillow's ``convert("L")``, OpenCV and MATLAB's ``rgb2gray``."""


def luminance(array: np.ndarray) -> np.ndarray:
    """The grey value (float32) of each pixel of a channels-last RGB (or RGBA: alpha ignored) array."""
    values = np.asarray(array)
    return np.tensordot(values[..., :3].astype(np.float32), np.asarray(LUMA, np.float32), axes=([-1], [0]))


def _is_grey(pixels: np.ndarray) -> bool:
    """True when every pixel of a colour picture has equal red, green and blue (a greyscale JPEG saved as RGB)."""
    return bool(np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 0], pixels[..., 2]))


def write_png(array: np.ndarray, path: str | Path, like: Image | None = None) -> Path:
    """Write a one-slice ``(columns, rows, 1[, 3])`` array as a lossless PNG, the right way up (the inverse of
    :func:`read_photo`): greyscale 8 or 16 bit as the values need, colour as 8-bit RGB. Label maps keep their
    values (0, 1, 2 …), as nnU-Net's 2-D label files do. ``like`` is only named in errors."""
    from PIL import Image as PillowImage

    path = Path(path)
    source = like.path if like is not None else path
    values = np.asarray(array)
    if values.ndim == 2:
        values = values[:, :, None]
    if values.ndim not in (3, 4) or values.shape[2] != 1:
        depth = values.shape[2] if values.ndim >= 3 else 1
        raise InputError(f"a PNG holds one 2-D picture, this image has {depth} slices: name the output "
                         ".nii.gz, .nrrd or .mha", source)
    plane = np.swapaxes(values[:, :, 0, ...], 0, 1)
    if values.ndim == 4 and plane.shape[-1] not in (3, 4):
        raise InputError(f"a PNG holds grey or RGB(A) pixels, not {plane.shape[-1]} channels", source)
    if values.dtype == np.bool_:
        plane = plane.astype(np.uint8)
    low, high = (int(plane.min()), int(plane.max())) if plane.size and plane.dtype.kind in "iu" else (0, -1)
    if plane.dtype.kind not in "iu" or low < 0 or high > (255 if values.ndim == 4 else 65535):
        raise InputError(f"a PNG holds whole numbers 0–65535 (0–255 in colour); this image is {values.dtype} "
                         "with other values: name the output .nii.gz, .nrrd or .mha", source)
    plane = np.ascontiguousarray(plane.astype(np.uint8 if high < 256 else np.uint16))
    PillowImage.fromarray(plane).save(path, format="PNG", optimize=False)
    return path
