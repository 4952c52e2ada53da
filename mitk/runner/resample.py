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
    is interpolated and the largest wins, which keeps label boundaries smooth without inventing values).
    """
    shape = reference.spatial_shape
    source_array = np.asarray(moving.array)
    values = np.unique(source_array) if mode == "labels" else None
    to_moving_voxels = np.linalg.inv(moving.affine)
    size = np.array(moving.spatial_shape, dtype=float)
    if mode == "labels":
        assert values is not None
        out = np.zeros(shape, dtype=source_array.dtype)
        best = np.full(shape, -1.0, dtype=np.float32)
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
        grid = torch.from_numpy(normalised[:, ::-1].copy()).float().reshape(1, stop - start, shape[1], shape[2], 3)
        if mode == "labels":
            assert values is not None
            for value in values:
                indicator = (source == float(value)).float()
                weight = torch.nn.functional.grid_sample(indicator, grid, mode="bilinear", padding_mode="zeros",
                                                         align_corners=True)[0, 0].numpy()
                if value == 0:  # outside the moving image is background
                    inside = np.all(np.abs(normalised) <= 1, axis=1).reshape(weight.shape)
                    weight = np.where(inside, weight, 1.0)
                better = weight > best[start:stop]
                best[start:stop][better] = weight[better]
                out[start:stop][better] = value
        else:
            sampled = torch.nn.functional.grid_sample(source, grid, mode="nearest" if mode == "nearest" else "bilinear",
                                                      padding_mode="zeros", align_corners=True)
            out[start:stop] = sampled[0, 0].numpy()
    return out
