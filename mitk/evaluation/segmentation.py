"""Segmentation metrics per label (MONAI, in millimetres), file pairing, and summaries over cases.

Definitions (all from :mod:`monai.metrics`, distances on the voxel grid scaled by the spacing):

- ``dice`` = 2|P∩R| / (|P|+|R|), ``iou`` = |P∩R| / |P∪R|.
- The surface of a mask is its voxels that a 6-connected erosion removes. For each surface voxel of one
  mask, the distance (mm) to the nearest surface voxel of the other is taken, in both directions.
- ``hd95_mm``: the larger of the two directed 95th percentiles. ``asd_mm``: the mean of both directions
  pooled (symmetric). ``surface_dice``: the fraction of both surfaces within ``tolerance`` mm of the other.
- Both masks empty: Dice, IoU and surface Dice 1, distances 0. One mask empty: Dice, IoU and surface
  Dice 0, distances infinite (``null`` in JSON).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mitk.errors import GeometryError, InputError, UsageError
from mitk.io.atomic import split_suffix
from mitk.types import Image, voxel_spacing

METRICS = ("dice", "iou", "hd95_mm", "asd_mm", "surface_dice", "reference_volume_ml", "predicted_volume_ml")
AFFINE_TOLERANCE = 1e-4
PREDICTION_SUFFIX = "_seg"
REFERENCE_SUFFIX = "_label"
IGNORED_PREDICTION_SUFFIXES = ("_prob",)
"""Companion outputs of ``mitk segment`` (probability maps) that are not label maps."""


# ---------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------


def evaluate_pair(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float],
                  labels: Iterable[int] | None = None, tolerance: float = 2.0) -> dict[int, dict[str, float]]:
    """Metrics for each label of two label maps on one grid: ``{label: {metric: value}}``.

    ``labels`` defaults to every non-zero value found in either map. Values are floats; distances
    may be ``inf`` when exactly one mask is empty (see the module docstring).
    """
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if tolerance < 0 or not math.isfinite(tolerance):
        raise ValueError(f"tolerance must be a finite number of mm >= 0, not {tolerance}")
    spacing = tuple(float(s) for s in spacing)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    if labels is None:
        labels = sorted((set(np.unique(pred).tolist()) | set(np.unique(ref).tolist())) - {0})
    results: dict[int, dict[str, float]] = {}
    for label in labels:
        pred_mask, ref_mask = pred == label, ref == label
        pred_count, ref_count = int(np.count_nonzero(pred_mask)), int(np.count_nonzero(ref_mask))
        if pred_count == 0 and ref_count == 0:
            scores = {"dice": 1.0, "iou": 1.0, "hd95_mm": 0.0, "asd_mm": 0.0, "surface_dice": 1.0}
        elif pred_count == 0 or ref_count == 0:
            scores = {"dice": 0.0, "iou": 0.0, "hd95_mm": math.inf, "asd_mm": math.inf, "surface_dice": 0.0}
        else:
            scores = _monai_scores(pred_mask, ref_mask, spacing, tolerance)
        scores["reference_volume_ml"] = ref_count * voxel_ml
        scores["predicted_volume_ml"] = pred_count * voxel_ml
        results[int(label)] = scores
    return results


def _monai_scores(pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: tuple[float, ...],
                  tolerance: float) -> dict[str, float]:
    """MONAI's metrics for two non-empty boolean masks, as a (batch 1, channel 1) one-hot pair."""
    import torch
    from monai.metrics import (
        compute_average_surface_distance,
        compute_dice,
        compute_hausdorff_distance,
        compute_iou,
        compute_surface_dice,
    )

    y_pred = torch.from_numpy(np.ascontiguousarray(pred_mask)[None, None]).float()
    y = torch.from_numpy(np.ascontiguousarray(ref_mask)[None, None]).float()
    space = list(spacing)
    with warnings.catch_warnings():  # MONAI warns about its own deprecated internals
        warnings.simplefilter("ignore", FutureWarning)
        return {
            "dice": float(compute_dice(y_pred, y, include_background=True)[0, 0]),
            "iou": float(compute_iou(y_pred, y, include_background=True)[0, 0]),
            "hd95_mm": float(compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95,
                                                        spacing=space)[0, 0]),
            "asd_mm": float(compute_average_surface_distance(y_pred, y, include_background=True, symmetric=True,
                                                             spacing=space)[0, 0]),
            "surface_dice": float(compute_surface_dice(y_pred, y, class_thresholds=[tolerance],
                                                       include_background=True, spacing=space)[0, 0]),
        }


def summarise(cases: Iterable[dict[int, dict[str, float]]]) -> dict[int, dict[str, dict[str, float | int | None]]]:
    """Mean, standard deviation and median of each metric per label over cases.

    Only finite values enter: a distance that is infinite (one mask empty) is left out, and ``n`` says
    how many values each statistic rests on.
    """
    values: dict[int, dict[str, list[float]]] = {}
    for case in cases:
        for label, scores in case.items():
            for metric in METRICS:
                values.setdefault(label, {}).setdefault(metric, []).append(scores[metric])
    summary: dict[int, dict[str, dict[str, float | int | None]]] = {}
    for label in sorted(values):
        summary[label] = {}
        for metric, series in values[label].items():
            finite = np.asarray([v for v in series if math.isfinite(v)], dtype=np.float64)
            summary[label][metric] = {
                "mean": json_number(finite.mean()) if finite.size else None,
                "std": json_number(finite.std()) if finite.size else None,
                "median": json_number(np.median(finite)) if finite.size else None,
                "n": int(finite.size),
            }
    return summary


