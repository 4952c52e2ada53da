"""Voxel calibration and uncertainty of segmentations that come with probability maps (``mitk segment
--probabilities``, or an ensemble's or TTA's mean probabilities), for ``mitk evaluate segment``.

For each case whose prediction ``<stem>.nii.gz`` has a probability map ``<stem>_prob.*`` (or ``<case>_prob.*``)
beside it on the reference grid (channel ``c`` is label ``c``, channel last):

- a seeded random sample of at most :data:`SAMPLE_VOXELS` voxels of the image, and as many of the *foreground*
  (voxels that the reference or the prediction labels non-zero), each with its top-label confidence (largest
  channel), whether the arg-max channel is the reference label, and its entropy (nats);
- the case's ``mean_entropy``: the mean voxel entropy over the predicted foreground (the whole image when nothing
  is predicted), as the ensemble's record defines it.

Pooled over the cases (:func:`pool`): ECE, MCE, reliability bins and the AUC of voxel entropy vs voxel error on
both samples (:func:`mitk.evaluation.calibration.calibration_summary`), and Spearman's ρ between the cases' mean
entropy and 1 − their mean Dice over labels (does uncertainty rank the bad cases first).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mitk.evaluation import calibration
from mitk.io.atomic import split_suffix
from mitk.runner.ensemble import entropy as channel_entropy

PROBABILITY_SUFFIX = "_prob"
SAMPLE_VOXELS = 10_000
"""Voxels sampled per case and region: bounds the memory and the record size, whatever the image size."""
PREDICTION_SUFFIX = "_seg"


def probability_map_for(prediction: Path) -> Path | None:
    """The probability map beside a prediction: ``<stem>_prob.*``, else ``<case>_prob.*`` (``<case>_seg`` less
    ``_seg``); ``None`` when there is none."""
    from mitk.io.inputs import IMAGE_SUFFIXES

    stem, _ = split_suffix(prediction)
    stems = [stem + PROBABILITY_SUFFIX]
    if stem.endswith(PREDICTION_SUFFIX) and len(stem) > len(PREDICTION_SUFFIX):
        stems.append(stem[: -len(PREDICTION_SUFFIX)] + PROBABILITY_SUFFIX)
    for candidate_stem in stems:
        for suffix in IMAGE_SUFFIXES:
            candidate = prediction.with_name(candidate_stem + suffix)
            if candidate.is_file():
                return candidate
    return None


def read_probabilities(path: Path, shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """The map as ``(voxels, channels)`` float32, refused unless it lies on the reference grid."""
    from mitk.errors import GeometryError, InputError
    from mitk.io.reader import load_image

    image = load_image(path)
    array = np.asarray(image.array, dtype=np.float32)
    spatial = tuple(int(n) for n in shape)
    if array.ndim == len(spatial):
        array = array[..., None]
    if tuple(array.shape[: len(spatial)]) != spatial or array.ndim != len(spatial) + 1:
        raise GeometryError(f"probability map of shape {list(array.shape)} is not on the reference grid "
                            f"{list(spatial)} (channels last)", path)
    if not np.allclose(image.affine, affine, atol=1e-4, rtol=0):
        raise GeometryError("probability map is not on the reference grid (affines differ)", path)
    values = array.reshape(-1, array.shape[-1])
    if not np.all(np.isfinite(values)) or values.min() < -1e-6 or values.max() > 1 + 1e-6:
        raise InputError("not a probability map: values outside [0, 1]", path)
    return np.clip(values, 0.0, 1.0)


def case_calibration(path: Path, reference: np.ndarray, affine: np.ndarray, seed: int = 0,
                     limit: int | None = None) -> dict[str, Any]:
    """The samples (at most ``limit``, default :data:`SAMPLE_VOXELS`, per region) and mean entropy of one case
    (module docstring), JSON-ready."""
    from mitk.errors import InputError

    limit = SAMPLE_VOXELS if limit is None else limit
    probabilities = read_probabilities(path, reference.shape, affine)
    truth = np.asarray(reference).reshape(-1)
    if truth.size and int(truth.max()) >= probabilities.shape[1]:
        raise InputError(f"probability map has {probabilities.shape[1]} channels but the reference has label "
                         f"{int(truth.max())}", path)
    predicted = probabilities.argmax(axis=1)
    entropy = channel_entropy(probabilities, axis=1)
    foreground = predicted != 0
    region = "foreground" if foreground.any() else "image"
    mean_entropy = float(entropy[foreground].mean() if foreground.any() else entropy.mean())
    rng = np.random.default_rng(seed)
    document: dict[str, Any] = {"probability_map": str(path), "mean_entropy": mean_entropy, "region": region}
    for name, members in (("voxels", np.arange(truth.size)), ("foreground", np.flatnonzero(foreground | (truth != 0)))):
        pick = members if members.size <= limit else np.sort(rng.choice(members, size=limit, replace=False))
        document[name] = {"confidence": probabilities[pick, predicted[pick]].round(6).tolist(),
                          "correct": (predicted[pick] == truth[pick]).tolist(),
                          "entropy": entropy[pick].round(6).tolist(), "of": int(members.size)}
    return document


def case_dice(scores: dict[Any, dict[str, float]]) -> float:
    """A case's mean Dice over its labels with a defined Dice (NaN when none)."""
    values = [v["dice"] for v in scores.values() if np.isfinite(v.get("dice", np.nan))]
    return float(np.mean(values)) if values else float("nan")


def pool(cases: Sequence[tuple[dict[str, Any], float]], bins: int = calibration.DEFAULT_BINS) -> dict[str, Any]:
    """Pool the cases' samples (each with the case's mean Dice) into the summary of the module docstring."""
    summary: dict[str, Any] = {"cases": len(cases), "sample_per_case": SAMPLE_VOXELS}
    for name in ("voxels", "foreground"):
        confidence = np.concatenate([np.asarray(c[name]["confidence"], float) for c, _ in cases])
        correct = np.concatenate([np.asarray(c[name]["correct"], bool) for c, _ in cases])
        entropy = np.concatenate([np.asarray(c[name]["entropy"], float) for c, _ in cases])
        summary[name] = calibration.calibration_summary(confidence, correct, entropy, bins, "voxel entropy")
    entropies = [c["mean_entropy"] for c, dice in cases if np.isfinite(dice)]
    errors = [1.0 - dice for _, dice in cases if np.isfinite(dice)]
    rho = calibration.spearman(entropies, errors)
    summary["mean_entropy_vs_1_minus_dice"] = {"spearman": rho if np.isfinite(rho) else None,
                                               "cases": len(entropies)}
    return summary
