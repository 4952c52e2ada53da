"""Inverting spatial transforms: a matrix exactly, a displacement field by fixed-point iteration.

A transform ``T`` maps fixed-image world points to moving-image world points (RAS mm). Its inverse maps
moving-world points back: ``T⁻¹(y)`` is the ``x`` with ``T(x) = y``. For a displacement field
``T(x) = x + u(x)`` (``u`` on the fixed grid) it is found per point as ITK's
``InvertDisplacementFieldImageFilter`` does, by the fixed-point iteration ``x ← y − u(x)``, here preconditioned
by the field's affine part ``M`` (the registration's matrix, or the affine closest to the field): with
``T(x) = M x + r(x)`` it is ``x ← x − M⁻¹ (T(x) − y)``, which converges however large the affine part, as long
as the residual warp is mild; where it stretches or squeezes strongly, a damped Newton step takes over. A point
stops when ``|T(x) − y|`` is below the tolerance; the largest remaining error is reported, so that a field that
folds (or a target with no preimage) is not inverted in silence.

Written on a grid, the inverse is a displacement ``v(y) = T⁻¹(y) − y`` on the *moving* image's grid (the
domain of the inverse), in the same ITK convention as the forward field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Mapping = Callable[[np.ndarray], np.ndarray]

TOLERANCE_MM = 0.01
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
                  iterations: int = ITERATIONS, report: InversionReport | None = None,
                  seeds: Seeds | None = None) -> np.ndarray:
    """``T⁻¹`` at ``(N, 3)`` world points ``targets``: the ``x`` with ``forward(x) = y``, each point until it is
    within ``tolerance`` mm of its target.

    From ``x = M⁻¹ y`` (``matrix`` is the 4×4 affine part of ``forward``; exact for a matrix, where one step
    solves it), a step is first the fixed-point one, ``x ← x − M⁻¹ (forward(x) − y)``; where that does not
    bring a point closer (a strong local stretch or squeeze, where the plain iteration diverges) the step is
    Newton's, ``x ← x − J(x)⁻¹ (forward(x) − y)`` with ``J`` by finite differences, halved until it does. A point
    that is still off starts again from the ``seeds`` grid voxel (the field's grid) whose image lies nearest its
    target, as a scattered-data inverse would place it. A point that nothing brings
    within the tolerance (a target with no preimage, where the field folds or leaves its grid) keeps its best
    estimate and is counted in ``report``.
    """
    inverse = np.linalg.inv(np.asarray(matrix, float))
    linear_inverse = inverse[:3, :3].T
    estimate = targets @ linear_inverse + inverse[:3, 3]
    error = forward(estimate) - targets
    distance = np.linalg.norm(error, axis=1)
    active = np.flatnonzero(distance > tolerance)
    done = _iterate(forward, targets, estimate, error, distance, active, linear_inverse, tolerance, iterations // 2)
    missed = np.flatnonzero(distance > tolerance)
    if len(missed) and seeds is not None:
        start, start_image = seeds.nearest(targets[missed])
        start_error = start_image - targets[missed]
        start_distance = np.linalg.norm(start_error, axis=1)
        closer = start_distance < distance[missed]
        chosen = missed[closer]
        estimate[chosen], error[chosen], distance[chosen] = (start[closer], start_error[closer],
                                                             start_distance[closer])
        done += _iterate(forward, targets, estimate, error, distance, chosen, linear_inverse, tolerance,
                         iterations - iterations // 2)
    if report is not None:
        report.add(distance, done, tolerance)
    return estimate


def _iterate(forward: Mapping, targets: np.ndarray, estimate: np.ndarray, error: np.ndarray, distance: np.ndarray,
             active: np.ndarray, linear_inverse: np.ndarray, tolerance: float, iterations: int) -> int:
    """Improve the ``active`` points in place (see :func:`invert_points`); return the iterations taken."""
    done = 0
    active = active[distance[active] > tolerance]
    while len(active) and done < iterations:
        done += 1
        previous = distance[active].copy()
        _try_step(forward, targets, estimate, error, distance, active, error[active] @ linear_inverse)
        slow = distance[active] > 0.5 * previous
        if slow.any():  # where the fixed-point step fails or crawls, Newton's, halved until it helps
            stalled = active[slow]
            newton = _newton_steps(forward, estimate[stalled], error[stalled], linear_inverse)
            left = np.ones(len(stalled), bool)
            for scale in (1.0, 0.5, 0.25, 0.125):
                left[left] = ~_try_step(forward, targets, estimate, error, distance, stalled[left],
                                        scale * newton[left])
                if not left.any():
                    break
        progressing = distance[active] < 0.9 * previous  # a point that no longer gets closer is left as it is
        active = active[progressing & (distance[active] > tolerance)]
    return done


class Seeds:
    """The voxel centres of a forward transform's grid (every voxel, or a regular subsample of at most about
    ``limit``) and their images, indexed on first use: where to restart a point the iteration left off."""

    def __init__(self, forward: Mapping, affine: np.ndarray, shape: tuple[int, ...], limit: int = 2_000_000) -> None:
        self.forward, self.affine, self.shape, self.limit = forward, np.asarray(affine, float), shape, limit
        self._tree: Any = None
        self._world = self._images = np.empty((0, 3))

    def nearest(self, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each target, the grid point whose image is nearest it, and that image."""
        if self._tree is None:
            from scipy.spatial import cKDTree

            stride = max(1, int(np.ceil((int(np.prod(self.shape[:3])) / self.limit) ** (1 / 3))))
            axes = (np.arange(0, n, stride) for n in self.shape[:3])
            voxels = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(np.float64)
            self._world = voxels @ self.affine[:3, :3].T + self.affine[:3, 3]
            self._images = self.forward(self._world)
            self._tree = cKDTree(self._images)
        _, index = self._tree.query(targets)
        return self._world[index], self._images[index]


