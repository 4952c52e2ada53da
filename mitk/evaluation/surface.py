"""Overlap and surface-distance metrics of two masks on NumPy/SciPy, equal to :mod:`monai.metrics` on CPU.

The definitions are MONAI's (``compute_dice``, ``compute_iou``, ``compute_hausdorff_distance``,
``compute_average_surface_distance``, ``compute_surface_dice`` with ``use_subvoxels=False``), computed
without importing torch or MONAI (about 5 s of start-up for a command that needs milliseconds):

- the surface (MONAI's "edges") of a mask is its voxels that :func:`scipy.ndimage.binary_erosion` with the
  6-connected cross and zero outside the grid removes (``erosion XOR mask``);
- a surface distance is the exact Euclidean distance in mm (voxel steps scaled by the spacing) from a
  surface voxel of one mask to the nearest surface voxel of the other, kept in float32 as MONAI keeps it;
- HD95 is the larger of the two directed 95th percentiles (linear interpolation, ``torch.quantile``'s
  default), ASD the mean of both directions pooled, surface Dice the fraction of both surfaces' voxels
  whose distance is at most the tolerance (compared in float32, as MONAI compares).

Distances come from :func:`scipy.ndimage.distance_transform_edt` with ``sampling`` = the spacing, run on
the bounding box of the two masks (every surface voxel lies in it, so nothing is lost). Only non-empty
masks are scored here; what an empty mask gives is decided by the caller
(:func:`mitk.tasks.segment.evaluation.evaluate_pair`). ``tests/test_lean_surface.py`` compares every value
with MONAI's own functions on real labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PERCENTILE = 95.0


def bounding_box(*masks: np.ndarray) -> tuple[slice, ...]:
    """The smallest box holding every true voxel of ``masks`` (one grid); the whole grid if all are empty."""
    union = np.logical_or.reduce(masks)
    box = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        hits = np.flatnonzero(union.any(axis=other))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1) if hits.size else slice(None))
    return tuple(box)


def mask_surface(mask: np.ndarray) -> np.ndarray:
    """The voxels of a boolean mask that a 6-connected erosion removes (zero outside the grid)."""
    from scipy.ndimage import binary_erosion

    return mask & ~binary_erosion(mask)


def surface_distances(source: np.ndarray, target: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """The distance (mm, float32) from each true voxel of ``source`` to the nearest true voxel of ``target``,
    in C order of the source voxels; ``target`` must have a true voxel."""
    from scipy.ndimage import distance_transform_edt

    distance = distance_transform_edt(~target, sampling=[float(s) for s in spacing])
    return np.asarray(distance[source], dtype=np.float32)


def directed_percentile(distances: np.ndarray, percentile: float = PERCENTILE) -> float:
    """The ``percentile`` of float32 distances, linearly interpolated (``torch.quantile``), NaN when none."""
    if distances.size == 0:
        return float("nan")
    return float(np.quantile(distances.astype(np.float64), percentile / 100.0, method="linear"))


def overlap_scores(pred_mask: np.ndarray, ref_mask: np.ndarray) -> dict[str, float]:
    """Dice and IoU of two boolean masks on one grid (NaN when both are empty)."""
    intersection = float(np.count_nonzero(pred_mask & ref_mask))
    total = float(np.count_nonzero(pred_mask)) + float(np.count_nonzero(ref_mask))
    union = total - intersection
    return {"dice": 2.0 * intersection / total if total else float("nan"),
            "iou": intersection / union if union else float("nan")}


def surface_scores(pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float],
                   tolerance: float, percentile: float = PERCENTILE) -> dict[str, float]:
    """HD95, symmetric ASD (mm) and surface Dice at ``tolerance`` mm of two non-empty boolean masks."""
    if pred_mask.shape != ref_mask.shape or len(spacing) != pred_mask.ndim:
        raise ValueError(f"masks of shape {pred_mask.shape} and {ref_mask.shape} with spacing {tuple(spacing)}")
    if not pred_mask.any() or not ref_mask.any():
        raise ValueError("surface distances need two non-empty masks")
    box = bounding_box(pred_mask, ref_mask)
    pred_surface, ref_surface = mask_surface(pred_mask[box]), mask_surface(ref_mask[box])
    pred_to_ref = surface_distances(pred_surface, ref_surface, spacing)
    ref_to_pred = surface_distances(ref_surface, pred_surface, spacing)
    pooled = np.concatenate([pred_to_ref, ref_to_pred])
    within = np.count_nonzero(pred_to_ref <= np.float32(tolerance)) + np.count_nonzero(
        ref_to_pred <= np.float32(tolerance))
    return {
        "hd95_mm": max(directed_percentile(pred_to_ref, percentile), directed_percentile(ref_to_pred, percentile)),
        "asd_mm": float(pooled.astype(np.float64).mean()),
        "surface_dice_voxel": within / pooled.size,
    }
