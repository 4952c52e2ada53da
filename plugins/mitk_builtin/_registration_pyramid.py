"""The image pyramid of the classical registrations: volumes as torch tensors with their affines, Gaussian
smoothing and shrinking, intensity windows, masks on each level, and sampling at world points."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mitk.errors import PluginError
from mitk.image import Image
from mitk.io.reader import as_volume_array


@dataclass
class Volume:
    """A channel-first ``(1, 1, I, J, K)`` float tensor and its voxel → RAS affine."""

    tensor: torch.Tensor
    affine: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        i, j, k = self.tensor.shape[2:]
        return int(i), int(j), int(k)

    @property
    def spacing(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))


def to_volume(image: Image, device: torch.device) -> Volume:
    array = np.asarray(image.array, dtype=np.float32)
    if array.ndim != 3:
        raise PluginError(f"registration needs 3-D volumes, got shape {array.shape}")
    return Volume(torch.from_numpy(np.ascontiguousarray(array)).to(device)[None, None],
                  np.asarray(image.affine, dtype=np.float64))


def gaussian_smooth(tensor: torch.Tensor, sigmas: np.ndarray) -> torch.Tensor:
    """Separable Gaussian smoothing of a ``(1, C, I, J, K)`` tensor; ``sigmas`` in voxels per axis."""
    out = tensor
    for axis, sigma in enumerate(sigmas):
        if sigma < 0.2:
            continue
        radius = max(1, math.ceil(3 * sigma))
        x = torch.arange(-radius, radius + 1, dtype=tensor.dtype, device=tensor.device)
        kernel = torch.exp(-0.5 * (x / float(sigma)) ** 2)
        kernel = kernel / kernel.sum()
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        padding = [0, 0, 0]
        padding[axis] = radius
        channels = out.shape[1]
        weight = kernel.view(shape).expand(channels, 1, *shape[2:]).contiguous()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        out = F.conv3d(F.pad(out, pad, mode="replicate"), weight, groups=channels)
    return out


def shrink_factors(spacing: np.ndarray, level_spacing: float, shape: tuple[int, int, int] = (2, 2, 2)
                   ) -> tuple[int, int, int]:
    """Integer shrink factor per axis that brings ``spacing`` closest to ``level_spacing`` mm (at least 1;
    always 1 along a single-slice axis, so a 2-D image stays in its plane)."""
    factors = [max(1, round(level_spacing / s)) if n > 1 else 1 for s, n in zip(spacing, shape, strict=True)]
    return factors[0], factors[1], factors[2]


def shrink(volume: Volume, factors: tuple[int, int, int]) -> Volume:
    """Average ``factors`` voxels into one, then smooth lightly (σ = ½ voxel): a cheap Gaussian pyramid level."""
    if factors == (1, 1, 1):
        return volume
    pads = []
    for axis in (2, 1, 0):  # pad to whole multiples so no edge voxels are lost
        extra = (-volume.shape[axis]) % factors[axis]
        pads += [0, extra]
    tensor = F.pad(volume.tensor, pads, mode="replicate") if any(pads) else volume.tensor
    pooled = gaussian_smooth(F.avg_pool3d(tensor, kernel_size=factors, stride=factors), np.full(3, 0.5))
    scale = np.eye(4)
    scale[:3, :3] = np.diag(factors)
    scale[:3, 3] = (np.array(factors) - 1) / 2.0
    return Volume(pooled, volume.affine @ scale)


def intensity_window(tensor: torch.Tensor, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """Robust intensity range (percentiles of at most ~1M voxels)."""
    values = tensor.flatten()
    if values.numel() > 200_000:
        values = values[:: values.numel() // 200_000 + 1]
    values = values.float()
    lo, hi = torch.quantile(values, torch.tensor([low / 100, high / 100], device=values.device)).tolist()
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def normalise(tensor: torch.Tensor, window: tuple[float, float]) -> torch.Tensor:
    lo, hi = window
    return ((tensor - lo) / (hi - lo)).clamp(0.0, 1.0)


def world_to_grid(affine: np.ndarray, shape: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    """4×4 map from world mm to ``grid_sample``'s normalised (align_corners=True) coordinates, ordered (i, j, k)."""
    size = np.array(shape, dtype=float)
    normalise_index = np.eye(4)
    normalise_index[:3, :3] = np.diag(2.0 / np.maximum(size - 1, 1))
    normalise_index[:3, 3] = -1.0
    return torch.as_tensor(normalise_index @ np.linalg.inv(affine), dtype=torch.float32, device=device)


def sample(volume: torch.Tensor, grid_points: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Sample ``(1, C, I, J, K)`` at ``(N, 3)`` normalised (i, j, k) points → ``(C, N)``; zero outside."""
    grid = grid_points.flip(-1).view(1, -1, 1, 1, 3)
    values = F.grid_sample(volume, grid, mode=mode, padding_mode="zeros", align_corners=True)
    return values.view(volume.shape[1], -1)


def inside(grid_points: torch.Tensor) -> torch.Tensor:
    return grid_points.detach().abs().amax(dim=-1) <= 1.0 + 1e-4


def to_mask(mask: Image | None, volume: Volume) -> torch.Tensor | None:
    """A mask on ``volume``'s grid as a ``(1, 1, I, J, K)`` bool tensor (any non-zero voxel is inside)."""
    if mask is None:
        return None
    array = as_volume_array(np.asarray(mask.array))
    if array.shape != volume.shape:
        raise PluginError(f"mask of shape {array.shape} is not on its image's grid {volume.shape}")
    return torch.from_numpy(np.ascontiguousarray(array != 0)).to(volume.tensor.device)[None, None]


def shrink_mask(mask: torch.Tensor, factors: tuple[int, int, int]) -> torch.Tensor:
    """A mask on the pyramid level ``shrink(volume, factors)``: a level voxel is inside when at least half of
    the voxels it averages are (or, for a mask thinner than that, any)."""
    if factors == (1, 1, 1):
        return mask
    pads = []
    for axis in (2, 1, 0):
        pads += [0, (-mask.shape[2 + axis]) % factors[axis]]
    share = F.avg_pool3d(F.pad(mask.float(), pads, mode="replicate"), kernel_size=factors, stride=factors)
    level = share >= 0.5
    return level if bool(level.any()) else share > 0


def foreground(volume: Volume, window: tuple[float, float], margin_mm: float) -> torch.Tensor:
    """The voxels above 2 % of the intensity window, dilated by ``margin_mm``: a skull-stripped template's brain
    (and a margin of its edge), a whole head's head."""
    import torch.nn.functional as F

    inside = (normalise(volume.tensor, window) > 0.02).float()
    radius = [int(np.ceil(margin_mm / s)) if n > 1 else 0 for s, n in zip(volume.spacing, volume.shape, strict=True)]
    if any(radius):
        inside = F.max_pool3d(inside, kernel_size=[2 * r + 1 for r in radius], stride=1, padding=radius)
    return inside > 0.5
