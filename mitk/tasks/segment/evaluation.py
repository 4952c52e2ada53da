"""Segmentation metrics per label (MONAI's definitions, in millimetres), file pairing, and summaries over cases.

Definitions (those of :mod:`monai.metrics`, distances on the voxel grid scaled by the spacing), computed on
NumPy/SciPy by :mod:`mitk.evaluation.surface` so that ``mitk evaluate segment`` imports neither torch nor MONAI
(tests/test_lean_surface.py compares the values with MONAI's functions):

- ``dice`` = 2|P∩R| / (|P|+|R|), ``iou`` = |P∩R| / |P∪R|.
- The surface of a mask is its voxels that a 6-connected erosion removes. For each surface voxel of one
  mask, the distance (mm) to the nearest surface voxel of the other is taken, in both directions.
- ``hd95_mm``: the larger of the two directed 95th percentiles. ``asd_mm``: the mean of both directions
  pooled (symmetric). ``surface_dice_voxel``: the fraction of both surfaces' *voxels* within
  ``tolerance`` mm of the other surface (MONAI's ``compute_surface_dice``; every boundary voxel counts
  once, unlike the area-weighted surface elements of DeepMind's ``compute_surface_dice_at_tolerance``).

Empty masks (counted by :func:`summarise`):

- Both empty: every metric is NaN and the case is left out of every mean (nnU-Net's convention for
  Dice; a both-empty 1.0 would flatter a model on labels that are rarely present).
- One empty: Dice, IoU and surface Dice 0 (they enter the means). HD95 and ASD are undefined: NaN,
  left out of the means and counted as ``missing``, unless a ``missing_distance`` penalty is given
  (``"worst"``: the diagonal of the case's field of view in mm; a number: that many mm), which then
  enters the means and is counted as ``penalised``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mitk.errors import GeometryError, InputError, UsageError
from mitk.evaluation.surface import overlap_scores, surface_scores
from mitk.image import Image, voxel_spacing
from mitk.io.atomic import split_suffix

OVERLAP_METRICS = ("dice", "iou", "surface_dice_voxel")
DISTANCE_METRICS = ("hd95_mm", "asd_mm")
VOLUME_METRICS = ("reference_volume_ml", "predicted_volume_ml")
AREA_METRICS = ("reference_area_mm2", "predicted_area_mm2")
"""For a one-slice grid (a PNG mask, a radiograph's label map) instead of the volumes, which are then NaN."""
SIZE_METRICS = (*VOLUME_METRICS, *AREA_METRICS)
METRICS = ("dice", "iou", "hd95_mm", "asd_mm", "surface_dice_voxel", *VOLUME_METRICS, *AREA_METRICS)
VOXEL_COUNTS = ("reference_voxels", "predicted_voxels")
"""Also in each label's scores: what :func:`summarise` counts empty masks from."""
AFFINE_TOLERANCE = 1e-4
PREDICTION_SUFFIX = "_seg"
REFERENCE_SUFFIX = "_label"
IGNORED_PREDICTION_SUFFIXES = ("_prob", "_preview", "_entropy")
"""Companion outputs of ``mitk segment`` (probability and entropy maps, previews) that are not label maps."""

MissingDistance = float | Literal["worst"] | None
"""What HD95 and ASD are when exactly one mask is empty: ``None`` NaN (left out of means), ``"worst"``
the field-of-view diagonal in mm, or a distance in mm."""


# ---------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------


def field_of_view_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The diagonal of the grid's field of view, √Σ(nᵢ·sᵢ)² in mm: no two voxels are farther apart."""
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True))))


def empty_masks(scores: dict[str, float]) -> str:
    """Which mask of one label is empty: ``"none"``, ``"prediction"``, ``"reference"`` or ``"both"``."""
    pred_empty, ref_empty = scores["predicted_voxels"] == 0, scores["reference_voxels"] == 0
    if pred_empty and ref_empty:
        return "both"
    return "prediction" if pred_empty else "reference" if ref_empty else "none"


