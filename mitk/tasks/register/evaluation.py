"""Registration quality: Dice of warped label maps, target registration error, Jacobian determinants.

* :func:`dice_per_label` — overlap of a warped label map with the fixed image's label map, per label.
* :func:`target_registration_error` — distance (mm) between where a transform sends fixed landmarks and the
  corresponding moving landmarks.
* :func:`jacobian_statistics` — the determinant of the Jacobian of ``x ↦ x + u(x)`` over a displacement
  field: its minimum and the share of voxels where it is ≤ 0 (folding: the map is not invertible there).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from mitk.errors import InputError

COORDINATE_NAMES = (("x", "y", "z"), ("r", "a", "s"), ("l", "p", "s"))


def dice_per_label(warped: np.ndarray, fixed: np.ndarray) -> dict[int, float]:
    """Dice of every non-zero label present in either map (1.0 when both are empty is impossible here)."""
    if warped.shape != fixed.shape:
        raise ValueError(f"label maps differ in shape: {warped.shape} and {fixed.shape}")
    labels = sorted(set(np.unique(warped).tolist()) | set(np.unique(fixed).tolist()) - {0})
    scores: dict[int, float] = {}
    for label in labels:
        if label == 0:
            continue
        a, b = warped == label, fixed == label
        total = int(a.sum()) + int(b.sum())
        scores[int(label)] = 2.0 * int(np.logical_and(a, b).sum()) / total if total else float("nan")
    return scores


def read_landmarks(path: Path, lps: bool = False) -> tuple[list[str], np.ndarray]:
    """Landmarks from a CSV: a header naming x, y, z (or r, a, s) world coordinates in mm, optionally a
    ``name`` column; RAS unless ``lps`` (3D Slicer and ITK files are LPS). Returns names and ``(N, 3)`` RAS."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise InputError(f"cannot read landmarks ({error.strerror})", path) from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"not a CSV file ({error})", path) from None
    if not rows:
        raise InputError("no landmarks (a header row with x,y,z and one row per point)", path)
    columns = {key.strip().lower(): key for key in rows[0] if key is not None}
    names = next((triple for triple in COORDINATE_NAMES if all(c in columns for c in triple)), None)
    if names is None:
        raise InputError("landmark CSV needs x,y,z columns (world mm)", path)
    try:
        points = np.array([[float(row[columns[c]]) for c in names] for row in rows])
    except (TypeError, ValueError):
        raise InputError("landmark coordinates must be numbers", path) from None
    if not np.isfinite(points).all():
        raise InputError("landmark coordinates must be finite", path)
    if lps:
        points = points * np.array([-1.0, -1.0, 1.0])
    label_key = columns.get("name") or columns.get("label") or columns.get("id")
    labels = [str(row[label_key]) for row in rows] if label_key else [str(n) for n in range(len(rows))]
    return labels, points


def target_registration_error(transformed_fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """Euclidean distance (mm) per landmark pair."""
    if transformed_fixed.shape != moving.shape:
        raise ValueError(f"{len(transformed_fixed)} fixed and {len(moving)} moving landmarks")
    return np.linalg.norm(transformed_fixed - moving, axis=1)


def jacobian_determinant(field: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``det(I + ∂u/∂x)`` per voxel of a ``(I, J, K, 3)`` world-mm displacement field on the grid ``affine``.

    Derivatives are central differences along the voxel axes, turned into world derivatives with the
    inverse of the grid's linear part, so oblique and anisotropic grids are handled.
    """
    gradient = np.empty((*field.shape[:3], 3, 3))
    for component in range(3):  # gradient[..., c, a] = ∂u_c/∂index_a
        values = np.asarray(field[..., component], float)
        for axis in range(3):
            gradient[..., component, axis] = np.gradient(values, axis=axis) if values.shape[axis] > 1 else 0.0
    world = gradient @ np.linalg.inv(np.asarray(affine, float)[:3, :3])  # ∂u/∂x = ∂u/∂index · A⁻¹
    return np.asarray(np.linalg.det(np.eye(3) + world))


def jacobian_statistics(field: np.ndarray, affine: np.ndarray, mask: np.ndarray | None = None) -> dict[str, Any]:
    determinant = jacobian_determinant(field, affine)
    values = determinant[mask] if mask is not None else determinant.ravel()
    return {"min": float(values.min()), "max": float(values.max()), "mean": float(values.mean()),
            "std": float(values.std()), "folding_voxels": int((values <= 0).sum()),
            "folding_percent": 100.0 * float((values <= 0).mean())}
