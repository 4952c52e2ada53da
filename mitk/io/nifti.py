"""NIfTI-1/2 reading and writing that keeps the source's exact geometry."""

from __future__ import annotations

import gzip
import io
import logging
import zlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar, cast

import nibabel as nib
import numpy as np

from mitk.errors import InputError, MitkError
from mitk.image import Image
from mitk.io.limits import allocate, array_bytes, check_image_bytes
from mitk.io.nifti_plain import NIFTI_SUFFIXES as NIFTI_SUFFIXES  # re-exported: mitk.io.nifti names them too
from mitk.io.nifti_plain import is_nifti as is_nifti

LOG = logging.getLogger("mitk.io.nifti")
NIFTI1_HEADER_SIZE = 348
NIFTI2_HEADER_SIZE = 540
READ_STEP = 1 << 24
"""Largest single decompression step while reading a ``.nii.gz`` (bounds the temporary copy)."""
FREE_TEXT_FIELDS = ("descrip", "aux_file", "intent_name", "db_name", "data_type")
"""Header fields that hold free text from whoever wrote the input; outputs leave them empty."""
QFORM_SFORM_TOLERANCE_MM = 0.01
"""qform and sform closer than this at every corner of the grid agree (far above float32 rounding)."""

_gzip: ModuleType
_GZIP_ERRORS: type[Exception]
try:  # ISA-L decompresses gzip two to three times faster than zlib
    from isal import igzip as _gzip
    from isal import isal_zlib

    _GZIP_ERRORS = cast("type[Exception]", isal_zlib.error)
except ImportError:  # pragma: no cover - optional speed-up
    _gzip = gzip
    _GZIP_ERRORS = zlib.error
_T = TypeVar("_T")


def read_nifti(path: str | Path) -> Image:
    """Read a NIfTI file: voxel array (on-disk dtype, or float32 when scaled) and its affine.

    The header travels in ``meta["nifti_header"]`` so that outputs can reproduce qform/sform exactly.
    The data size the header claims is checked against ``MITK_MAX_IMAGE_BYTES`` before anything is
    allocated; a ``.nii.gz`` is decompressed in steps into one buffer of exactly that size, and refused
    when its decompressed data runs past it (see ``docs/cli.md``, *Size limits*). The affine follows
    nibabel's rule (sform when ``sform_code > 0``, else qform); a qform that disagrees with that sform
    is reported as a warning naming the file.
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
            header, array = _read_gzip(path)
        else:
            header, array = _read_plain(path)
        affine = header.get_best_affine()
    except MitkError:  # InputError, or a UsageError such as a malformed MITK_MAX_IMAGE_BYTES
        raise
    except Exception as error:
        raise InputError(f"not a readable NIfTI image ({_one_line(error)})", path) from None
    warn_if_qform_disagrees(header, path)
    return Image(array=array, affine=affine, path=path, meta={"nifti_header": header, "format": "nifti"})


def _read_plain(path: Path) -> tuple[Any, np.ndarray]:
    """An uncompressed ``.nii``: nibabel maps the file; bytes past the data are ignored, as every reader does."""
    image: Any = nib.load(path)
    header = image.header
    shape, dtype = header.get_data_shape(), header.get_data_dtype()
    _check_offset(int(image.dataobj.offset), header.sizeof_hdr, path)  # the image's header has it reset to 0
    slope, inter = float(image.dataobj.slope), float(image.dataobj.inter)
    scaled = slope != 1 or inter != 0
    check_image_bytes(array_bytes(shape, np.float32 if scaled and dtype.itemsize < 4 else dtype), path,
                      "NIfTI voxel data")
    return header, _scale(np.asanyarray(image.dataobj.get_unscaled()), slope, inter)


def _read_gzip(path: Path) -> tuple[Any, np.ndarray]:
    """A ``.nii.gz``: header first, then exactly the bytes it describes, into one preallocated buffer."""
    with _gzip.open(path, "rb") as stream:
        prefix = _decompressed(path, stream.read, NIFTI2_HEADER_SIZE)
        header_class = _header_class(prefix, path)
        probe = header_class.from_fileobj(io.BytesIO(prefix[: header_class.sizeof_hdr]))
        shape, dtype = probe.get_data_shape(), probe.get_data_dtype()
        offset = _check_offset(int(probe.get_data_offset()), header_class.sizeof_hdr, path)
        needed = offset + array_bytes(shape, dtype)
        slope, inter = probe.get_slope_inter()
        slope, inter = (1.0, 0.0) if slope is None or inter is None else (slope, inter)
        scaled = (slope != 1 or inter != 0) and dtype.itemsize < 4
        check_image_bytes(array_bytes(shape, np.float32 if scaled else dtype), path, "NIfTI voxel data")
        buffer = allocate((needed,), np.uint8, path, "NIfTI header and voxel data")
        view = buffer.data
        start = min(len(prefix), needed)
        view[:start] = prefix[:start]
        got = start + _decompressed(path, _read_into, stream, view[start:])
        if got < needed:
            raise InputError(f"truncated NIfTI data ({got} of {needed} bytes)", path)
        if len(prefix) > needed or _decompressed(path, stream.read, 1):
            raise InputError(f"decompressed data runs past the {needed} bytes its header describes "
                             "(trailing data is refused)", path)
    header = type(probe).from_fileobj(io.BytesIO(view[:offset]))
    header.set_data_offset(0)  # as nibabel leaves a loaded image's header: offset and scaling consumed
    header.set_slope_inter(None, None)
    array = np.ndarray(shape, dtype=dtype, buffer=buffer, offset=offset, order="F")
    return header, _scale(array, slope, inter)


def _check_offset(offset: int, header_size: int, path: Path) -> int:
    """Where the voxels start; a vox_offset inside the header (nibabel would read the header as voxels) is refused."""
    if offset < header_size:
        raise InputError(f"vox_offset {offset} points inside the {header_size}-byte header", path)
    return offset


def _decompressed(path: Path, read: Callable[..., _T], *args: Any) -> _T:
    """``read(*args)`` on a gzip stream, its decompression errors as one InputError naming ``path``."""
    try:
        return read(*args)
    except (OSError, EOFError, zlib.error, _GZIP_ERRORS) as error:
        raise InputError(f"corrupt or truncated gzip data ({_one_line(error)})", path) from None


def _header_class(prefix: bytes, path: Path) -> Any:
    """NIfTI-1 or NIfTI-2 from ``sizeof_hdr`` (348 or 540, either byte order)."""
    if len(prefix) >= 4:
        for order in ("little", "big"):
            size = int.from_bytes(prefix[:4], order)
            if size == NIFTI1_HEADER_SIZE:
                return nib.Nifti1Header
            if size == NIFTI2_HEADER_SIZE:
                return nib.Nifti2Header
    raise InputError("not a NIfTI image (the header size is neither 348 nor 540 bytes)", path)


def _read_into(stream: Any, view: memoryview) -> int:
    """Fill ``view`` from ``stream`` in steps of at most :data:`READ_STEP` bytes; the count read."""
    got = 0
    while got < len(view):
        count = stream.readinto(view[got: got + READ_STEP])
        if not count:
            break
        got += count
    return got


def _scale(array: np.ndarray, slope: float, inter: float) -> np.ndarray:
    """Stored values → real values: float32 when scl_slope/scl_inter scale them, native byte order always."""
    if slope != 1 or inter != 0:
        real = array.astype(np.float32)
        real *= np.float32(slope)
        real += np.float32(inter)
        return real
    if not array.dtype.isnative:
        return array.astype(array.dtype.newbyteorder("="))
    return array


def warn_if_qform_disagrees(header: Any, path: Path) -> float | None:
    """Log one warning when both qform and sform are set (codes > 0) and place the grid differently.

    mitk, like nibabel, uses the sform whenever ``sform_code > 0``. ITK (SimpleITK) uses the sform only
    when its code is 1 (scanner) and it has no shear; otherwise it prefers a present qform. Returns the
    largest distance (mm) between the two at the grid's corners when it is over the tolerance, else None.
    """
    qform_code, sform_code = int(header["qform_code"]), int(header["sform_code"])
    if qform_code <= 0 or sform_code <= 0:
        return None
    shape = [*header.get_data_shape()[:3], 1, 1][:3]
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)]).T
    qform, sform = header.get_qform(), header.get_sform()
    distance = float(np.linalg.norm((qform @ corners - sform @ corners)[:3], axis=0).max())
    if distance <= QFORM_SFORM_TOLERANCE_MM:
        return None
    matrix = sform[:3, :3] / np.linalg.norm(sform[:3, :3], axis=0)
    itk = "sform" if sform_code == 1 and np.allclose(matrix.T @ matrix, np.eye(3), atol=1e-4) else "qform"
    LOG.warning("%s: qform (code %d) and sform (code %d) disagree by up to %.3g mm; mitk uses the sform "
                "as nibabel does (ITK/SimpleITK uses the %s)", path, qform_code, sform_code, distance, itk)
    return distance


def _one_line(error: Exception) -> str:
    """``Type: message`` with the message's whitespace (newlines included) collapsed."""
    return " ".join(f"{type(error).__name__}: {error}".split())


