"""A data set's fingerprint, measured as nnU-Net's ``DatasetFingerprintExtractor`` does.

Each case is cropped to its non-zero region (any channel non-zero, holes filled: nnU-Net's
``crop_to_nonzero``); its spacing and cropped shape are kept; the intensities of its foreground voxels
(label > 0) give exact per-case statistics, and 10,000 of them drawn with replacement (seed 1234, as nnU-Net)
pool into the data set's per-channel statistics. Label volumes and how often each label occurs are counted
on the uncropped label map.

Axes are the RAS axes the segmentation plugins reorient to (``orientation: RAS``): a case stored in LPS or
with its slices along the first array axis reports its spacing and shape in x, y, z order all the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mitk.errors import InputError

FORMAT = 1
SAMPLES_PER_CASE = 10_000
"""Foreground voxels drawn from each case for the pooled statistics (nnU-Net's ``num_samples``)."""
SAMPLE_SEED = 1234
PERCENTILES = (0.5, 50.0, 99.5)
MODALITY_NAMES = {"ct": "CT", "mr": "MR", "mri": "MR", "t1": "MR", "t2": "MR", "flair": "MR", "t1w": "MR",
                  "t2w": "MR", "t1gd": "MR", "adc": "MR", "dwi": "MR", "pet": "PET", "us": "US"}
"""Datalist ``modality`` / ``channel_names`` values (lower case) → the modality a plan normalises for."""
HU_AIR = -900.0
"""An image whose 0.5th intensity percentile lies below this is taken for CT (air is about -1000 HU)."""


def ras_permutation(affine: npt.ArrayLike) -> list[int]:
    """For each RAS axis, the array axis that runs closest to it (as MONAI's ``Orientationd`` picks them)."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(np.asarray(affine, dtype=float))
    order = [0, 0, 0]
    for array_axis, (world_axis, _) in enumerate(ornt[:3]):
        order[int(world_axis)] = array_axis
    return order


def nonzero_box(channels: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of the non-zero region (any channel non-zero, holes filled), as nnU-Net crops."""
    from scipy.ndimage import binary_fill_holes

    mask = binary_fill_holes(np.any(channels != 0, axis=0))
    if not mask.any():
        return tuple(slice(0, 0) for _ in mask.shape)
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def channel_statistics(values: np.ndarray) -> dict[str, float]:
    """mean, std, median, min, max and the 0.5/99.5 percentiles of ``values`` (NaN when empty)."""
    if values.size == 0:
        return dict.fromkeys(("mean", "std", "median", "min", "max", "percentile_00_5", "percentile_99_5"),
                             math.nan)
    low, median, high = np.percentile(values, PERCENTILES)
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "median": float(median),
            "min": float(np.min(values)), "max": float(np.max(values)),
            "percentile_00_5": float(low), "percentile_99_5": float(high)}


def analyse_case(image_paths: str | Sequence[str], label_path: str) -> dict[str, Any]:
    """One case's spacing, shapes, exact foreground statistics per channel, label voxel counts and the
    foreground sample (``"samples"``: one array per channel) for the pooled statistics."""
    from mitk.io.reader import load_image, require_volume

    paths = [image_paths] if isinstance(image_paths, str) else list(image_paths)
    images = [require_volume(load_image(p), channels=True) for p in paths]
    label = require_volume(load_image(label_path))
    first = images[0]
    arrays: list[np.ndarray] = []
    for image in images:
        array = np.asarray(image.array, dtype=np.float64)
        arrays.extend([array] if array.ndim == 3 else list(np.moveaxis(array, -1, 0)))
    channels = np.stack(arrays)
    labels = np.rint(np.asarray(label.array)).astype(np.int64)
    if labels.shape != channels.shape[1:]:
        raise InputError(f"label shape {labels.shape} differs from the image's {channels.shape[1:]}", label_path)
    order = ras_permutation(first.affine)
    spacing = np.asarray(first.spacing, dtype=float)
    box = nonzero_box(channels)
    cropped, cropped_labels = channels[:, box[0], box[1], box[2]], labels[box]
    foreground = cropped_labels > 0
    rng = np.random.RandomState(SAMPLE_SEED)
    samples, statistics = [], []
    for channel in cropped:
        values = channel[foreground]
        samples.append(rng.choice(values, SAMPLES_PER_CASE, replace=True) if values.size else values)
        statistics.append(channel_statistics(values))
    values, counts = np.unique(labels, return_counts=True)
    voxel_mm3 = float(np.prod(spacing))
    shape_before, shape_after = np.asarray(labels.shape), np.asarray(cropped_labels.shape)
    return {
        "spacing": [float(spacing[a]) for a in order],
        "shape": [int(shape_before[a]) for a in order],
        "shape_after_crop": [int(shape_after[a]) for a in order],
        "relative_size_after_crop": float(np.prod(shape_after) / max(1, np.prod(shape_before))),
        "intensity": statistics,
        "label_voxels": {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)},
        "label_volume_ml": {str(int(v)): float(c) * voxel_mm3 / 1000.0
                            for v, c in zip(values, counts, strict=True) if v != 0},
        "low_intensity": float(np.percentile(channels[0], 0.5)),
        "samples": samples,
    }


