"""The detection result: boxes in voxel indices and world millimetres, and its JSON record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mitk.image import FloatArray, IntArray, map_box_extents, voxel_spacing
from mitk.results import RecordFiles

BOX_CONVENTION = ("box_voxel: (i0, j0, k0, i1, j1, k1) voxel indices of the input, start inclusive, end exclusive "
              "(fractional: the extent runs from start - 0.5 to end - 0.5); box_world_mm: (x0, y0, z0, x1, y1, z1), "
              "the axis-aligned world extent enclosing the box; centre_world_mm: the box centre through the "
              "image affine; size_mm: edge lengths along the voxel axes i, j, k")
"""How the box columns of a detection record are to be read (written into every record)."""


@dataclass
class DetectionResult(RecordFiles):
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
    score_std: FloatArray | None = None
    """With several passes fused (:class:`mitk.tasks.detect.runner.DetectionEnsembleRunner`): the spread of the
    passes' scores per box, the detection's uncertainty; ``members`` how many passes found each box."""
    members: IntArray | None = None
    spacing_source: str | None = None
    """Where the mm figures' pixel spacing came from (``"unknown (1 mm assumed)"`` for a PNG); in the record."""
    passes: int = 1
    pass_counts: dict[str, int] | None = None
    """With several passes fused: ``{"members", "flips", "total"}``, the record's ``passes`` (the cost)."""

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
        box when the grid is not oblique); ``centre_world_mm`` is exact on any grid. Fused passes add
        ``uncertainty``: ``{"score_std", "members", "passes"}`` per box."""
        boxes = self._box_dicts()
        if self.score_std is not None and self.members is not None:
            for box, spread, found in zip(boxes, self.score_std, self.members, strict=True):
                box["uncertainty"] = {"score_std": round(float(spread), 6), "members": int(found),
                                      "passes": self.passes}
        return boxes

    def _box_dicts(self) -> list[dict[str, Any]]:
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

    def record(self) -> dict[str, Any]:
        """``{"coordinate_system", "convention", "boxes": [{label, name, score, box_voxel, box_world_mm,
        centre_world_mm, size_mm, …}, …], "affine"}``; ``affine`` (voxel → RAS mm of the input) lets
        ``mitk evaluate detect`` turn voxel boxes into world boxes. Fused passes (an ensemble, ``--tta``) add
        ``passes`` (``{"members", "flips", "total"}``) and ``uncertainty`` (``{"boxes", "mean_score_std",
        "max_score_std", "passes"}``: the spread of the passes' scores over the boxes)."""
        record = {"coordinate_system": self.coordinate_system, "convention": BOX_CONVENTION, "boxes": self.to_dicts(),
                  "affine": np.asarray(self.affine, float).tolist()}
        if self.spacing_source is not None:
            record["spacing_source"] = self.spacing_source
        if self.pass_counts is not None:
            record["passes"] = dict(self.pass_counts)
        if self.score_std is not None:
            spread = np.asarray(self.score_std, float)
            record["uncertainty"] = {"boxes": int(spread.size),
                                     "mean_score_std": round(float(spread.mean()), 6) if spread.size else None,
                                     "max_score_std": round(float(spread.max()), 6) if spread.size else None,
                                     "passes": self.passes}
        return record

    def to_numpy(self) -> np.ndarray:
        """The boxes, ``(N, 6)`` voxel indices ``(i0, j0, k0, i1, j1, k1)``; world mm: ``boxes_world``."""
        return np.asarray(self.boxes_voxel, dtype=np.float64).reshape(-1, 6)
