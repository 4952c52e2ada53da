"""Images and their geometry: the voxel array with its 4×4 voxel-to-world affine (RAS+ mm).

The ground floor of mitk: plain numpy, imported by every layer above, importing nothing of mitk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating[Any]]
IntArray = npt.NDArray[np.integer[Any]]

__all__ = ["FloatArray", "Image", "IntArray", "map_box_extents", "orientation_code", "ras_to_lps", "voxel_spacing"]

_AXIS_CODES = (("L", "R"), ("P", "A"), ("I", "S"))


def orientation_code(affine: npt.ArrayLike) -> str:
    """Return the axis code of an affine, e.g. ``"RAS"`` or ``"LPS"``: where each voxel axis points.

    For oblique affines each voxel axis is named after the world axis it is closest to.
    """
    matrix = np.asarray(affine, dtype=float)[:3, :3]
    lengths = np.linalg.norm(matrix, axis=0)
    matrix = matrix / np.where(lengths > 0, lengths, 1.0)  # directions only: voxel size must not matter
    codes = []
    used: set[int] = set()
    # Assign the strongest components first so that two voxel axes never claim one world axis.
    order = np.argsort(-np.max(np.abs(matrix), axis=0))
    chosen: dict[int, str] = {}
    for voxel_axis in order:
        column = np.abs(matrix[:, voxel_axis]).copy()
        for world_axis in used:
            column[world_axis] = -1.0
        world_axis = int(np.argmax(column))
        used.add(world_axis)
        sign = matrix[world_axis, voxel_axis] >= 0
        chosen[int(voxel_axis)] = _AXIS_CODES[world_axis][int(sign)]
    for voxel_axis in range(3):
        codes.append(chosen[voxel_axis])
    return "".join(codes)


def voxel_spacing(affine: npt.ArrayLike) -> tuple[float, float, float]:
    """Length in mm of one step along each voxel axis."""
    matrix = np.asarray(affine, dtype=float)[:3, :3]
    s0, s1, s2 = np.linalg.norm(matrix, axis=0)
    return float(s0), float(s1), float(s2)


def ras_to_lps(affine: npt.ArrayLike) -> FloatArray:
    """Convert a voxel-to-RAS affine into voxel-to-LPS (DICOM/ITK world), or back: the map is its own inverse."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ np.asarray(affine, dtype=float)


def map_box_extents(boxes: npt.ArrayLike, matrix: npt.ArrayLike) -> FloatArray:
    """The axis-aligned extents enclosing voxel boxes mapped through a 4×4 ``matrix``.

    ``boxes`` rows are ``(i0, j0, k0, i1, j1, k1)`` voxel indices (inclusive start, exclusive end); a box's
    extent runs from half a voxel before its first centre to half a voxel after its last, i.e. from
    ``start - 0.5`` to ``end - 0.5``. Its eight corners go through ``matrix`` (voxel → world, or voxel → other
    grid's voxel) and the result rows are the ``(min, max)`` of the mapped corners per axis. Every box mapping in
    mitk goes through here.
    """
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 6)
    low, high = boxes[:, :3] - 0.5, boxes[:, 3:] - 0.5
    choose = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=bool)  # (8, 3)
    corners = np.where(choose[None], high[:, None, :], low[:, None, :])  # (N, 8, 3)
    homogeneous = np.concatenate([corners, np.ones((*corners.shape[:2], 1))], axis=-1)
    mapped = homogeneous @ np.asarray(matrix, dtype=float).T
    return np.concatenate([mapped[..., :3].min(axis=1), mapped[..., :3].max(axis=1)], axis=1)


@dataclass
class Image:
    """A voxel array and its place in the world.

    ``array`` has the spatial axes first (i, j, k), then optional channels or time.
    ``affine`` maps voxel indices (i, j, k, 1) to RAS+ world coordinates in millimetres.
    ``meta`` holds format-specific details a writer needs to reproduce the source exactly
    (``"nifti_header"`` for NIfTI; ``"dicom"`` for DICOM series), never patient identity in logs.
    """

    array: np.ndarray
    affine: FloatArray
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.array.shape)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        i, j, k = (*self.shape, 1, 1)[:3]
        return i, j, k

    @property
    def ndim(self) -> int:
        return self.array.ndim

    @property
    def spacing(self) -> tuple[float, float, float]:
        return voxel_spacing(self.affine)

    @property
    def orientation(self) -> str:
        return orientation_code(self.affine)

    @property
    def name(self) -> str:
        """A display name: the file name, never anything read from inside the file."""
        return self.path.name if self.path is not None else "<memory>"