def evaluate_pair(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float],
                  labels: Iterable[int] | None = None, tolerance: float = 2.0,
                  missing_distance: MissingDistance = None) -> dict[int, dict[str, float]]:
    """Metrics for each label of two label maps on one grid: ``{label: {metric: value}}``.

    ``labels`` defaults to every non-zero value found in either map. Values are floats: the
    :data:`METRICS` and the :data:`VOXEL_COUNTS`; empty masks give NaN or the ``missing_distance``
    penalty as the module docstring says.
    """
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if tolerance < 0 or not math.isfinite(tolerance):
        raise ValueError(f"tolerance must be a finite number of mm >= 0, not {tolerance}")
    spacing = tuple(float(s) for s in spacing)
    if missing_distance is None:
        penalty = math.nan
    elif missing_distance == "worst":
        penalty = field_of_view_diagonal_mm(ref.shape, spacing)
    elif isinstance(missing_distance, float | int) and math.isfinite(missing_distance) and missing_distance >= 0:
        penalty = float(missing_distance)
    else:
        raise ValueError(f"missing_distance must be None, 'worst' or a number of mm >= 0, not {missing_distance!r}")
    planar = ref.ndim == 2 or (ref.ndim == 3 and ref.shape[2] == 1)
    voxel_ml = math.nan if planar else float(np.prod(spacing)) / 1000.0
    pixel_mm2 = float(spacing[0] * spacing[1]) if planar else math.nan
    if labels is None:
        labels = sorted((set(np.unique(pred).tolist()) | set(np.unique(ref).tolist())) - {0})
    results: dict[int, dict[str, float]] = {}
    for label in labels:
        pred_mask, ref_mask = pred == label, ref == label
        pred_count, ref_count = int(np.count_nonzero(pred_mask)), int(np.count_nonzero(ref_mask))
        if pred_count == 0 and ref_count == 0:
            scores = dict.fromkeys((*OVERLAP_METRICS, *DISTANCE_METRICS), math.nan)
        elif pred_count == 0 or ref_count == 0:
            scores = {**dict.fromkeys(OVERLAP_METRICS, 0.0), **dict.fromkeys(DISTANCE_METRICS, penalty)}
        else:
            scores = _mask_scores(pred_mask, ref_mask, spacing, tolerance)
        scores["reference_volume_ml"] = ref_count * voxel_ml
        scores["predicted_volume_ml"] = pred_count * voxel_ml
        scores["reference_area_mm2"] = ref_count * pixel_mm2
        scores["predicted_area_mm2"] = pred_count * pixel_mm2
        scores["reference_voxels"] = float(ref_count)
        scores["predicted_voxels"] = float(pred_count)
        results[int(label)] = scores
    return results


def _mask_scores(pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: tuple[float, ...],
                 tolerance: float) -> dict[str, float]:
    """Overlap and surface metrics of two non-empty boolean masks (MONAI's definitions, on NumPy/SciPy)."""
    return {**overlap_scores(pred_mask, ref_mask), **surface_scores(pred_mask, ref_mask, spacing, tolerance)}


Summary = dict[int, dict[str, dict[str, float | int | None]]]


def summarise(cases: Iterable[dict[int, dict[str, float]]]) -> Summary:
    """Per label: how many cases and empty masks, and mean, std and median of each metric over cases.

    ``summary[label]["cases"]`` holds ``scored`` (cases in which the label was scored),
    ``empty_prediction`` (reference has the label, prediction not), ``empty_reference`` (the other way
    round) and ``both_empty``. ``summary[label][metric]`` holds ``mean``, ``std``, ``median`` and ``n``,
    the number of cases in them: both-empty cases never enter; for HD95 and ASD, a one-empty case
    enters only with a penalty (``penalised``), else it is left out (``missing``).
    """
    per_label: dict[int, list[dict[str, float]]] = {}
    for case in cases:
        for label, scores in case.items():
            per_label.setdefault(label, []).append(scores)
    summary: Summary = {}
    for label in sorted(per_label):
        scored = per_label[label]
        empty = [empty_masks(scores) for scores in scored]
        summary[label] = {"cases": {"scored": len(scored), "empty_prediction": empty.count("prediction"),
                                    "empty_reference": empty.count("reference"), "both_empty": empty.count("both")}}
        for metric in METRICS:
            values = [s[metric] for s, e in zip(scored, empty, strict=True) if e != "both" or metric in SIZE_METRICS]
            finite = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
            stats: dict[str, float | int | None] = {
                "mean": json_number(finite.mean()) if finite.size else None,
                "std": json_number(finite.std()) if finite.size else None,
                "median": json_number(np.median(finite)) if finite.size else None,
                "n": int(finite.size),
            }
            if metric in DISTANCE_METRICS:
                one_empty = [s[metric] for s, e in zip(scored, empty, strict=True) if e in ("prediction", "reference")]
                stats["missing"] = sum(1 for v in one_empty if not math.isfinite(v))
                stats["penalised"] = sum(1 for v in one_empty if math.isfinite(v))
            summary[label][metric] = stats
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


