"""NIfTI-1/2 reading and writing that keeps the source's exact geometry."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

import nibabel as nib
import numpy as np

from mitk.errors import InputError
from mitk.types import Image

NIFTI_SUFFIXES = (".nii", ".nii.gz")

_gzip: ModuleType
try:  # ISA-L decompresses gzip two to three times faster than zlib
    from isal import igzip as _gzip
except ImportError:  # pragma: no cover - optional speed-up
    _gzip = gzip


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _decompress(path: Path, raw: bytes) -> bytes:
    try:
        return _gzip.decompress(raw)
    except (OSError, EOFError, zlib.error, ValueError) as error:
        raise InputError(f"corrupt or truncated gzip data ({error})", path) from None


def read_nifti(path: str | Path) -> Image:
    """Read a NIfTI file: voxel array (on-disk dtype, or float32 when scaled) and its affine.

    The header travels in ``meta["nifti_header"]`` so that outputs can reproduce qform/sform exactly.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError("no such file", path) from None
    except OSError as error:  # permission denied, a broken network mount, …
        raise InputError(f"cannot read ({error.strerror or error})", path) from None
    if size == 0:
        raise InputError("empty file", path)
    try:
        if path.name.lower().endswith(".gz"):
            raw = _decompress(path, path.read_bytes())
            image: Any = nib.Nifti1Image.from_bytes(raw) if _is_nifti1(raw) else nib.Nifti2Image.from_bytes(raw)
            array = _array_from_buffer(image, raw, path)
        else:
            image = nib.load(path)
            array = np.asanyarray(image.dataobj)
    except InputError:
        raise
    except Exception as error:
        raise InputError(f"not a readable NIfTI image ({_one_line(error)})", path) from None
    header = image.header
    return Image(array=array, affine=image.affine, path=path, meta={"nifti_header": header, "format": "nifti"})


def _is_nifti1(raw: bytes) -> bool:
    if len(raw) < 4:
        return True
    return int.from_bytes(raw[:4], "little") == 348 or int.from_bytes(raw[:4], "big") == 348


def _array_from_buffer(image: Any, raw: bytes, path: Path) -> np.ndarray:
    """View the voxel data inside the decompressed buffer without another copy, then scale."""
    header = image.header
    shape = header.get_data_shape()
    dtype = header.get_data_dtype()
    offset = int(getattr(image.dataobj, "offset", header["vox_offset"]))
    needed = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) < needed:
        raise InputError(f"truncated NIfTI data ({len(raw)} of {needed} bytes)", path)
    array = np.ndarray(shape, dtype=dtype, buffer=raw, offset=offset, order="F")
    # nibabel moves scl_slope/scl_inter from the header into the array proxy when it loads an image.
    slope = float(getattr(image.dataobj, "slope", 1.0))
    inter = float(getattr(image.dataobj, "inter", 0.0))
    if slope != 1 or inter != 0:
        array = array.astype(np.float32) * np.float32(slope) + np.float32(inter)
    elif not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array


def _one_line(error: Exception) -> str:
    """``Type: message`` with the message's whitespace (newlines included) collapsed."""
    return " ".join(f"{type(error).__name__}: {error}".split())


def write_nifti(array: np.ndarray, path: str | Path, like: Image, dtype: Any = None,
                intent: str | None = None, description: str | None = None) -> Path:
    """Write ``array`` on ``like``'s grid: same affine, qform/sform codes, axis order and zooms.

    ``array`` must have ``like``'s spatial shape (extra trailing axes are allowed, e.g. channels).
    """
    path = Path(path)
    if tuple(array.shape[:3]) != tuple(like.spatial_shape):
        raise ValueError(f"array shape {array.shape} does not match the image grid {like.spatial_shape}")
    if dtype is not None:
        array = np.asarray(array, dtype=dtype)
    source = like.meta.get("nifti_header")
    if isinstance(source, nib.Nifti1Header):
        klass = nib.Nifti2Image if isinstance(source, nib.Nifti2Header) else nib.Nifti1Image
        header = source.copy()
        header.set_data_shape(array.shape)
        header.set_data_dtype(array.dtype)
        header.set_slope_inter(1.0, 0.0) if array.dtype.kind == "f" else header.set_slope_inter(np.nan, np.nan)
        header["cal_min"], header["cal_max"] = 0, 0
        header.extensions.clear()  # vendor extensions may carry identifying text
        zooms = (list(source.get_zooms()[:3]) + [1.0] * 3)[:3] + [1.0] * (array.ndim - 3)  # 2-D sources too
        header.set_zooms(zooms[: array.ndim])
        nifti = klass(array, None, header)
        # Reproduce both matrices and their codes exactly as the source had them.
        nifti.set_qform(source.get_qform(), code=int(source["qform_code"]))
        nifti.set_sform(source.get_sform(), code=int(source["sform_code"]))
        if int(source["qform_code"]) == 0 and int(source["sform_code"]) == 0:
            nifti.header.set_qform(None, code=0)
    else:
        nifti = nib.Nifti1Image(array, like.affine)
        nifti.set_qform(like.affine, code=1)
        nifti.set_sform(like.affine, code=1)
    if intent:
        nifti.header.set_intent(intent)
    nifti.header["descrip"] = (description or "mitk").encode()[:79]
    if path.name.lower().endswith(".gz"):
        # One in-memory serialisation compressed by ISA-L (when installed) beats nibabel's streaming zlib.
        # mtime 0: the same image gives the same bytes (reproducible samples, content-addressed storage)
        path.write_bytes(_gzip.compress(nifti.to_bytes(), compresslevel=1, mtime=0))
    else:
        nib.save(nifti, path)
    return path
