"""NIfTI without nibabel: telling a NIfTI file by its name, and writing a NIfTI-1 file for an image that has no
NIfTI header of its own (DICOM, NRRD, pictures) — the very bytes :func:`mitk.io.nifti.write_nifti` writes through
nibabel (tests compare them), without nibabel's import (which imports pydicom too).

The header is nibabel's for ``Nifti1Image(array, affine)`` with qform and sform set from the affine, code 1
(scanner): the sform holds the affine in float32; the qform holds the closest rotation (polar decomposition),
as a quaternion, with the voxel sizes and the sign of the third axis in ``pixdim``.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

_gzip: ModuleType
try:  # ISA-L compresses and decompresses gzip two to three times faster than zlib
    from isal import igzip as _gzip
except ImportError:  # pragma: no cover - optional speed-up
    _gzip = gzip

NIFTI1_CODES = {np.dtype(name): code for name, code in (
    ("uint8", 2), ("int16", 4), ("int32", 8), ("float32", 16), ("float64", 64), ("int8", 256), ("uint16", 512),
    ("uint32", 768))}
"""NIfTI-1 ``datatype`` codes of the voxel types written here (native byte order; nibabel refuses 64-bit
integers without an explicit header, so they go through it and its error)."""
HEADER = np.dtype([
    ("sizeof_hdr", "<i4"), ("data_type", "S10"), ("db_name", "S18"), ("extents", "<i4"), ("session_error", "<i2"),
    ("regular", "S1"), ("dim_info", "u1"), ("dim", "<i2", (8,)), ("intent_p", "<f4", (3,)), ("intent_code", "<i2"),
    ("datatype", "<i2"), ("bitpix", "<i2"), ("slice_start", "<i2"), ("pixdim", "<f4", (8,)),
    ("vox_offset", "<f4"), ("scl_slope", "<f4"), ("scl_inter", "<f4"), ("slice_end", "<i2"), ("slice_code", "u1"),
    ("xyzt_units", "u1"), ("cal_max", "<f4"), ("cal_min", "<f4"), ("slice_duration", "<f4"), ("toffset", "<f4"),
    ("glmax", "<i4"), ("glmin", "<i4"), ("descrip", "S80"), ("aux_file", "S24"), ("qform_code", "<i2"),
    ("sform_code", "<i2"), ("quatern", "<f4", (3,)), ("qoffset", "<f4", (3,)), ("srow", "<f4", (3, 4)),
    ("intent_name", "S16"), ("magic", "S4")])
"""The 348-byte NIfTI-1 header, little endian."""
VOX_OFFSET = 352
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    """Whether ``path`` is named as a NIfTI file (``.nii``, ``.nii.gz``)."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def plain_nifti_possible(array: np.ndarray, like: Any, intent: str | None) -> bool:
    """Whether :func:`plain_nifti_bytes` writes this image: a 3-D array of a type in :data:`NIFTI1_CODES` on a
    grid without a NIfTI source header, no intent, and an affine with non-zero, finite voxel axes."""
    if intent or like.meta.get("nifti_header") is not None or array.ndim != 3 \
            or tuple(array.shape) != tuple(like.spatial_shape):
        return False
    if array.dtype not in NIFTI1_CODES or not array.dtype.isnative:
        return False
    affine = np.asarray(like.affine, dtype=np.float64)
    zooms = np.sqrt(np.sum(affine[:3, :3] * affine[:3, :3], axis=0))
    return bool(affine.shape == (4, 4) and np.isfinite(affine).all() and (zooms > 0).all())


def plain_nifti_header(shape: tuple[int, ...], dtype: np.dtype, affine: np.ndarray, description: str) -> bytes:
    """The 352 bytes before the voxels: header and an empty extension flag."""
    affine = np.asarray(affine, dtype=np.float64)
    header = np.zeros((), dtype=HEADER)
    header["sizeof_hdr"] = 348
    header["dim"] = [len(shape), *shape, *[1] * (7 - len(shape))]
    header["datatype"] = NIFTI1_CODES[dtype]
    header["bitpix"] = dtype.itemsize * 8
    qfac, zooms, quaternion = _qform(affine)
    header["pixdim"] = [qfac, *zooms, 1, 1, 1, 1]
    header["vox_offset"] = VOX_OFFSET
    header["scl_slope"], header["scl_inter"] = 1, 0
    header["descrip"] = description.encode()[:79]
    header["qform_code"] = header["sform_code"] = 1
    header["quatern"] = quaternion[1:]
    header["qoffset"] = affine[:3, 3]
    header["srow"] = affine[:3, :]
    header["magic"] = b"n+1"
    return header.tobytes() + b"\x00" * (VOX_OFFSET - HEADER.itemsize)


def _qform(affine: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """``(qfac, voxel sizes, quaternion w, x, y, z)`` of the affine's rotation, as nibabel's ``set_qform``
    computes them (the closest orthogonal matrix, its largest-eigenvector quaternion with w ≥ 0)."""
    rzs = affine[:3, :3]
    zooms = np.sqrt(np.sum(rzs * rzs, axis=0))
    rotation = rzs / zooms
    qfac = 1
    if np.linalg.det(rotation) <= 0:
        qfac = -1
        rotation[:, -1] *= -1
    left, _, right = np.linalg.svd(rotation)
    closest = np.dot(left, right)
    xx, yx, zx, xy, yy, zy, xz, yz, zz = closest.flat
    k = np.array([[xx - yy - zz, 0, 0, 0],
                  [yx + xy, yy - xx - zz, 0, 0],
                  [zx + xz, zy + yz, zz - xx - yy, 0],
                  [yz - zy, zx - xz, xy - yx, xx + yy + zz]]) / 3.0
    values, vectors = np.linalg.eigh(k)
    quaternion = vectors[[3, 0, 1, 2], np.argmax(values)]
    if quaternion[0] < 0:
        quaternion *= -1
    return qfac, zooms, quaternion


def write_plain_nifti(array: np.ndarray, path: Path, affine: np.ndarray, description: str | None = None) -> Path:
    """Write ``array`` (see :func:`plain_nifti_possible`) as ``.nii`` or ``.nii.gz`` (ISA-L level 1, mtime 0)."""
    head = plain_nifti_header(array.shape, array.dtype, affine, description or "mitk")
    voxels = np.asarray(array).T  # NIfTI stores the first axis fastest: the transpose's C order
    if path.name.lower().endswith(".gz"):
        path.write_bytes(_gzip.compress(head + voxels.tobytes(), compresslevel=1, mtime=0))
        return path
    with open(path, "wb") as handle:
        handle.write(head)
        handle.write(np.ascontiguousarray(voxels).data)
    return path