def modality_of(datalist_modality: Mapping[str, Any] | None, channel: int, low_intensity: float) -> tuple[str, str]:
    """(modality, how it was found) of one channel: the datalist's ``modality`` (or ``channel_names``) entry,
    else CT when the image's 0.5th percentile lies below :data:`HU_AIR`, else MR."""
    named = str((datalist_modality or {}).get(str(channel), "")).strip().lower()
    if named in MODALITY_NAMES:
        return MODALITY_NAMES[named], "datalist"
    if named:
        return named.upper(), "datalist"
    return ("CT", "intensities (air below -900)") if low_intensity < HU_AIR else ("MR", "intensities (no air in HU)")


def fingerprint_cases(cases: Sequence[Mapping[str, Any]], modality: Mapping[str, Any] | None = None,
                      labels: Mapping[int, str] | None = None) -> dict[str, Any]:
    """The data set's fingerprint from its labelled cases (``{"image": path(s), "label": path}``)."""
    labelled = [case for case in cases if case.get("image") and case.get("label")]
    if not labelled:
        raise InputError("no labelled cases to fingerprint")
    results = [analyse_case(case["image"], str(case["label"])) for case in labelled]
    if not any(int(c) for r in results for v, c in r["label_voxels"].items() if v != "0"):
        raise InputError("no case has a foreground label (label > 0): nothing to fingerprint the foreground of")
    n_channels = {len(result["intensity"]) for result in results}
    if len(n_channels) != 1:
        raise InputError(f"cases have different channel counts {sorted(n_channels)}")
    channels = []
    for index in range(n_channels.pop()):
        pooled = np.concatenate([np.asarray(r["samples"][index], dtype=np.float64) for r in results])
        kind, source = modality_of(modality, index, float(np.median([r["low_intensity"] for r in results])))
        channels.append({"modality": kind, "modality_source": source, **channel_statistics(pooled)})
    label_values = sorted({int(v) for r in results for v in r["label_voxels"]} | set(labels or {}))
    total_foreground = sum(c for r in results for v, c in r["label_voxels"].items() if v != "0")
    label_summary = {}
    for value in label_values:
        if value == 0:
            continue
        volumes = [r["label_volume_ml"].get(str(value), 0.0) for r in results]
        voxels = sum(r["label_voxels"].get(str(value), 0) for r in results)
        label_summary[str(value)] = {
            "name": (labels or {}).get(value, str(value)),
            "cases_present": int(sum(v > 0 for v in volumes)),
            "frequency": float(np.mean([v > 0 for v in volumes])),
            "median_volume_ml": float(np.median(volumes)),
            "mean_volume_ml": float(np.mean(volumes)),
            "share_of_foreground": float(voxels / total_foreground) if total_foreground else 0.0,
        }
    spacings = np.asarray([r["spacing"] for r in results], dtype=float)
    shapes = np.asarray([r["shape_after_crop"] for r in results], dtype=float)
    return {
        "format": FORMAT,
        "axes": "RAS",
        "cases": len(results),
        "spacings": spacings.tolist(),
        "shapes_after_crop": shapes.astype(int).tolist(),
        "median_spacing": np.median(spacings, axis=0).tolist(),
        "median_shape_after_crop": np.median(shapes, axis=0).tolist(),
        "median_relative_size_after_crop": float(np.median([r["relative_size_after_crop"] for r in results])),
        "intensity": channels,
        "labels": label_summary,
    }


def fingerprint_datalist(source: str | Path) -> dict[str, Any]:
    """Fingerprint every labelled case (training and validation lists) of a segmentation datalist or folder."""
    import json

    from mitk.training.data import read_datalist

    datalist = read_datalist(source)
    document_path = Path(datalist.source)
    modality: Mapping[str, Any] | None = None
    if document_path.is_file():
        try:
            document = json.loads(document_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            document = {}
        raw = document.get("modality") or document.get("channel_names") if isinstance(document, dict) else None
        modality = raw if isinstance(raw, Mapping) else None
    return fingerprint_cases(datalist.training + datalist.validation, modality, datalist.labels)