def write_nifti(array: np.ndarray, path: str | Path, like: Image, dtype: Any = None,
                intent: str | None = None, description: str | None = None) -> Path:
    """Write ``array`` on ``like``'s grid: same affine, qform/sform codes, axis order and zooms.

    ``array`` must have ``like``'s spatial shape (extra trailing axes are allowed, e.g. channels). A
    one-slice array on a 2-D NIfTI source is written 2-D, like its source. The source header's free-text
    fields (:data:`FREE_TEXT_FIELDS`) and extensions are not copied: ``descrip`` is mitk's own.
    """
    path = Path(path)
    nifti = nifti_image(array, like, dtype=dtype, intent=intent, description=description)
    if path.name.lower().endswith(".gz"):
        # One in-memory serialisation compressed by ISA-L (when installed) beats nibabel's streaming zlib.
        # mtime 0: the same image gives the same bytes (reproducible samples, content-addressed storage)
        path.write_bytes(_gzip.compress(nifti.to_bytes(), compresslevel=1, mtime=0))
    else:
        nib.save(nifti, path)
    return path


def nifti_image(array: np.ndarray, like: Image, dtype: Any = None, intent: str | None = None,
                description: str | None = None) -> nib.Nifti1Image:
    """The in-memory NIfTI image :func:`write_nifti` writes: ``array`` on ``like``'s grid and header."""
    if tuple((*array.shape, 1, 1)[:3]) != tuple(like.spatial_shape):
        raise ValueError(f"array shape {array.shape} does not match the image grid {like.spatial_shape}")
    if dtype is not None:
        array = np.asarray(array, dtype=dtype)
    source = like.meta.get("nifti_header")
    if isinstance(source, nib.Nifti1Header):
        klass = nib.Nifti2Image if isinstance(source, nib.Nifti2Header) else nib.Nifti1Image
        if len(source.get_data_shape()) == 2 and array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]  # a 2-D source gets a 2-D output
        header = source.copy()
        for name in FREE_TEXT_FIELDS:
            if name in header:
                header[name] = b""
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
    return nifti
