"""A registration's inverse: the moving-world → fixed-world transform, its files, and ``InverseWarped``.

The forward transform of a registration is ``T(x) = M x + d(x)`` (fixed world → moving world, RAS mm; ``d``
on the fixed grid, zero outside it). Its inverse is written as ANTs users expect it:

* a matrix (``d`` absent) is inverted exactly, and written in the forward file's format (``.tfm``, ``.txt``,
  ``.mat``, ``.json``);
* a displacement field is inverted by :func:`mitk.runner.invert.invert_points` at the moving grid's voxel
  centres and written as ``v(y) = T⁻¹(y) − y`` on the *moving* grid (the inverse's domain), ITK's convention
  (LPS vectors): ``T⁻¹(y) = y + v(y)``. SimpleITK reads it as a ``DisplacementFieldTransform`` that maps
  moving-world points to fixed-world points.

``InverseWarped`` is the fixed image resampled on the moving grid through ``T⁻¹``: ``fixed(T⁻¹(y))``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mitk.image import Image
from mitk.runner.invert import InversionReport, Seeds, inverse_field, invert_points
from mitk.tasks.register.result import RegistrationResult


def forward_points(result: RegistrationResult, points: np.ndarray, sampler: Any = None) -> np.ndarray:
    """``T(x) = M x + d(x)`` at ``(N, 3)`` fixed-world points (``d`` trilinear on the fixed grid; ``sampler``,
    a :class:`~mitk.io.transforms.FieldSampler` of it, saves preparing it on every call)."""
    from mitk.io.transforms import FieldSampler

    matrix = np.eye(4) if result.matrix is None else np.asarray(result.matrix, float)
    mapped = points @ matrix[:3, :3].T + matrix[:3, 3]
    if result.displacement is not None:
        sampler = sampler or FieldSampler(np.asarray(result.displacement, float), result.warped.affine)
        mapped = mapped + sampler(points)
    return mapped


def inverse_matrix(result: RegistrationResult) -> np.ndarray | None:
    """The exact inverse of a matrix-only registration (moving world → fixed world), else ``None``."""
    if result.matrix is None or result.displacement is not None:
        return None
    return np.asarray(np.linalg.inv(np.asarray(result.matrix, float)))


def inverse_displacement(result: RegistrationResult, moving: Image) -> tuple[np.ndarray, InversionReport]:
    """``v(y) = T⁻¹(y) − y`` on the moving grid (RAS mm) and how well ``T(y + v(y)) = y`` holds."""
    matrix = np.eye(4) if result.matrix is None else np.asarray(result.matrix, float)
    exact = inverse_matrix(result)
    if exact is not None:
        shape = moving.spatial_shape
        voxels = np.indices(shape, dtype=np.float64).reshape(3, -1)
        world = moving.affine[:3, :3] @ voxels + moving.affine[:3, 3:]
        moved = exact[:3, :3] @ world + exact[:3, 3:]
        return (moved - world).T.reshape(*shape, 3), InversionReport(points=int(np.prod(shape)))
    forward = seeded_forward(result)
    return inverse_field(forward[0], matrix, moving.affine, moving.spatial_shape, seeds=forward[1])


def seeded_forward(result: RegistrationResult) -> tuple[Any, Seeds]:
    """``T`` as a callable on points, and the fixed grid's :class:`~mitk.runner.invert.Seeds` for inverting it."""
    from mitk.io.transforms import FieldSampler

    sampler = None if result.displacement is None else FieldSampler(np.asarray(result.displacement, float),
                                                                     result.warped.affine)

    def forward(points: np.ndarray) -> np.ndarray:
        return forward_points(result, points, sampler)

    return forward, Seeds(forward, result.warped.affine, result.warped.spatial_shape)


def write_inverse_transform(result: RegistrationResult, path: Path, moving: Image,
                            field: np.ndarray | None = None) -> None:
    """Write ``T⁻¹`` to ``path``: a matrix file for a matrix-only registration, or (``.nii``/``.nii.gz``) the
    inverse displacement ``field`` on the moving grid (computed here when not given)."""
    from mitk.io.transforms import is_field_path, write_displacement_field, write_matrix

    if is_field_path(path):
        if field is None:
            field, _ = inverse_displacement(result, moving)
        write_displacement_field(field, moving, path)
        return
    exact = inverse_matrix(result)
    if exact is None:
        raise ValueError("this registration produced no single matrix")
    write_matrix(exact, path)


def inverse_warped_array(result: RegistrationResult, fixed: Image, moving: Image, field: np.ndarray | None = None
                   ) -> np.ndarray:
    """The fixed image on the moving grid, ``fixed(T⁻¹(y))`` (trilinear; integer images are rounded back). With
    a displacement, ``field`` is :func:`inverse_displacement`'s (computed here when not given); a point whose
    inverse did not converge within half the fixed image's smallest voxel is left at 0, as outside."""
    from mitk.io.transforms import FieldSampler
    from mitk.runner.resample import resample_through

    exact = inverse_matrix(result)
    if exact is not None:
        array = resample_through(fixed, moving, lambda points: points @ exact[:3, :3].T + exact[:3, 3])
    else:
        if field is None:
            field, _ = inverse_displacement(result, moving)
        reject = 0.5 * float(np.min(np.linalg.norm(fixed.affine[:3, :3], axis=0)))
        inverse_sampler = FieldSampler(field, moving.affine)
        forward, _ = seeded_forward(result)

        def through(points: np.ndarray) -> np.ndarray:
            mapped = points + inverse_sampler(points)
            missed = np.linalg.norm(forward(mapped) - points, axis=1) > reject
            mapped[missed] = 1e9  # far outside: sampled as 0
            return mapped

        array = resample_through(fixed, moving, through)
    if fixed.array.dtype.kind in "iu":
        array = np.rint(array).astype(fixed.array.dtype)
    return array


def inverse_points(result: RegistrationResult, points: np.ndarray, report: InversionReport | None = None
                   ) -> np.ndarray:
    """``T⁻¹`` at ``(N, 3)`` moving-world points: exact for a matrix, else iterated (see the module)."""
    exact = inverse_matrix(result)
    if exact is not None:
        return points @ exact[:3, :3].T + exact[:3, 3]
    matrix = np.eye(4) if result.matrix is None else np.asarray(result.matrix, float)
    forward, seeds = seeded_forward(result)
    return invert_points(forward, matrix, points, report=report, seeds=seeds)
