"""The ``blob`` detector: multi-scale, scale-normalised Laplacian of Gaussian in millimetres.

A roundish lesion of radius ``r`` mm is a local extremum of ``-σ² ∇²(G_σ * I)`` in space and scale at
``σ = r / √3`` (Lindeberg's scale-space blob detector). The Gaussians and the Laplacian are taken in physical
units — each voxel axis gets ``σ / spacing`` voxels and its second derivative is divided by ``spacing²`` — so the
detector finds the same lesions whatever the voxel size, and needs no weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mitk.errors import UsageError
from mitk.tasks import DetectionPlugin, Transform

POLARITIES = ("bright", "dark", "both")
MIN_SIGMA_VOXELS = 0.75
"""Scales whose Gaussian is narrower than this many voxels (along the coarsest axis) are searched at this width."""


def blob_radii(min_radius_mm: float, max_radius_mm: float, num_scales: int) -> np.ndarray:
    """Geometrically spaced radii (mm) from ``min_radius_mm`` to ``max_radius_mm``."""
    if not 0 < min_radius_mm <= max_radius_mm:
        raise UsageError(f"blob radii need 0 < min_radius_mm <= max_radius_mm, got {min_radius_mm}, "
                         f"{max_radius_mm}")
    if num_scales < 1:
        raise UsageError(f"num_scales must be at least 1, got {num_scales}")
    if num_scales == 1 or min_radius_mm == max_radius_mm:
        return np.array([float(min_radius_mm)])
    return np.geomspace(min_radius_mm, max_radius_mm, int(num_scales))


def normalised_log(volume: np.ndarray, spacing: Sequence[float], sigma_mm: float) -> np.ndarray:
    """``-σ² ∇²(G_σ * volume)`` with σ and the derivatives in millimetres (bright blobs are positive)."""
    from scipy import ndimage

    sigma_vox = [sigma_mm / float(s) for s in spacing]
    laplacian = np.zeros(volume.shape, dtype=np.float32)
    for axis, step in enumerate(spacing):
        order = [0] * volume.ndim
        order[axis] = 2
        laplacian += ndimage.gaussian_filter(volume, sigma=sigma_vox, order=order, mode="nearest",
                                             truncate=3.0) / np.float32(float(step) ** 2)
    laplacian *= np.float32(-(sigma_mm ** 2))
    return laplacian


def _refine(values: np.ndarray) -> float:
    """Offset (-0.5..0.5) of the vertex of the parabola through three samples around a peak."""
    left, centre, right = (float(v) for v in values)
    curvature = left - 2.0 * centre + right
    if curvature >= 0:
        return 0.0
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))


def find_lesions(volume: np.ndarray, spacing: Sequence[float], *, min_radius_mm: float = 3.0,
                 max_radius_mm: float = 15.0, num_scales: int = 6, polarity: str = "bright",
                 threshold: float = 0.1, max_lesions: int = 20, overlap: float = 0.5
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lesions of ``volume`` (axes i, j, k; ``spacing`` mm per axis): ``(centres, radii_mm, scores, signs)``.

    ``centres`` are sub-voxel indices; ``radii_mm`` the radius of the sphere whose LoG response peaks at the
    detected scale; ``scores`` the peak response divided by the image's robust intensity range (the 0.5–99.5
    percentile spread), so ``threshold`` is a contrast fraction; ``signs`` +1 for bright, -1 for dark.
    Peaks must be maxima over their 3×3×3 neighbours and the neighbouring scales; of two lesions whose spheres
    overlap by more than ``overlap`` of the smaller radius, the weaker is dropped.
    """
    from scipy import ndimage

    if polarity not in POLARITIES:
        raise UsageError(f"polarity must be one of {', '.join(POLARITIES)}, got {polarity!r}")
    data = np.asarray(volume, dtype=np.float32)
    empty = (np.zeros((0, 3)), np.zeros(0), np.zeros(0), np.zeros(0, dtype=int))
    if data.size == 0:
        return empty
    low, high = np.percentile(data, [0.5, 99.5])
    spread = float(high - low)
    if not np.isfinite(spread) or spread <= 0:
        return empty
    data = (data - np.float32(low)) / np.float32(spread)
    radii = blob_radii(min_radius_mm, max_radius_mm, num_scales)
    # A Gaussian narrower than 3/4 of a voxel is not sampled: such scales only see noise. Search from there.
    finest = MIN_SIGMA_VOXELS * np.sqrt(3.0) * float(max(spacing))
    radii = np.unique(np.maximum(radii, min(finest, float(radii[-1]))))
    stack = np.stack([normalised_log(data, spacing, float(r) / np.sqrt(3.0)) for r in radii])  # (S, I, J, K)
    signs = {"bright": (1,), "dark": (-1,), "both": (1, -1)}[polarity]
    candidates: list[tuple[float, np.ndarray, float, int]] = []
    padded_shape = stack.shape
    for sign in signs:
        response = stack if sign > 0 else -stack
        neighbourhood = ndimage.maximum_filter(response, size=(3, 3, 3, 3)[: response.ndim], mode="nearest")
        peaks = np.argwhere((response == neighbourhood) & (response > threshold))
        for peak in peaks:
            scale, *index = (int(v) for v in peak)
            centre = np.asarray(index, dtype=float)
            for axis in range(len(index)):  # sub-voxel centre: a parabola through each axis' neighbours
                if 0 < index[axis] < padded_shape[axis + 1] - 1:
                    around = [tuple([scale, *index[:axis], index[axis] + d, *index[axis + 1:]]) for d in (-1, 0, 1)]
                    centre[axis] += _refine(np.array([response[a] for a in around]))
            radius = float(radii[scale])
            if 0 < scale < len(radii) - 1:  # sub-scale radius, interpolated on the log-radius axis
                offset = _refine(np.array([response[(scale + d, *index)] for d in (-1, 0, 1)]))
                step = np.log(radii[scale + 1] / radii[scale] if offset > 0 else radii[scale] / radii[scale - 1])
                radius = float(np.exp(np.log(radius) + offset * step))
            candidates.append((float(response[tuple(peak)]), centre, radius, sign))
    candidates.sort(key=lambda c: -c[0])
    kept: list[tuple[float, np.ndarray, float, int]] = []
    scale_mm = np.asarray(spacing, dtype=float)
    for candidate in candidates:
        _, centre, radius, _ = candidate
        if any(np.linalg.norm((centre - other[1]) * scale_mm) < radius + other[2] - overlap * min(radius, other[2])
               for other in kept):
            continue
        kept.append(candidate)
        if len(kept) >= max_lesions:
            break
    if not kept:
        return empty
    return (np.array([k[1] for k in kept]), np.array([k[2] for k in kept]), np.array([k[0] for k in kept]),
            np.array([k[3] for k in kept], dtype=int))