def _try_step(forward: Mapping, targets: np.ndarray, estimate: np.ndarray, error: np.ndarray,
              distance: np.ndarray, points: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Move ``points`` by ``-step`` where that brings them closer to their targets (updating ``estimate``,
    ``error`` and ``distance`` in place); return which did."""
    candidate = estimate[points] - step
    candidate_error = forward(candidate) - targets[points]
    candidate_distance = np.linalg.norm(candidate_error, axis=1)
    better = candidate_distance < distance[points]
    chosen = points[better]
    estimate[chosen], error[chosen], distance[chosen] = (candidate[better], candidate_error[better],
                                                         candidate_distance[better])
    return np.asarray(better)


def _newton_steps(forward: Mapping, points: np.ndarray, error: np.ndarray, linear_inverse: np.ndarray,
                  delta: float = 0.05) -> np.ndarray:
    """``J(x)⁻¹ (forward(x) − y)`` per point, ``J`` by forward differences of ``delta`` mm; where ``J`` is
    singular, the fixed-point step instead."""
    base = forward(points)
    jacobian = np.empty((len(points), 3, 3))
    for axis in range(3):
        shifted = points.copy()
        shifted[:, axis] += delta
        jacobian[:, :, axis] = (forward(shifted) - base) / delta
    steps = error @ linear_inverse
    determinant = np.linalg.det(jacobian)
    solvable = np.abs(determinant) > 1e-6
    if solvable.any():
        steps[solvable] = np.linalg.solve(jacobian[solvable], error[solvable][:, :, None])[:, :, 0]
    return steps


def inverse_mapping(forward: Mapping, matrix: np.ndarray | None, exact: bool = False,
                    report: InversionReport | None = None,
                    seeds: Seeds | None = None) -> Mapping:
    """A callable mapping ``(N, 3)`` points through ``T⁻¹``: the inverse matrix when ``exact`` (``forward`` is
    the matrix ``matrix``), else :func:`invert_points` with ``matrix`` as the affine part."""
    linear = np.eye(4) if matrix is None else np.asarray(matrix, float)
    if exact:
        inverse = np.linalg.inv(linear)
        return lambda points: points @ inverse[:3, :3].T + inverse[:3, 3]
    return lambda points: invert_points(forward, linear, points, report=report, seeds=seeds)


def inverse_field(forward: Mapping, matrix: np.ndarray | None, affine: np.ndarray, shape: tuple[int, ...], *,
                  seeds: Seeds | None = None, slab_voxels: int = 1_000_000
                  ) -> tuple[np.ndarray, InversionReport]:
    """The inverse as a displacement ``v(y) = T⁻¹(y) − y`` (RAS mm, ``(I, J, K, 3)``) at the voxel centres of
    the grid ``affine``/``shape`` (the moving image's, for a registration), and how well it inverts."""
    report = InversionReport()
    mapping = inverse_mapping(forward, matrix, report=report, seeds=seeds)
    field = np.empty((*shape, 3), dtype=np.float64)
    step = max(1, slab_voxels // max(1, shape[1] * shape[2]))
    for start in range(0, shape[0], step):
        stop = min(start + step, shape[0])
        voxels = np.indices((stop - start, shape[1], shape[2]), dtype=np.float64).reshape(3, -1)
        voxels[0] += start
        world = (affine[:3, :3] @ voxels + affine[:3, 3:]).T
        field[start:stop] = (mapping(world) - world).reshape(stop - start, shape[1], shape[2], 3)
    return field, report
