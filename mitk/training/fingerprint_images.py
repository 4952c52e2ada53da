"""The fingerprint of a classification or detection data set: its images, classes and boxes.

What the planners of :mod:`mitk.training.planning_classify` and :mod:`mitk.training.planning_detect` need,
measured on every labelled case (training and validation lists): per image its voxel size and shape (array
axes, as the classification and detection plugins read them: they do not reorient), its channel count and
whether it is one slice (2-D); per channel intensity statistics over the whole image (no label mask here),
pooled from 10,000 voxels per case drawn with nnU-Net's seed, and the channel's modality (the datalist's
``modality``, else CT when the image reaches air, else MR for volumes and "planar" for one-slice images:
radiographs, photographs and slices, which get no MRI augmentation). Classification adds the count of each
class; detection the boxes' edge lengths per world axis (mm) and how many boxes each case holds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from mitk.errors import InputError
from mitk.training.fingerprint import (
    HU_AIR,
    MODALITY_NAMES,
    SAMPLE_SEED,
    SAMPLES_PER_CASE,
    channel_statistics,
)

BOX_PERCENTILES = (5, 50, 95)


def image_statistics(array: np.ndarray, spacing: Sequence[float]) -> dict[str, Any]:
    """One image (``(I, J, K)`` or ``(I, J, K, C)``): spacing, shape, channels, one-slice or not, its
    0.5th percentile and 10,000 voxels of each channel drawn with nnU-Net's seed."""
    values = np.asarray(array, dtype=np.float32)
    channels = [values] if values.ndim == 3 else [values[..., c] for c in range(values.shape[3])]
    rng = np.random.RandomState(SAMPLE_SEED)
    return {"spacing": [float(s) for s in spacing], "shape": [int(n) for n in values.shape[:3]],
            "channels": len(channels), "planar": int(values.shape[2]) == 1,
            "low_intensity": float(np.percentile(channels[0], 0.5)),
            "samples": [rng.choice(c.ravel(), SAMPLES_PER_CASE, replace=True) for c in channels]}


def channel_modality(named: Mapping[str, Any] | None, channel: int, low: float, planar: bool) -> tuple[str, str]:
    """(modality, how it was found): the datalist's entry, else CT (air below -900), else MR or planar."""
    given = str((named or {}).get(str(channel), "")).strip().lower()
    if given:
        return MODALITY_NAMES.get(given, given.upper()), "datalist"
    if low < HU_AIR:
        return "CT", "intensities (air below -900)"
    return ("planar", "one-slice images (no air in HU)") if planar else ("MR", "intensities (no air in HU)")


def fingerprint_images(images: Iterable[dict[str, Any]], modality: Mapping[str, Any] | None = None
                       ) -> dict[str, Any]:
    """The pooled image part of the fingerprint from :func:`image_statistics` results."""
    results = list(images)
    if not results:
        raise InputError("no labelled cases to fingerprint")
    channels = {r["channels"] for r in results}
    if len(channels) != 1:
        raise InputError(f"cases have different channel counts {sorted(channels)}")
    planar = {r["planar"] for r in results}
    if len(planar) != 1:
        raise InputError("the data set mixes one-slice (2-D) images and volumes: plan and train them apart")
    is_planar = planar.pop()
    low = float(np.median([r["low_intensity"] for r in results]))
    intensity = []
    for index in range(channels.pop()):
        pooled = np.concatenate([r["samples"][index] for r in results]).astype(np.float64)
        kind, source = channel_modality(modality, index, low, is_planar)
        intensity.append({"modality": kind, "modality_source": source, **channel_statistics(pooled)})
    spacings = np.asarray([r["spacing"] for r in results], dtype=float)
    shapes = np.asarray([r["shape"] for r in results], dtype=float)
    return {"cases": len(results), "spatial_dims": 2 if is_planar else 3, "spacings": spacings.tolist(),
            "shapes": shapes.astype(int).tolist(), "median_spacing": np.median(spacings, axis=0).tolist(),
            "median_shape": np.median(shapes, axis=0).tolist(),
            "median_extent_mm": np.median(shapes * spacings, axis=0).tolist(), "intensity": intensity}


def class_counts(names: Sequence[str], classes_of: Callable[[dict[str, Any]], list[str]],
                 cases: Sequence[dict[str, Any]]) -> dict[str, int]:
    """How many cases name each class (a multi-label case counts for each of its classes)."""
    counts = Counter(name for case in cases for name in set(classes_of(case)))
    return {name: int(counts[name]) for name in names}


def box_fingerprint(boxes: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> dict[str, Any]:
    """Edge lengths (mm) of world boxes ``(N, 6)`` (RAS extents ``x0 y0 z0 x1 y1 z1``) per axis: percentiles,
    smallest and largest; boxes per case and per label."""
    per_case = [len(b) for b in boxes]
    sizes = [np.asarray(b, dtype=float).reshape(-1, 6) for b in boxes if len(b)]
    if not sizes:
        raise InputError("no case has a box: nothing to plan anchors and patches from")
    edges = np.concatenate([b[:, 3:] - b[:, :3] for b in sizes])
    counts = Counter(int(v) for label in labels for v in np.asarray(label).ravel())
    return {"count": len(edges), "per_case_median": float(np.median(per_case)), "per_case_max": max(per_case),
            **{f"p{q}_mm": np.round(np.percentile(edges, q, axis=0), 3).tolist() for q in BOX_PERCENTILES},
            "min_mm": np.round(edges.min(axis=0), 3).tolist(), "max_mm": np.round(edges.max(axis=0), 3).tolist(),
            "per_label": {str(k): int(v) for k, v in sorted(counts.items())}}
