"""Dense fields of the classical registrations between pyramid levels and the fixed grid, and their checks.

A pyramid level pools ``factors`` fixed voxels into one (cell-centred, :func:`._registration_pyramid.shrink`), so a
level field reaches the fixed grid by a trilinear resize to ``level shape × factors`` (``align_corners=False``:
exact for cell-centred grids) and a crop; values in voxels scale by the factor of their axis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from mitk_builtin._registration_pyramid import Volume
from mitk_builtin._registration_transform import as_volume, in_plane

if TYPE_CHECKING:
    from mitk_builtin._registration_dense import DenseResult


def warp(image: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
    """``image(x + ddf(x))`` for a ``(1, C, …)`` image and a voxel-unit ``(1, D, …)`` displacement on the same
    2-D or 3-D grid (bilinear, border values outside), as MONAI's ``Warp``."""
    shape = ddf.shape[2:]
    axes = [torch.arange(n, dtype=ddf.dtype, device=ddf.device) for n in shape]
    identity = torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]
    scale = torch.as_tensor([2.0 / max(n - 1, 1) for n in shape], dtype=ddf.dtype, device=ddf.device)
    grid = ((identity + ddf) * scale.view(1, -1, *([1] * len(shape))) - 1.0).movedim(1, -1).flip(-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def integrate(velocity: torch.Tensor, steps: int) -> torch.Tensor:
    """The displacement of the flow of a stationary velocity field (voxels) by scaling and squaring, as MONAI's
    ``DVF2DDF``: diffeomorphic, and ``integrate(-v)`` is its inverse."""
    ddf = velocity / 2**steps
    for _ in range(steps):
        ddf = ddf + warp(ddf, ddf)
    return ddf


def axis_scale(factors: tuple[int, int, int] | np.ndarray, tensor: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(factors, dtype=np.float32), device=tensor.device).view(1, 3, 1, 1, 1)


def to_fine(field: torch.Tensor, factors: tuple[int, int, int], shape: tuple[int, int, int]) -> torch.Tensor:
    """A ``(1, 3, …)`` field in level voxels → fine voxels on the fixed grid of ``shape``."""
    if tuple(factors) != (1, 1, 1):
        size = [int(n) * int(f) for n, f in zip(field.shape[2:], factors, strict=True)]
        field = F.interpolate(field, size=size, mode="trilinear", align_corners=False) * axis_scale(factors, field)
    pad = []
    for axis in (2, 1, 0):
        pad += [0, max(0, shape[axis] - field.shape[2 + axis])]
    if any(pad):
        field = F.pad(field, pad, mode="replicate")
    return field[:, :, : shape[0], : shape[1], : shape[2]]


def to_level(field: torch.Tensor, factors: tuple[int, int, int]) -> torch.Tensor:
    """A fine-voxel field on the fixed grid → the level ``shrink(…, factors)`` (averaged), in level voxels."""
    if tuple(factors) == (1, 1, 1):
        return field
    pads = []
    for axis in (2, 1, 0):
        pads += [0, (-field.shape[2 + axis]) % factors[axis]]
    padded = F.pad(field, pads, mode="replicate") if any(pads) else field
    return F.avg_pool3d(padded, kernel_size=factors, stride=factors) / axis_scale(factors, field)


def regrid(field: torch.Tensor, flat: int | None, from_factors: tuple[int, int, int],
           to_factors: tuple[int, int, int], shape: tuple[int, int, int]) -> torch.Tensor:
    """An in-plane or volume field in voxels of one level → the voxels of another (through the fixed grid)."""
    fine = to_fine(as_volume(field, flat), from_factors, shape)
    return in_plane(to_level(fine, to_factors), flat, field=True)


def jacobian_determinants(ddf: torch.Tensor) -> torch.Tensor:
    """det(I + ∂u/∂x) of a voxel-unit displacement ``(1, C, …)`` (2-D or 3-D), by central differences."""
    dims = ddf.shape[1]
    derivatives = torch.stack([torch.stack(torch.gradient(ddf[0, c], dim=list(range(dims))))
                               for c in range(dims)])  # [component, axis, ...]
    jacobian = derivatives.movedim(0, -1).movedim(0, -1) + torch.eye(dims, device=ddf.device)
    return torch.linalg.det(jacobian.double()).float()


def fields(dense: DenseResult, fixed: Volume, matrix: np.ndarray, flat: int | None, steps: int,
           inverse: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """The forward displacement ``(I, J, K, 3)`` (RAS mm on the fixed grid, after the matrix's linear part) and
    the report of the field: Jacobian determinants and folding on the field's own grid, and the inverse
    consistency |u(x) + w(x + u(x))| in mm, w being the negated velocity integrated.

    With ``inverse``, ``report["inverse_displacement"]`` is w on the fixed grid, ``(I, J, K, 3)`` RAS mm in
    the fixed image's world (before the matrix): the moving → fixed map is ``y ↦ z + w(z)``, ``z = matrix⁻¹ y``.
    It is an array, not JSON: a runner must take it out of the report before writing a record.
    """
    with torch.no_grad():
        forward, backward = integrate(dense.velocity, steps), integrate(-dense.velocity, steps)
        determinants = jacobian_determinants(forward)
        residual = forward + warp(backward, forward)
        level = np.asarray(dense.factors, dtype=float)
        spacing = fixed.spacing * level
        if flat is not None:
            spacing = np.delete(spacing, flat)
        millimetres = (residual * torch.as_tensor(spacing, dtype=torch.float32, device=residual.device).view(
            1, -1, *([1] * (residual.dim() - 2)))).norm(dim=1)
        report: dict[str, Any] = {
            "jacobian_min": round(float(determinants.min()), 4),
            "folded_percent": round(100.0 * float((determinants <= 0).float().mean()), 4),
            "inverse_consistency_mm": {"mean": round(float(millimetres.mean()), 4),
                                       "p99": round(float(torch.quantile(millimetres.flatten()[::7], 0.99)), 4)}}
        linear = torch.as_tensor(fixed.affine[:3, :3], dtype=torch.float32, device=forward.device)

        def on_fixed_grid(ddf: torch.Tensor) -> torch.Tensor:
            fine = to_fine(as_volume(ddf, flat), dense.factors, fixed.shape)
            return torch.einsum("ij,bj...->bi...", linear, fine)  # fixed voxels → fixed-world mm

        def as_array(field: torch.Tensor) -> np.ndarray:
            return np.ascontiguousarray(np.moveaxis(field[0].cpu().numpy(), 0, -1), dtype=np.float64)

        world = on_fixed_grid(forward)
        displacement = torch.einsum("ij,bj...->bi...", torch.as_tensor(matrix[:3, :3], dtype=torch.float32,
                                                                         device=world.device), world)
        if inverse:
            report["inverse_displacement"] = as_array(on_fixed_grid(backward))
    return as_array(displacement), report
