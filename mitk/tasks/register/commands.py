"""The register task's command bodies: what ``mitk register`` runs (:func:`prepare`) and ``mitk evaluate
register`` (:func:`evaluate`: Dice of warped label maps, landmark TRE, folding of displacement fields)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mitk.console import emit_json, plain_table
from mitk.errors import InputError, UsageError
from mitk.taskspec import VerbPlan


def prepare(values: dict[str, Any]) -> VerbPlan:
    """``mitk register``: every moving image goes onto the fixed image's grid; the fixed image and the masks are
    inputs that no output may replace."""
    fixed, moving = values["fixed"], values["moving"]
    masks = tuple(path for path in (values["fixed_mask"], values["moving_mask"]) if path is not None)
    if values["transform"] is not None and len(moving) > 1:
        raise UsageError("--transform names one file; give one moving image")
    if values["moving_mask"] is not None and len(moving) > 1:
        raise UsageError("--moving-mask belongs to one moving image; give one moving image")
    if values["preview"]:
        from mitk.preview import require_preview

        require_preview("--preview")
    if values["dicom_sr"]:
        from mitk.extras import require_module

        require_module("highdicom", "--dicom-sr")
    job = {name: values[name] for name in ("transform", "fixed_series", "fixed_mask", "moving_mask",
                                           "inverse_warped", "preview", "dicom_sr")}
    return VerbPlan(moving, {"fixed_path": fixed, **job}, also_inputs=(fixed, *masks))


def evaluate(warped_labels: Path | None = None, fixed_labels: Path | None = None,
             fixed_landmarks: Path | None = None, moving_landmarks: Path | None = None,
             transform: list[Path] | None = None, lps: bool = False, as_json: bool = False) -> int:
    """Score a registration: Dice per label, target registration error (mm), Jacobian determinant and folding."""
    import numpy as np

    from mitk.io.reader import load_image, require_volume
    from mitk.io.transforms import check_chain, read_transform
    from mitk.tasks.register.evaluation import (
        dice_per_label,
        jacobian_statistics,
        read_landmarks,
        target_registration_error,
    )

    if (warped_labels is None) != (fixed_labels is None):
        raise UsageError("Dice needs both --warped-labels and --fixed-labels")
    if (fixed_landmarks is None) != (moving_landmarks is None):
        raise UsageError("TRE needs both --fixed-landmarks and --moving-landmarks")
    if warped_labels is None and fixed_landmarks is None and not transform:
        raise UsageError("nothing to evaluate: give label maps, landmarks or a displacement field")
    chain = [read_transform(path) for path in transform or []]
    check_chain(chain, transform or [])
    document: dict[str, Any] = {}
    lines: list[str] = []
    if warped_labels is not None and fixed_labels is not None:
        warped = require_volume(load_image(warped_labels))
        fixed = require_volume(load_image(fixed_labels))
        if warped.spatial_shape != fixed.spatial_shape or not np.allclose(warped.affine, fixed.affine, atol=1e-3):
            raise InputError("not on the fixed label map's grid (warp it with mitk warp --reference)", warped_labels)
        scores = dice_per_label(np.asarray(warped.array), np.asarray(fixed.array))
        values = [v for v in scores.values() if v == v]
        document["dice"] = {"per_label": {str(k): v for k, v in scores.items()},
                            "mean": float(np.mean(values)) if values else None}
        rows = [{"label": str(k), "dice": f"{v:.4f}"} for k, v in scores.items()]
        lines.append(plain_table(rows, ["label", "dice"]))
    if fixed_landmarks is not None and moving_landmarks is not None:
        fixed_names, fixed_points = read_landmarks(fixed_landmarks, lps=lps)
        moving_names, moving_points = read_landmarks(moving_landmarks, lps=lps)
        if len(fixed_points) != len(moving_points):
            raise InputError(f"{len(moving_points)} landmarks, the fixed CSV has {len(fixed_points)}",
                             moving_landmarks)
        if set(fixed_names) == set(moving_names) and len(set(fixed_names)) == len(fixed_names):
            order = [moving_names.index(name) for name in fixed_names]
            moving_points = moving_points[order]
        mapped = fixed_points
        for step in chain:
            mapped = step.apply(mapped)
        errors = target_registration_error(mapped, moving_points)
        document["tre_mm"] = {"per_landmark": dict(zip(fixed_names, errors.tolist(), strict=True)),
                              "mean": float(errors.mean()), "median": float(np.median(errors)),
                              "max": float(errors.max())}
        lines.append(f"TRE (mm): mean {errors.mean():.3f}, median {np.median(errors):.3f}, max {errors.max():.3f} "
                     f"over {len(errors)} landmarks")
    fields = [(path, step) for path, step in zip(transform or [], chain, strict=True) if step.field is not None]
    for path, step in fields:
        assert step.field is not None and step.field_affine is not None
        statistics = jacobian_statistics(step.field, step.field_affine)
        document.setdefault("jacobian", {})[str(path)] = statistics
        lines.append(f"Jacobian determinant of {path}: min {statistics['min']:.4f}, mean {statistics['mean']:.4f}, "
                     f"folding {statistics['folding_voxels']} voxels ({statistics['folding_percent']:.3f} %)")
    if as_json:
        emit_json(document)
    else:
        for line in lines:
            print(line)
    return 0
