"""Resampling an image through a transform onto another grid: world point by world point, slab by slab."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from mitk.errors import PluginError
from mitk.image import Image


def warp(moving: Image, fixed: Image, matrix: np.ndarray | None, displacement: np.ndarray | None = None,
         mode: str = "bilinear", slab_voxels: int = 4_000_000) -> np.ndarray:
    """Sample ``moving`` at ``matrix @ x + displacement`` for every fixed-grid world point ``x``.

    Works slab by slab along the first fixed axis so that the sampling grid never holds more than about
    ``slab_voxels`` points (a whole-volume float64 grid of a 512×512×300 CT would take gigabytes).
    """
    shape = fixed.spatial_shape
    world_matrix = np.asarray(matrix if matrix is not None else np.eye(4), float) @ fixed.affine
    to_moving_voxels = torch.as_tensor(np.linalg.inv(moving.affine))
    field = None
    if displacement is not None:
        field = np.asarray(displacement, dtype=float)
        if field.shape != (*shape, 3):
            raise PluginError(f"displacement field has shape {field.shape}, expected {(*shape, 3)} (fixed grid, mm)")
    size = torch.tensor(moving.spatial_shape, dtype=torch.float64)
    source = torch.from_numpy(np.array(moving.array, dtype=np.float32))[None, None]  # a copy: inputs may be read-only
    out = np.empty(shape, dtype=np.float32)
    step = max(1, slab_voxels // max(1, shape[1] * shape[2]))
    j, k = torch.meshgrid(torch.arange(shape[1], dtype=torch.float64), torch.arange(shape[2], dtype=torch.float64),
                          indexing="ij")
    for start in range(0, shape[0], step):
        i = torch.arange(start, min(start + step, shape[0]), dtype=torch.float64)
        voxels = torch.stack([i[:, None, None].expand(-1, *j.shape), j.expand(len(i), -1, -1),
                              k.expand(len(i), -1, -1), torch.ones(len(i), *j.shape, dtype=torch.float64)], dim=-1)
        points = voxels.reshape(-1, 4) @ torch.as_tensor(world_matrix.T)
        if field is not None:
            points[:, :3] += torch.from_numpy(np.ascontiguousarray(field[start:start + len(i)]).reshape(-1, 3))
        moving_voxels = (points @ to_moving_voxels.T)[:, :3]
        normalised = 2 * moving_voxels / (size - 1).clamp(min=1) - 1  # align_corners=True convention
        grid = normalised.flip(-1).reshape(1, len(i), *j.shape, 3).float()  # grid_sample wants (k, j, i) order
        sampled = torch.nn.functional.grid_sample(source, grid, mode=mode, padding_mode="zeros", align_corners=True)
        out[start:start + len(i)] = sampled[0, 0].numpy()
    return out


def resample_through(moving: Image, reference: Image, mapping: Callable[[np.ndarray], np.ndarray],
                     mode: str = "bilinear", slab_voxels: int = 2_000_000) -> np.ndarray:
    """Sample ``moving`` at ``mapping(x)`` for every reference-grid world point ``x`` (RAS mm, ``(N, 3)``).

    ``mode`` is ``bilinear`` (trilinear), ``nearest`` or ``labels`` (label-wise linear: each label's indicator
    is interpolated and the largest wins, which keeps label boundaries smooth without inventing values; see
    :func:`label_linear`).
    """
    shape = reference.spatial_shape
    source_array = np.asarray(moving.array)
    to_moving_voxels = np.linalg.inv(moving.affine)
    size = np.array(moving.spatial_shape, dtype=float)
    if mode == "labels":
        out = np.zeros(shape, dtype=source_array.dtype)
        flat_labels = np.ascontiguousarray(source_array).reshape(-1)
        source = None
    else:
        out = np.empty(shape, dtype=np.float32)
        source = torch.from_numpy(np.array(source_array, dtype=np.float32))[None, None]
    step = max(1, slab_voxels // max(1, shape[1] * shape[2]))
    for start in range(0, shape[0], step):
        stop = min(start + step, shape[0])
        voxels = np.indices((stop - start, shape[1], shape[2]), dtype=np.float64).reshape(3, -1)
        voxels[0] += start
        world = (reference.affine[:3, :3] @ voxels + reference.affine[:3, 3:]).T
        moved = mapping(world)
        index = moved @ to_moving_voxels[:3, :3].T + to_moving_voxels[:3, 3]
        normalised = 2 * index / np.maximum(size - 1, 1) - 1
        if source is None:
            out[start:stop] = label_linear(flat_labels, moving.spatial_shape, normalised).reshape(
                stop - start, shape[1], shape[2])
            continue
        grid = torch.from_numpy(normalised[:, ::-1].copy()).float().reshape(1, stop - start, shape[1], shape[2], 3)
        sampled = torch.nn.functional.grid_sample(source, grid, mode="nearest" if mode == "nearest" else "bilinear",
                                                  padding_mode="zeros", align_corners=True)
        out[start:stop] = sampled[0, 0].numpy()
    return out


def label_linear(labels: np.ndarray, shape: tuple[int, ...], normalised: np.ndarray) -> np.ndarray:
    """Label-wise linear interpolation of the flat label array ``labels`` (a volume of ``shape``) at
    ``(N, 3)`` points given as ``grid_sample`` coordinates (``align_corners=True``: −1 and 1 are the first and
    last voxel centres).

    The definition: each label's 0/1 indicator is interpolated trilinearly and the label with the largest
    weight wins (ties go to the smaller label); a point outside the volume is background (0). Only the labels
    of a point's eight neighbours can have a weight there, so one pass over the eight corners computes it
    exactly, whatever the number of labels: the cost of one trilinear interpolation, not one per label.
    """
    count = len(normalised)
    inside = np.all(np.abs(normalised) <= 1, axis=1)
    extent = np.array(shape, dtype=np.float64) - 1
    position = (normalised[inside] + 1) / 2 * extent  # grid_sample's unnormalisation (a 1-voxel axis → 0)
    lower = np.clip(np.floor(position), 0, np.maximum(extent - 1, 0)).astype(np.int64)
    strides = np.array([shape[1] * shape[2], shape[2], 1], dtype=np.int64)
    offsets = [np.array([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1]) for corner in range(8)]
    corner_labels = []
    for offset in offsets:
        flat = np.zeros(len(position), dtype=np.int64)
        for axis in range(3):
            flat += np.minimum(lower[:, axis] + offset[axis], shape[axis] - 1) * strides[axis]
        corner_labels.append(labels[flat])
    chosen = corner_labels[0].copy()
    mixed = np.zeros(len(position), dtype=bool)
    for corner in range(1, 8):
        mixed |= corner_labels[corner] != corner_labels[0]
    if mixed.any():  # only where the eight neighbours disagree is there anything to weigh
        fraction = (position[mixed] - lower[mixed]).astype(np.float32)
        corner_weights = []
        for offset in offsets:
            weight = np.ones(len(fraction), dtype=np.float32)
            for axis in range(3):
                weight *= fraction[:, axis] if offset[axis] else 1 - fraction[:, axis]
            corner_weights.append(weight)
        chosen[mixed] = _best_label([c[mixed] for c in corner_labels], corner_weights)
    out = np.zeros(count, dtype=labels.dtype)
    out[inside] = chosen
    return out


def _best_label(corner_labels: list[np.ndarray], corner_weights: list[np.ndarray]) -> np.ndarray:
    """Per point, the label whose corners' weights sum highest (ties to the smaller label)."""
    scores = [weight.copy() for weight in corner_weights]  # the summed weight of each corner's label
    for first in range(8):
        for second in range(first + 1, 8):
            same = corner_labels[first] == corner_labels[second]
            scores[first] += np.where(same, corner_weights[second], 0)
            scores[second] += np.where(same, corner_weights[first], 0)
    best_score = np.maximum.reduce(scores)
    tolerance = np.float32(1e-6)
    chosen = corner_labels[0].copy()
    found = np.zeros(len(chosen), dtype=bool)
    for corner in range(8):  # among the corners whose label scores best, the smallest label
        candidate = scores[corner] >= best_score - tolerance
        replace = candidate & (~found | (corner_labels[corner] < chosen))
        chosen[replace] = corner_labels[corner][replace]
        found |= candidate
    return chosen