def lesion_boxes(centres: np.ndarray, radii_mm: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Voxel boxes ``(i0, j0, k0, i1, j1, k1)`` (extent from ``start - 0.5`` to ``end - 0.5``) of the cubes
    circumscribing each sphere."""
    half = np.asarray(radii_mm, dtype=float)[:, None] / np.asarray(spacing, dtype=float)[None, :]
    centres = np.asarray(centres, dtype=float).reshape(-1, 3)
    return np.concatenate([centres - half + 0.5, centres + half + 0.5], axis=1)


def block_factors(spacing: Sequence[float], target_mm: Sequence[float]) -> tuple[int, ...]:
    """Whole voxels per block along each axis: ``target / spacing`` rounded, at least 1."""
    return tuple(max(1, round(float(t) / float(s))) for s, t in zip(spacing, target_mm, strict=True))


class BlockMean:
    """Average ``image`` over whole blocks of voxels (a coarser grid with the same axes); the affine moves with it:
    coarse voxel ``n`` covers fine voxels ``f·n .. f·n + f - 1``, so its centre is fine index ``f·n + (f - 1)/2``.
    Trailing voxels that do not fill a block are dropped. Exact and far cheaper than interpolation."""

    def __init__(self, target_mm: Sequence[float] | None, min_radius_mm: float) -> None:
        self.target = None if target_mm is None else [float(t) for t in target_mm]
        self.min_radius_mm = min_radius_mm

    def arrays(self, array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The block means of ``array`` (float32, one channel) and their grid's affine; None when no block
        holds more than one voxel (the image is searched as it is)."""
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        target = self.target or [self.min_radius_mm / 2.0] * 3
        factors = block_factors(spacing, target)
        if all(f == 1 for f in factors):
            return None
        shape = [n // f for n, f in zip(array.shape, factors, strict=True)]
        if min(shape) < 1:
            return None
        cropped = array[: shape[0] * factors[0], : shape[1] * factors[1], : shape[2] * factors[2]]
        blocks = cropped.reshape(shape[0], factors[0], shape[1], factors[1], shape[2], factors[2])
        coarse = blocks.mean(axis=(1, 3, 5), dtype=np.float32)
        scale = np.diag([*map(float, factors), 1.0])
        scale[:3, 3] = [(f - 1) / 2.0 for f in factors]
        return coarse, affine @ scale

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        from monai.data import MetaTensor

        image = data["image"]
        affine = np.asarray(image.affine, dtype=float)
        found = self.arrays(np.asarray(image.detach().cpu().numpy()[0], dtype=np.float32), affine)
        if found is None:
            return data
        coarse, grid_affine = found
        return {**data, "image": MetaTensor(coarse[None], affine=torch_tensor(grid_affine))}


def torch_tensor(array: np.ndarray) -> Any:
    import torch

    return torch.as_tensor(array, dtype=torch.float64)


class BlobDetector(DetectionPlugin):
    """Bright or dark roundish lesions by multi-scale LoG in millimetres: no weights, not trainable."""

    needs_weights = False
    trainable = False
    needs_torch = False

    def default_config(self) -> dict[str, Any]:
        return {
            "min_radius_mm": 3.0,
            "max_radius_mm": 15.0,
            "num_scales": 6,
            "polarity": "bright",
            "threshold": 0.1,
            "max_lesions": 20,
            "overlap": 0.5,
            "spacing": "auto",
            "labels": {1: "bright lesion", 2: "dark lesion"},
        }

    def settings_help(self) -> dict[str, str]:
        return {
            "min_radius_mm": "smallest lesion radius searched (mm)",
            "max_radius_mm": "largest lesion radius searched (mm)",
            "num_scales": "number of radii searched, geometrically spaced from min to max",
            "polarity": "bright, dark or both: lesions brighter or darker than their surroundings",
            "threshold": "minimum scale-normalised LoG response (fraction of the 0.5–99.5 % intensity range)",
            "max_lesions": "report at most this many lesions, strongest first",
            "overlap": "spheres overlapping by more than this fraction of the smaller radius: keep the stronger",
            "spacing": "search on blocks of about [x, y, z] mm; auto: min_radius_mm / 2; null: the image's grid",
            "labels": "label value → name: 1 for bright lesions, 2 for dark ones",
        }

    def settings_schema(self) -> dict[str, tuple[type | None, ...]]:
        return {**super().settings_schema(), "spacing": (list, str, None), "min_radius_mm": (float, int),
                "max_radius_mm": (float, int), "threshold": (float, int), "overlap": (float, int)}

    def inference_transforms(self, config: dict[str, Any]) -> Transform:
        """Block averages towards ``spacing`` (axes kept, exact geometry), or nothing: the runner maps boxes
        back to the input grid either way."""
        spacing = config.get("spacing")
        if spacing is None:
            return lambda data: data
        if spacing != "auto" and not (isinstance(spacing, list) and len(spacing) == 3):
            raise UsageError(f"blob: spacing must be auto, null or [x, y, z] mm, got {spacing!r}")
        return BlockMean(None if spacing == "auto" else spacing, float(config["min_radius_mm"]))

    def detect_array(self, image: Any, config: dict[str, Any]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`detect` on NumPy alone: the same float32 values, block means and search (no torch)."""
        array = image.array if image.array.ndim == 4 else image.array[..., None]
        volume = np.asarray(array[..., 0]).astype(np.float32)
        affine = np.asarray(image.affine, dtype=float)
        transform = self.inference_transforms(config)
        found = transform.arrays(volume, affine) if isinstance(transform, BlockMean) else None
        if found is not None:
            volume, affine = found
        boxes, scores, labels = self._search(volume, affine, config)
        return boxes, affine, scores, labels

    def detect(self, image: Any, model: Any, config: dict[str, Any]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes in ``image``'s voxel indices (channel first, first channel searched); label 1 bright, 2 dark."""
        return self._search(np.asarray(image.detach().cpu().numpy())[0], np.asarray(image.affine, dtype=float),
                            config)

    def _search(self, volume: np.ndarray, affine: np.ndarray, config: dict[str, Any]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        spacing = [float(s) for s in np.linalg.norm(affine[:3, :3], axis=0)]
        centres, radii, scores, signs = find_lesions(
            volume, spacing, min_radius_mm=float(config["min_radius_mm"]),
            max_radius_mm=float(config["max_radius_mm"]), num_scales=int(config["num_scales"]),
            polarity=str(config["polarity"]), threshold=float(config["threshold"]),
            max_lesions=int(config["max_lesions"]), overlap=float(config["overlap"]))
        return lesion_boxes(centres, radii, spacing), scores, np.where(signs > 0, 1, 2)
