"""The ``blobs`` detector: smooth, keep voxels much brighter than the anatomy, box each connected blob."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mitk.tasks import DetectionPlugin, Transform


def find_blobs(volume: np.ndarray, spacing: Sequence[float], *, sigma_mm: float = 1.0,
               contrast: float = 2.0, reference_percentile: float = 99.0, min_volume_mm3: float = 20.0,
               max_blobs: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``(i0, j0, k0, i1, j1, k1)`` (end exclusive) and scores of bright blobs in ``volume``.

    A voxel belongs to a blob when the Gaussian-smoothed intensity exceeds ``contrast`` times the
    ``reference_percentile`` of the smoothed volume. Blobs smaller than ``min_volume_mm3`` are dropped.
    A blob's score, in (0, 1), is ``1 - level / peak``: how far its brightest voxel rises above the level.
    """
    from scipy import ndimage

    sigma = [sigma_mm / s for s in spacing]
    smoothed = ndimage.gaussian_filter(np.asarray(volume, dtype=np.float32), sigma=sigma, mode="nearest")
    level = contrast * float(np.percentile(smoothed, reference_percentile))
    if level <= 0:  # a mostly empty volume: fall back to half the maximum
        level = 0.5 * float(smoothed.max())
    components, count = ndimage.label(smoothed > level)
    if count == 0:
        return np.zeros((0, 6)), np.zeros(0)
    voxel_mm3 = float(np.prod(spacing))
    sizes = ndimage.sum_labels(np.ones_like(smoothed), components, index=np.arange(1, count + 1))
    peaks = ndimage.maximum(smoothed, components, index=np.arange(1, count + 1))
    boxes, scores = [], []
    for index, extent in enumerate(ndimage.find_objects(components)):
        if extent is None or sizes[index] * voxel_mm3 < min_volume_mm3:
            continue
        boxes.append([s.start for s in extent] + [s.stop for s in extent])
        scores.append(1.0 - level / float(peaks[index]))
    order = np.argsort(scores)[::-1][:max_blobs]
    return np.asarray(boxes, dtype=float).reshape(-1, 6)[order], np.asarray(scores, dtype=float)[order]


class BlobDetector(DetectionPlugin):
    """Classical bright-blob detector: needs no weights and cannot be trained."""

    needs_weights = False
    trainable = False

    def default_config(self) -> dict[str, Any]:
        return {
            "sigma_mm": 1.0,
            "contrast": 2.0,
            "reference_percentile": 99.0,
            "min_volume_mm3": 20.0,
            "max_blobs": 50,
            "spacing": None,
            "labels": {1: "blob"},
        }

    def settings_help(self) -> dict[str, str]:
        return {
            "sigma_mm": "Gaussian smoothing width (mm) before thresholding",
            "contrast": "a blob is brighter than this many times the reference percentile",
            "reference_percentile": "percentile of the smoothed volume that stands for the anatomy",
            "min_volume_mm3": "blobs smaller than this (mm³) are dropped",
            "max_blobs": "report at most this many blobs, highest score first",
            "spacing": "resample to this voxel size [x, y, z] (mm) first; null: keep the image's grid",
            "labels": "label value → name of the reported boxes",
        }

    def settings_schema(self) -> dict[str, tuple[type | None, ...]]:
        return {**super().settings_schema(), "spacing": (list, None)}

    def inference_transforms(self, config: dict[str, Any]) -> Transform:
        """Reorient to RAS and, if ``spacing`` (mm) is set, resample; the runner maps boxes back."""
        from monai.transforms import Compose, Orientationd, Spacingd

        steps: list[Any] = [Orientationd(keys="image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))]
        if config.get("spacing"):
            steps.append(Spacingd(keys="image", pixdim=tuple(float(s) for s in config["spacing"]),
                                  mode="bilinear"))
        return Compose(steps)

    def detect(self, image: Any, model: Any, config: dict[str, Any]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes in ``image``'s (preprocessed, channel-first) voxel indices; every blob gets label 1."""
        affine = np.asarray(image.affine, dtype=float)
        spacing = [float(s) for s in np.linalg.norm(affine[:3, :3], axis=0)]
        volume = np.asarray(image.detach().cpu().numpy())[0]
        boxes, scores = find_blobs(
            volume, spacing, sigma_mm=float(config["sigma_mm"]), contrast=float(config["contrast"]),
            reference_percentile=float(config["reference_percentile"]),
            min_volume_mm3=float(config["min_volume_mm3"]), max_blobs=int(config["max_blobs"]))
        return boxes, scores, np.ones(len(scores), dtype=int)
