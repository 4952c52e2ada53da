"""Bringing network-grid outputs back onto the input's exact voxel grid."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def voxel_map(source_affine: np.ndarray, target_affine: np.ndarray) -> np.ndarray:
    """The 4×4 matrix taking target voxel indices to source voxel indices."""
    return np.linalg.solve(np.asarray(source_affine, float), np.asarray(target_affine, float))


def _as_axis_permutation(mapping: np.ndarray, source_shape: tuple[int, ...], target_shape: tuple[int, ...],
                         atol: float = 1e-4) -> tuple[list[int], list[bool]] | None:
    """If ``mapping`` only permutes and flips whole axes, return (source axis per target axis, flipped)."""
    linear, offset = mapping[:3, :3], mapping[:3, 3]
    rounded = np.round(linear)
    if not np.allclose(linear, rounded, atol=atol) or not np.allclose(np.abs(rounded).sum(axis=0), 1):
        return None
    if not np.allclose(np.abs(rounded).sum(axis=1), 1):
        return None
    axes, flips = [], []
    for target_axis in range(3):
        source_axis = int(np.argmax(np.abs(rounded[:, target_axis])))
        flipped = rounded[source_axis, target_axis] < 0
        expected = (source_shape[source_axis] - 1) if flipped else 0
        if abs(offset[source_axis] - expected) > atol or source_shape[source_axis] != target_shape[target_axis]:
            return None
        axes.append(source_axis)
        flips.append(bool(flipped))
    return axes, flips


def is_axis_permutation(source_affine: np.ndarray, target_affine: np.ndarray, source_shape: tuple[int, ...],
                        target_shape: tuple[int, ...]) -> bool:
    """True when the two grids hold the same voxels, only with axes permuted or flipped."""
    mapping = voxel_map(source_affine, target_affine)
    return _as_axis_permutation(mapping, tuple(int(n) for n in source_shape), tuple(target_shape)) is not None


def to_input_grid(values: torch.Tensor, source_affine: np.ndarray, target_affine: np.ndarray,
                  target_shape: tuple[int, int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resample channel-first ``values`` (C, I, J, K) from the source grid onto the target grid.

    A pure permutation/flip of axes (e.g. after an orientation change) is undone exactly, without
    interpolation; anything else is resampled once with ``mode`` (``bilinear`` or ``nearest``).
    """
    import torch

    mapping = voxel_map(source_affine, target_affine)
    source_shape = tuple(int(n) for n in values.shape[1:])
    permutation = _as_axis_permutation(mapping, source_shape, target_shape)
    if permutation is not None:
        axes, flips = permutation
        out = values.permute(0, *(a + 1 for a in axes))
        flip_dims = [d + 1 for d, f in enumerate(flips) if f]
        return out.flip(flip_dims) if flip_dims else out
    from monai.transforms import SpatialResample

    resample = SpatialResample(mode=mode, padding_mode="border", align_corners=True, dtype=np.float32)
    from monai.data import MetaTensor

    src = values if isinstance(values, MetaTensor) else MetaTensor(values)
    src.affine = torch.as_tensor(np.asarray(source_affine, float), dtype=torch.float64)
    out = resample(src, dst_affine=torch.as_tensor(np.asarray(target_affine, float), dtype=torch.float64),
                   spatial_size=target_shape)
    return out.as_tensor() if isinstance(out, MetaTensor) else out
