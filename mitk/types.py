"""Images and the typed results of the four tasks.

Everything here is plain numpy: a result carries its geometry (a 4×4 voxel-to-world affine in RAS+
millimetres, the NIfTI convention) so that it can be written back onto the input's exact grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mitk.enums import Task
from mitk.io.results import ClassificationFiles, DetectionFiles, RegistrationFiles, SegmentationFiles

FloatArray = npt.NDArray[np.floating[Any]]
IntArray = npt.NDArray[np.integer[Any]]

__all__ = [
    "ClassificationResult", "DetectionResult", "Image", "RegistrationResult", "SegmentationResult", "Task",
    "map_box_extents",
]

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


BOX_CONVENTION = ("box_voxel: (i0, j0, k0, i1, j1, k1) voxel indices of the input, start inclusive, end exclusive "
              "(fractional: the extent runs from start - 0.5 to end - 0.5); box_world_mm: (x0, y0, z0, x1, y1, z1), "
              "the axis-aligned world extent enclosing the box; centre_world_mm: the box centre through the "
              "image affine; size_mm: edge lengths along the voxel axes i, j, k")
"""How the box columns of a detection record are to be read (written into every record)."""


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


@dataclass
class SegmentationResult(SegmentationFiles):
    """An integer label map on the input's exact voxel grid, with label names."""

    label_map: IntArray
    affine: FloatArray
    labels: dict[int, str]
    probabilities: FloatArray | None = None
    """Optional per-class probabilities, channel last, on the same grid."""

    def statistics(self, image: Image | None = None) -> list[dict[str, Any]]:
        """Per-label voxel count, volume in mL and (given the image) mean intensity."""
        voxel_ml = abs(float(np.linalg.det(np.asarray(self.affine)[:3, :3]))) / 1000.0
        labels = self.label_map
        values = None
        if image is not None and image.array.shape[:3] == labels.shape:
            values = np.asarray(image.array[..., 0] if image.array.ndim > 3 else image.array)
            if values.flags.f_contiguous and not labels.flags.f_contiguous:
                labels = np.asfortranarray(labels)  # same memory order, so ravel(order="K") pairs voxels
            elif values.flags.c_contiguous and not labels.flags.c_contiguous:
                labels = np.ascontiguousarray(labels)
            elif not (values.flags.c_contiguous or values.flags.f_contiguous):
                values, labels = np.ascontiguousarray(values), np.ascontiguousarray(labels)
        flat = labels.ravel(order="K")
        foreground = np.flatnonzero(flat)  # label volumes are mostly background: work on the rest only
        length = max(max(self.labels, default=0) + 1, 1)
        counts = np.bincount(flat[foreground], minlength=length)
        intensity = None
        if values is not None:
            weights = values.ravel(order="K")[foreground]
            intensity = np.bincount(flat[foreground], weights=weights, minlength=counts.size)
        rows = []
        for value, name in sorted(self.labels.items()):
            if value == 0:
                continue
            count = int(counts[value]) if value < counts.size else 0
            row: dict[str, Any] = {"label": value, "name": name, "voxels": count,
                                   "volume_ml": round(count * voxel_ml, 4)}
            if intensity is not None:
                row["mean_intensity"] = round(float(intensity[value] / count), 4) if count else None
            rows.append(row)
        return rows


@dataclass
class ClassificationResult(ClassificationFiles):
    """Per-class probabilities for one image."""

    class_names: list[str]
    probabilities: list[float]

    def __post_init__(self) -> None:
        if len(self.class_names) != len(self.probabilities):
            raise ValueError("class_names and probabilities differ in length")

    @property
    def predicted_index(self) -> int:
        return int(np.argmax(self.probabilities))

    @property
    def predicted(self) -> str:
        return self.class_names[self.predicted_index]

    def to_dict(self) -> dict[str, Any]:
        return {
            "predicted": self.predicted,
            "probabilities": {n: round(float(p), 6) for n, p in zip(self.class_names, self.probabilities, strict=True)},
        }


@dataclass
class DetectionResult(DetectionFiles):
    """Axis-aligned boxes, in voxel indices and in world millimetres.

    ``boxes_voxel`` rows are ``(i0, j0, k0, i1, j1, k1)`` (inclusive start, exclusive end).
    ``boxes_world`` rows are ``(x0, y0, z0, x1, y1, z1)`` in ``coordinate_system`` (``"RAS"``), the
    min and max corner of the box's extent in the world.
    """

    boxes_voxel: FloatArray
    affine: FloatArray
    scores: FloatArray
    labels: IntArray
    label_names: dict[int, str]
    coordinate_system: str = "RAS"

    @property
    def boxes_world(self) -> FloatArray:
        out = map_box_extents(self.boxes_voxel, self.affine)
        if self.coordinate_system == "LPS":
            out = out * np.array([-1, -1, 1, -1, -1, 1])
            out = out[:, [3, 4, 2, 0, 1, 5]]
        return out

    @property
    def centres_voxel(self) -> FloatArray:
        """Box centres in (continuous) voxel indices of the input grid."""
        boxes = np.asarray(self.boxes_voxel, dtype=float).reshape(-1, 6)
        return (boxes[:, :3] + boxes[:, 3:]) / 2 - 0.5

    @property
    def centres_world(self) -> FloatArray:
        """Box centres in ``coordinate_system`` mm: the voxel centres through the affine (exact, any affine)."""
        centres = self.centres_voxel
        world = centres @ self.affine[:3, :3].T + self.affine[:3, 3]
        return world * np.array([-1.0, -1.0, 1.0]) if self.coordinate_system == "LPS" else world

    @property
    def sizes_mm(self) -> FloatArray:
        """Box edge lengths in mm along the input's voxel axes (i, j, k)."""
        boxes = np.asarray(self.boxes_voxel, dtype=float).reshape(-1, 6)
        return (boxes[:, 3:] - boxes[:, :3]) * np.asarray(voxel_spacing(self.affine))

    def to_dicts(self) -> list[dict[str, Any]]:
        """One record per box. ``box_world_mm`` is the axis-aligned world extent enclosing the box (exactly the
        box when the grid is not oblique); ``centre_world_mm`` is exact on any grid."""
        world = self.boxes_world
        return [
            {
                "label": int(label),
                "name": self.label_names.get(int(label), str(int(label))),
                "score": round(float(score), 6),
                "box_voxel": [float(v) for v in box],
                "box_world_mm": [round(float(v), 4) for v in wbox],
                "centre_voxel": [round(float(v), 4) for v in cvox],
                "centre_world_mm": [round(float(v), 4) for v in cworld],
                "size_mm": [round(float(v), 4) for v in size],
                "coordinate_system": self.coordinate_system,
            }
            for box, wbox, cvox, cworld, size, score, label in zip(
                np.asarray(self.boxes_voxel).reshape(-1, 6), world, self.centres_voxel, self.centres_world,
                self.sizes_mm, self.scores, self.labels, strict=True)
        ]


@dataclass
class RegistrationResult(RegistrationFiles):
    """A fixed←moving transform and the moving image resampled onto the fixed grid.

    ``matrix`` maps fixed-image world points (RAS mm) to moving-image world points, so that
    ``warped(x) = moving(matrix @ x)``. ``displacement`` (optional, shape ``(I, J, K, 3)``, RAS mm) is
    added after the matrix, per fixed voxel.
    """

    warped: Image
    matrix: FloatArray | None = None
    displacement: FloatArray | None = None
    metrics: dict[str, float] = field(default_factory=dict)
