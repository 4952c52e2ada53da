"""The transform model of the classical registrations: the centred rigid/similarity/affine transform, its
initialisation (centres of mass, principal axes), 2-D (single-slice) plane handling, and affine resampling."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from mitk_builtin._registration_pyramid import Volume, normalise, shrink, shrink_factors, shrink_mask, world_to_grid


def centre_of_mass(volume: Volume, window: tuple[float, float], mask: torch.Tensor | None = None) -> np.ndarray:
    weights = normalise(volume.tensor[0, 0], window).double()
    if mask is not None:
        weights = weights * mask[0, 0]
    total = float(weights.sum())
    if total <= 0:
        return (volume.affine @ np.append((np.array(volume.shape) - 1) / 2.0, 1.0))[:3]
    index = [torch.arange(n, dtype=torch.float64, device=weights.device) for n in volume.shape]
    centre = [float((weights.sum(dim=tuple(a for a in range(3) if a != axis)) * index[axis]).sum()) / total
              for axis in range(3)]
    return (volume.affine @ np.append(centre, 1.0))[:3]


def principal_axes(volume: Volume, window: tuple[float, float], centre: np.ndarray,
                   mask: torch.Tensor | None = None) -> np.ndarray:
    """Eigenvectors (columns, world axes) of the intensity-weighted second moments about ``centre``."""
    weights = normalise(volume.tensor[0, 0], window).double()
    if mask is not None:
        weights = weights * mask[0, 0]
    weights = weights.flatten()
    index = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64, device=weights.device)
                                         for n in volume.shape], indexing="ij"), dim=-1).reshape(-1, 3)
    keep = weights > 0
    world = index[keep] @ torch.as_tensor(volume.affine[:3, :3].T, device=weights.device)
    world = world + torch.as_tensor(volume.affine[:3, 3] - centre, device=weights.device)
    w = weights[keep]
    moments = (world * w[:, None]).T @ world / w.sum().clamp_min(1e-12)
    _, vectors = np.linalg.eigh(moments.cpu().numpy())
    return np.asarray(vectors)


def moments_rotation(fixed_axes: np.ndarray, moving_axes: np.ndarray) -> np.ndarray:
    """The proper rotation mapping fixed principal axes onto moving ones that is closest to the identity."""
    best, best_angle = np.eye(3), np.inf
    for signs in np.ndindex(2, 2, 2):
        flip = np.diag([1.0 if s == 0 else -1.0 for s in signs])
        rotation = moving_axes @ flip @ fixed_axes.T
        if np.linalg.det(rotation) < 0:
            continue
        angle = math.acos(float(np.clip((np.trace(rotation) - 1) / 2, -1, 1)))
        if angle < best_angle:
            best, best_angle = rotation, angle
    return best


def rotation_matrix(vector: torch.Tensor) -> torch.Tensor:
    """Rotation matrix of a rotation vector (axis × angle in radians), differentiable."""
    zero = torch.zeros((), dtype=vector.dtype, device=vector.device)
    skew = torch.stack([torch.stack([zero, -vector[2], vector[1]]),
                        torch.stack([vector[2], zero, -vector[0]]),
                        torch.stack([-vector[1], vector[0], zero])])
    return torch.linalg.matrix_exp(skew)


class CentredTransform(torch.nn.Module):
    """``x ↦ L·L0·(x − c) + c + t0 + t`` in world mm; parameters scaled so one unit moves points about 1 mm."""

    def __init__(self, kind: str, centre: np.ndarray, translation: np.ndarray, linear: np.ndarray,
                 radius: float) -> None:
        super().__init__()
        self.kind = kind
        self.radius = float(radius)
        self.register_buffer("centre", torch.as_tensor(centre, dtype=torch.float64))
        self.register_buffer("offset", torch.as_tensor(translation, dtype=torch.float64))
        self.register_buffer("initial", torch.as_tensor(linear, dtype=torch.float64))
        self.translation = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
        self.rotation = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
        self.log_scale = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64), requires_grad=kind == "similarity")
        self.linear = torch.nn.Parameter(torch.zeros(3, 3, dtype=torch.float64), requires_grad=kind == "affine")

    def matrix(self) -> torch.Tensor:
        """The 4×4 fixed-world → moving-world matrix."""
        linear = rotation_matrix(self.rotation / self.radius)
        if self.kind == "similarity":
            linear = torch.exp(self.log_scale / self.radius) * linear
        if self.kind == "affine":
            linear = linear @ (torch.eye(3, dtype=torch.float64, device=linear.device) + self.linear / self.radius)
        linear = linear @ self.initial
        shift = self.centre + self.offset + self.translation - linear @ self.centre
        top = torch.cat([linear, shift[:, None]], dim=1)
        bottom = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64, device=linear.device)
        return torch.cat([top, bottom], dim=0)

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def from_matrix(kind: str, matrix: torch.Tensor, like: CentredTransform) -> CentredTransform:
    """A centred transform of ``kind`` (same centre and radius as ``like``) that starts at ``matrix``."""
    array = matrix.detach().cpu().numpy().astype(np.float64)
    centre = np.asarray(like.state_dict()["centre"].cpu(), dtype=np.float64)
    linear = array[:3, :3]
    return CentredTransform(kind, centre, linear @ centre + array[:3, 3] - centre, linear, like.radius)


def plane_normal(volume: Volume, device: torch.device) -> torch.Tensor | None:
    """The world normal of a single-slice (2-D) image, or None for a volume."""
    flat = flat_axis(volume.shape)
    if flat is None:
        return None
    axis = volume.affine[:3, flat]
    return torch.as_tensor(axis / np.linalg.norm(axis), dtype=torch.float64, device=device)


@torch.no_grad()
def keep_in_plane(transform: CentredTransform, normal: torch.Tensor) -> None:
    """Project the gradients so that a 2-D registration moves points only within the image plane: in-plane
    translations, rotations about the normal, linear changes that leave the normal alone."""
    if transform.translation.grad is not None:
        grad = transform.translation.grad
        grad -= (grad @ normal) * normal
    if transform.rotation.grad is not None:
        grad = transform.rotation.grad
        grad.copy_((grad @ normal) * normal)
    if transform.linear.grad is not None:
        projection = torch.eye(3, dtype=torch.float64, device=normal.device) - torch.outer(normal, normal)
        transform.linear.grad.copy_(projection @ transform.linear.grad @ projection)


def initial_transform(fixed: Volume, moving: Volume, fixed_window: tuple[float, float],
                      moving_window: tuple[float, float], kind: str, init: str,
                      fixed_mask: torch.Tensor | None = None, moving_mask: torch.Tensor | None = None
                      ) -> CentredTransform:
    fixed_centre = (fixed.affine @ np.append((np.array(fixed.shape) - 1) / 2.0, 1.0))[:3]
    moving_centre = (moving.affine @ np.append((np.array(moving.shape) - 1) / 2.0, 1.0))[:3]
    linear = np.eye(3)
    if init in ("com", "moments"):
        fixed_centre = centre_of_mass(fixed, fixed_window, fixed_mask)
        moving_centre = centre_of_mass(moving, moving_window, moving_mask)
    if init == "moments" and min(fixed.shape) > 1:
        fixed_factors, moving_factors = shrink_factors(fixed.spacing, 4.0), shrink_factors(moving.spacing, 4.0)
        coarse_fixed, coarse_moving = shrink(fixed, fixed_factors), shrink(moving, moving_factors)
        coarse_fixed_mask = None if fixed_mask is None else shrink_mask(fixed_mask, fixed_factors)
        coarse_moving_mask = None if moving_mask is None else shrink_mask(moving_mask, moving_factors)
        linear = moments_rotation(principal_axes(coarse_fixed, fixed_window, fixed_centre, coarse_fixed_mask),
                                  principal_axes(coarse_moving, moving_window, moving_centre, coarse_moving_mask))
    if init == "identity":  # the scanner frames as they are: no shift
        moving_centre = fixed_centre
    extent = np.array(fixed.shape) * fixed.spacing
    radius = float(np.linalg.norm(extent)) / 4.0
    return CentredTransform(kind, fixed_centre, moving_centre - fixed_centre, linear, radius)


def affine_resample(moving: Volume, fixed: Volume, matrix: np.ndarray) -> torch.Tensor:
    """``moving`` sampled at ``matrix @ x`` for every fixed voxel centre ``x``: ``(1, 1, I, J, K)``."""
    device = fixed.tensor.device
    to_grid = world_to_grid(moving.affine, moving.shape, device).double()
    voxel_to_grid = (to_grid @ torch.as_tensor(matrix @ fixed.affine, device=device))[:3].float()
    slabs = []
    step = max(1, 2_000_000 // (fixed.shape[1] * fixed.shape[2]))
    j, k = torch.meshgrid(torch.arange(fixed.shape[1], device=device, dtype=torch.float32),
                          torch.arange(fixed.shape[2], device=device, dtype=torch.float32), indexing="ij")
    for start in range(0, fixed.shape[0], step):
        i = torch.arange(start, min(start + step, fixed.shape[0]), device=device, dtype=torch.float32)
        voxels = torch.stack([i[:, None, None].expand(-1, *j.shape), j.expand(len(i), -1, -1),
                              k.expand(len(i), -1, -1), torch.ones(len(i), *j.shape, device=device)], dim=-1)
        grid = voxels @ voxel_to_grid.T
        slabs.append(F.grid_sample(moving.tensor, grid.flip(-1)[None], mode="bilinear", padding_mode="zeros",
                                   align_corners=True))
    return torch.cat(slabs, dim=2)


def flat_axis(shape: tuple[int, int, int]) -> int | None:
    """The single-voxel axis of a 2-D image stored as a one-slice volume, or None for a volume."""
    flat = [axis for axis, n in enumerate(shape) if n == 1]
    return flat[0] if len(flat) == 1 else None


def in_plane(tensor: torch.Tensor, axis: int | None, field: bool = False) -> torch.Tensor:
    """``(1, C, I, J, K)`` → ``(1, C, A, B)`` without the flat ``axis`` (a field also loses that component)."""
    if axis is None:
        return tensor
    if field:
        tensor = tensor[:, [c for c in range(3) if c != axis]]
    return tensor.squeeze(2 + axis)


def as_volume(tensor: torch.Tensor, axis: int | None) -> torch.Tensor:
    """The inverse of :func:`in_plane` for a field: a zero component along the flat axis."""
    if axis is None:
        return tensor
    components = list(tensor.unsqueeze(2 + axis).unbind(1))
    components.insert(axis, torch.zeros_like(components[0]))
    return torch.stack(components, dim=1)
