"""Inverting spatial transforms: a matrix exactly, a displacement field by fixed-point iteration.

A transform ``T`` maps fixed-image world points to moving-image world points (RAS mm). Its inverse maps
moving-world points back: ``T⁻¹(y)`` is the ``x`` with ``T(x) = y``. For a displacement field
``T(x) = x + u(x)`` (``u`` on the fixed grid) it is found per point as ITK's
``InvertDisplacementFieldImageFilter`` does, by the fixed-point iteration ``x ← y − u(x)``, here preconditioned
by the field's affine part ``M`` (the registration's matrix, or the affine closest to the field): with
``T(x) = M x + r(x)`` it is ``x ← x − M⁻¹ (T(x) − y)``, which converges wherever the residual warp ``r`` is
invertible (no folding), however large the affine part. A point stops when ``|T(x) − y|`` is below the
tolerance; the largest remaining error is reported, so that a field that folds is not inverted in silence.

Written on a grid, the inverse is a displacement ``v(y) = T⁻¹(y) − y`` on the *moving* image's grid (the
domain of the inverse), in the same ITK convention as the forward field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Mapping = Callable[[np.ndarray], np.ndarray]

TOLERANCE_MM = 1e-3
"""A point is inverted when the forward transform sends it within this distance (mm) of its target."""
ITERATIONS = 50


@dataclass
class InversionReport:
    """How well an inverse came out: ``|T(T⁻¹(y)) − y|`` over the points (mm), and how many missed the tolerance."""

    points: int = 0
    max_error_mm: float = 0.0
    mean_error_mm: float = 0.0
    unconverged: int = 0
    iterations: int = 0

    def add(self, errors: np.ndarray, iterations: int, tolerance: float) -> None:
        total = self.points + len(errors)
        if len(errors):
            self.mean_error_mm = (self.mean_error_mm * self.points + float(errors.sum())) / total
            self.max_error_mm = max(self.max_error_mm, float(errors.max()))
        self.points = total
        self.unconverged += int((errors > tolerance).sum())
        self.iterations = max(self.iterations, iterations)

    def as_dict(self) -> dict[str, float]:
        return {"inverse_max_error_mm": round(self.max_error_mm, 6),
                "inverse_mean_error_mm": round(self.mean_error_mm, 6),
                "inverse_unconverged_points": self.unconverged, "inverse_iterations": self.iterations}


def invert_points(forward: Mapping, matrix: np.ndarray, targets: np.ndarray, *, tolerance: float = TOLERANCE_MM,
                  iterations: int = ITERATIONS, report: InversionReport | None = None) -> np.ndarray:
    """``T⁻¹`` at ``(N, 3)`` world points ``targets``: the ``x`` with ``forward(x) = y``, by
    ``x ← x − M⁻¹ (forward(x) − y)`` from ``x = M⁻¹ y``, each point until it is within ``tolerance`` mm.

    ``matrix`` is the 4×4 affine part of ``forward`` (exact for a matrix, where one step solves it). Points that
    do not converge (where the field folds) keep their best estimate; ``report`` collects the errors.
    """
    inverse = np.linalg.inv(np.asarray(matrix, float))
    linear_inverse = inverse[:3, :3].T
    estimate = targets @ linear_inverse + inverse[:3, 3]
    error = forward(estimate) - targets
    distance = np.linalg.norm(error, axis=1)
    active = np.flatnonzero(distance > tolerance)
    done = 0
    for done in range(1, iterations + 1):
        if not len(active):
            break
        candidate = estimate[active] - error[active] @ linear_inverse
        candidate_error = forward(candidate) - targets[active]
        candidate_distance = np.linalg.norm(candidate_error, axis=1)
        better = candidate_distance < distance[active]  # keep the best estimate: no step makes a point worse
        chosen = active[better]
        estimate[chosen], error[chosen], distance[chosen] = (candidate[better], candidate_error[better],
                                                             candidate_distance[better])
        active = chosen[distance[chosen] > tolerance]  # a point that stopped improving is left as it is
    if report is not None:
        report.add(distance, done, tolerance)
    return estimate


def inverse_mapping(forward: Mapping, matrix: np.ndarray | None, exact: bool = False,
                    report: InversionReport | None = None) -> Mapping:
    """A callable mapping ``(N, 3)`` points through ``T⁻¹``: the inverse matrix when ``exact`` (``forward`` is
    the matrix ``matrix``), else :func:`invert_points` with ``matrix`` as the affine part."""
    linear = np.eye(4) if matrix is None else np.asarray(matrix, float)
    if exact:
        inverse = np.linalg.inv(linear)
        return lambda points: points @ inverse[:3, :3].T + inverse[:3, 3]
    return lambda points: invert_points(forward, linear, points, report=report)


def inverse_field(forward: Mapping, matrix: np.ndarray | None, affine: np.ndarray, shape: tuple[int, ...], *,
                  slab_voxels: int = 1_000_000) -> tuple[np.ndarray, InversionReport]:
    """The inverse as a displacement ``v(y) = T⁻¹(y) − y`` (RAS mm, ``(I, J, K, 3)``) at the voxel centres of
    the grid ``affine``/``shape`` (the moving image's, for a registration), and how well it inverts."""
    report = InversionReport()
    mapping = inverse_mapping(forward, matrix, report=report)
    field = np.empty((*shape, 3), dtype=np.float64)
    step = max(1, slab_voxels // max(1, shape[1] * shape[2]))
    for start in range(0, shape[0], step):
        stop = min(start + step, shape[0])
        voxels = np.indices((stop - start, shape[1], shape[2]), dtype=np.float64).reshape(3, -1)
        voxels[0] += start
        world = (affine[:3, :3] @ voxels + affine[:3, 3:]).T
        field[start:stop] = (mapping(world) - world).reshape(stop - start, shape[1], shape[2], 3)
    return field, report