def json_number(value: Any, digits: int = 6) -> float | None:
    """A metric fit for JSON and CSV: rounded, with NaN and infinity as ``None``."""
    if value is None or not math.isfinite(float(value)):
        return None
    return round(float(value), digits)


# ---------------------------------------------------------------------------------------------------
# Pairing predictions with references
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    case: str
    prediction: Path
    reference: Path


@dataclass
class Pairing:
    pairs: list[Pair] = field(default_factory=list)
    unpaired_predictions: list[Path] = field(default_factory=list)
    unpaired_references: list[Path] = field(default_factory=list)


def case_name(path: Path, suffix: str) -> str:
    """The file stem without its image suffix and without ``suffix`` (``_seg`` or ``_label``) at the end."""
    stem = _stem(path)
    return stem[: -len(suffix)] if suffix and stem.endswith(suffix) and len(stem) > len(suffix) else stem


def _stem(path: Path) -> str:
    return split_suffix(path)[0] if path.is_file() else path.name


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith((".nii", ".nii.gz")))


def pair_files(pred: Path, ref: Path) -> Pairing:
    """Pair prediction and reference label maps.

    Two images (files, or DICOM folders) make one pair. Two folders of NIfTI files are matched per
    prediction, in this order: a reference with the same file name; else, with the prediction's name
    less a trailing ``_seg`` as the case, ``<case>_label.nii[.gz]``, then ``<case>.nii[.gz]``. Each
    reference is used once. Predictions ending ``_prob`` (probability maps) are ignored.
    """
    for path, option in ((pred, "--pred"), (ref, "--ref")):
        if not path.exists():
            raise InputError(f"{option}: no such file or directory", path)
    pred_files = _nifti_files(pred) if pred.is_dir() else []
    ref_files = _nifti_files(ref) if ref.is_dir() else []
    if not pred_files and not ref_files:
        return Pairing(pairs=[Pair(case_name(pred, PREDICTION_SUFFIX), pred, ref)])
    if not pred_files or not ref_files:
        raise UsageError(f"--pred {pred} and --ref {ref} must both be images or both be folders of NIfTI files")
    by_name = {p.name: p for p in ref_files}
    by_case: dict[str, list[Path]] = {}
    for path in ref_files:
        by_case.setdefault(case_name(path, REFERENCE_SUFFIX), []).append(path)
    used: set[Path] = set()
    pairing = Pairing()
    for path in pred_files:
        if _stem(path).endswith(IGNORED_PREDICTION_SUFFIXES):
            continue
        case = case_name(path, PREDICTION_SUFFIX)
        candidates = [by_name[path.name]] if path.name in by_name else []
        candidates += sorted(by_case.get(case, []), key=lambda p: not _stem(p).endswith(REFERENCE_SUFFIX))
        match = next((c for c in candidates if c not in used), None)
        if match is None:
            pairing.unpaired_predictions.append(path)
            continue
        used.add(match)
        pairing.pairs.append(Pair(case, path, match))
    pairing.unpaired_references = [p for p in ref_files if p not in used]
    return pairing


# ---------------------------------------------------------------------------------------------------
# Reading and evaluating one pair of files
# ---------------------------------------------------------------------------------------------------


def read_label_map(path: Path) -> Image:
    """Read a label map (NIfTI or DICOM) as an integer 3-D array; non-integer values are refused."""
    from mitk.io.reader import load_image, require_volume

    image = require_volume(load_image(path))
    array = np.asarray(image.array)
    if array.dtype.kind == "f":
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            raise InputError("not a label map: voxel values are not whole numbers", path)
        array = rounded
    if array.size and array.min() < 0:
        raise InputError("not a label map: negative voxel values", path)
    image.array = array.astype(np.int64, copy=False)
    return image


def same_grid(a: Image, b: Image) -> bool:
    return a.spatial_shape == b.spatial_shape and np.allclose(a.affine, b.affine, atol=AFFINE_TOLERANCE, rtol=0)


def resample_to_reference(pred: Image, ref: Image) -> np.ndarray:
    """The prediction's labels on the reference grid (nearest neighbour; background outside its field of view)."""
    import torch

    from mitk.runner.geometry import to_input_grid

    # One voxel of background around the prediction, so that border padding reads background.
    padded = np.pad(pred.array, 1).astype(np.float32)
    shift = np.eye(4)
    shift[:3, 3] = -1.0
    values = torch.from_numpy(padded[None])
    out = to_input_grid(values, pred.affine @ shift, ref.affine, ref.spatial_shape, mode="nearest")
    return np.rint(out[0].numpy()).astype(np.int64)


def evaluate_files(pair: Pair, labels: Sequence[int] | None = None, tolerance: float = 2.0,
                   resample_pred: bool = False) -> dict[str, Any]:
    """Read one pair, check (or resample) the grid, and compute :func:`evaluate_pair` on it."""
    ref = read_label_map(pair.reference)
    pred = read_label_map(pair.prediction)
    resampled = False
    if not same_grid(pred, ref):
        if not resample_pred:
            difference = float(np.abs(pred.affine - ref.affine).max())
            raise GeometryError(
                f"prediction {pair.prediction} (shape {list(pred.spatial_shape)}) and reference {pair.reference} "
                f"(shape {list(ref.spatial_shape)}) are not on one grid (largest affine difference "
                f"{difference:.4g}); use --resample-pred to resample the prediction")
        pred_array = resample_to_reference(pred, ref)
        resampled = True
    else:
        pred_array = pred.array
    scores = evaluate_pair(pred_array, ref.array, voxel_spacing(ref.affine), labels, tolerance)
    return {"scores": scores, "resampled": resampled, "spacing": list(voxel_spacing(ref.affine))}