def case_of(path: Path, suffix: str) -> str:
    """The case a prediction or reference file belongs to: its stem without the image suffix and without
    ``suffix`` (``_seg`` or ``_label``) at the end (unlike :func:`mitk.training.data.case_name`, which strips
    an nnU-Net channel suffix from a training image)."""
    stem = _stem(path)
    return stem[: -len(suffix)] if suffix and stem.endswith(suffix) and len(stem) > len(suffix) else stem


def _stem(path: Path) -> str:
    return split_suffix(path)[0] if path.is_file() else path.name


def _nifti_files(folder: Path) -> list[Path]:
    """The label-map files of a folder: NIfTI, NRRD, MetaImage, PNG (:data:`mitk.io.inputs.IMAGE_SUFFIXES`)."""
    from mitk.io.inputs import IMAGE_SUFFIXES

    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(IMAGE_SUFFIXES))


def pair_files(pred: Path, ref: Path) -> Pairing:
    """Pair prediction and reference label maps.

    Two images (files, or DICOM folders) make one pair. Two folders of image files are matched per
    prediction, in this order: a reference with the same file name; else, with the prediction's name
    less a trailing ``_seg`` as the case, ``<case>_label.nii[.gz]``, then ``<case>.nii[.gz]``. Each
    reference is used once. Predictions ending ``_prob`` (probability maps) or ``_preview`` (overlay pictures)
    are ignored.
    """
    for path, option in ((pred, "--pred"), (ref, "--ref")):
        if not path.exists():
            raise InputError(f"{option}: no such file or directory", path)
    pred_files = _nifti_files(pred) if pred.is_dir() else []
    ref_files = _nifti_files(ref) if ref.is_dir() else []
    if not pred_files and not ref_files:
        return Pairing(pairs=[Pair(case_of(pred, PREDICTION_SUFFIX), pred, ref)])
    if not pred_files or not ref_files:
        raise UsageError(f"--pred {pred} and --ref {ref} must both be images or both be folders of image "
                         "files (NIfTI, NRRD, MetaImage, PNG)")
    by_name = {p.name: p for p in ref_files}
    by_case: dict[str, list[Path]] = {}
    for path in ref_files:
        by_case.setdefault(case_of(path, REFERENCE_SUFFIX), []).append(path)
    used: set[Path] = set()
    pairing = Pairing()
    for path in pred_files:
        if _stem(path).endswith(IGNORED_PREDICTION_SUFFIXES):
            continue
        case = case_of(path, PREDICTION_SUFFIX)
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
                   resample_pred: bool = False, missing_distance: MissingDistance = None,
                   probabilities: Path | None = None, seed: int = 0) -> dict[str, Any]:
    """Read one pair, check (or resample) the grid, and compute :func:`evaluate_pair` on it; with
    ``probabilities`` (a map on the reference grid) also the voxel samples of
    :func:`mitk.tasks.segment.calibration.case_calibration` under ``calibration`` (``calibration_skipped``: why a
    map that is off the grid or not a probability map was left out). A one-slice pair also says where its pixel
    spacing came from (``unknown (1 mm assumed)`` for a PNG)."""
    from mitk.io.reader import spacing_source

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
    spacing = voxel_spacing(ref.affine)
    scores = evaluate_pair(pred_array, ref.array, spacing, labels, tolerance, missing_distance)
    planar = len(ref.spatial_shape) == 2 or ref.spatial_shape[2] == 1
    details = {"scores": scores, "resampled": resampled, "spacing": list(spacing),
               "spacing_source": spacing_source(ref) if planar else None,
               "field_of_view_diagonal_mm": field_of_view_diagonal_mm(ref.spatial_shape, spacing)}
    if probabilities is not None and not resampled:
        from mitk.tasks.segment.calibration import case_calibration

        try:
            details["calibration"] = case_calibration(probabilities, ref.array, ref.affine, seed)
        except (GeometryError, InputError) as error:  # the label map is still scored; the map is left out
            details["calibration_skipped"] = str(error)
    return details
