"""Detection metrics: COCO-style mAP / mAR over IoU 0.1–0.5 (MONAI's ``COCOMetric``) and FROC sensitivities.

Boxes are compared as axis-aligned corner boxes ``(x0, y0, z0, x1, y1, z1)`` (MONAI's ``xyzxyz`` mode) in world
millimetres when both sides carry them in the same convention (RAS or LPS; LPS is turned to RAS), otherwise in
voxel extents. A class without reference boxes scores -1 in MONAI's ``COCOMetric``; such classes are left out of
every mean here, never averaged in.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mitk.errors import InputError

IOU_RANGE = (0.1, 0.5, 0.05)
"""COCO-style thresholds: IoU 0.10, 0.15, …, 0.50."""
FROC_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""False positives per scan at which FROC sensitivities are read."""
FROC_IOU = 0.1
"""A prediction is a hit in FROC when it overlaps an unmatched reference box by at least this IoU."""
MAX_DETECTIONS = 100


@dataclass
class CaseBoxes:
    """One scan's boxes: ``boxes`` ``(N, 6)`` corner boxes, ``labels`` ``(N,)``, ``scores`` ``(N,)`` (1 for refs)."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    space: str
    """``"RAS"`` (world mm) or ``"voxel"``."""
    names: dict[int, str] = field(default_factory=dict)


def _extent(voxel_box: Sequence[float]) -> list[float]:
    """A voxel box ``(i0, j0, k0, i1, j1, k1)`` (end exclusive) as its extent corners."""
    return [float(v) - 0.5 for v in voxel_box]


def _to_ras(box: Sequence[float], system: str) -> list[float]:
    x0, y0, z0, x1, y1, z1 = (float(v) for v in box)
    return [-x1, -y1, z0, -x0, -y0, z1] if system.upper() == "LPS" else [x0, y0, z0, x1, y1, z1]


def _parse_records(records: list[dict[str, Any]], default_system: str, path: Path) -> CaseBoxes:
    world = all("box_world_mm" in r for r in records)
    boxes, labels, scores, names = [], [], [], {}
    for record in records:
        try:
            if world:
                boxes.append(_to_ras(record["box_world_mm"], str(record.get("coordinate_system", default_system))))
            else:
                boxes.append(_extent(record["box_voxel"]))
            label = int(record.get("label", 1))
            labels.append(label)
            scores.append(float(record.get("score", 1.0)))
            if "name" in record:
                names[label] = str(record["name"])
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"not a box record ({error}): needs box_world_mm or box_voxel, a label, a score",
                             path) from None
    array = np.asarray(boxes, dtype=float).reshape(-1, 6)
    if np.any(array[:, 3:] < array[:, :3]):
        raise InputError("a box has its max corner below its min corner", path)
    return CaseBoxes(array, np.asarray(labels, dtype=int), np.asarray(scores, dtype=float),
                     "RAS" if world or not records else "voxel", names)


def read_boxes(path: Path) -> CaseBoxes:
    """Boxes from a mitk ``_boxes.json`` / ``_boxes.csv`` (or any JSON with a ``boxes`` list of such records)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read boxes ({error})", path) from None
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        try:
            records = [{"label": int(row["label"]), "score": float(row.get("score") or 1.0),
                        "coordinate_system": row.get("coordinate_system") or "RAS",
                        **({"box_world_mm": [float(row[k]) for k in ("x0_mm", "y0_mm", "z0_mm", "x1_mm", "y1_mm",
                                                                      "z1_mm")]} if row.get("x0_mm") else
                           {"box_voxel": [float(row[k]) for k in ("i0", "j0", "k0", "i1", "j1", "k1")]})}
                       for row in rows]
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"not a boxes CSV (column {error})", path) from None
        return _parse_records(records, "RAS", path)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"not JSON ({error.msg}, line {error.lineno})", path) from None
    found = document.get("boxes") if isinstance(document, dict) else document
    if not isinstance(found, list):
        raise InputError("no 'boxes' list", path)
    system = str(document.get("coordinate_system", "RAS")) if isinstance(document, dict) else "RAS"
    return _parse_records(found, system, path)


def box_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """IoU of every pair of corner boxes ``(N, 6)`` × ``(M, 6)`` (MONAI's ``box_iou``)."""
    from monai.data.box_utils import box_iou as monai_box_iou

    if len(first) == 0 or len(second) == 0:
        return np.zeros((len(first), len(second)))
    return np.asarray(monai_box_iou(np.asarray(first, float), np.asarray(second, float)), dtype=float)


def coco_metrics(predictions: Sequence[CaseBoxes], references: Sequence[CaseBoxes], classes: Sequence[int]
                 ) -> dict[str, Any]:
    """mAP and mAR over IoU 0.1–0.5 (step 0.05) and AP/AR at IoU 0.1, per class and averaged over the classes
    that have reference boxes."""
    from monai.apps.detection.metrics.coco import COCOMetric
    from monai.apps.detection.metrics.matching import matching_batch

    names = [str(c) for c in classes]
    index = {c: n for n, c in enumerate(classes)}
    metric = COCOMetric(classes=names, iou_list=(IOU_RANGE[0],), iou_range=IOU_RANGE,
                        max_detection=(MAX_DETECTIONS,), per_class=True, verbose=False)
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # MONAI logs a warning per class without references on the root logger
    try:
        matches = matching_batch(
            box_iou, list(metric.iou_thresholds),
            [p.boxes for p in predictions], [np.array([index[int(v)] for v in p.labels], int) for p in predictions],
            [p.scores for p in predictions], [r.boxes for r in references],
            [np.array([index[int(v)] for v in r.labels], int) for r in references], max_detections=MAX_DETECTIONS)
        values = metric(matches)[0]
    finally:
        logger.setLevel(level)
    suffix_m = f"IoU_{IOU_RANGE[0]:.2f}_{IOU_RANGE[1]:.2f}_{IOU_RANGE[2]:.2f}_MaxDet_{MAX_DETECTIONS}"
    suffix_1 = f"IoU_{IOU_RANGE[0]:.2f}_MaxDet_{MAX_DETECTIONS}"
    per_class: dict[str, dict[str, float | None]] = {}
    for name in names:
        row = {"mAP": values[f"{name}_mAP_{suffix_m}"], "mAR": values[f"{name}_mAR_{suffix_m}"],
               "AP_0.1": values[f"{name}_AP_{suffix_1}"], "AR_0.1": values[f"{name}_AR_{suffix_1}"]}
        per_class[name] = {k: (None if v < 0 else float(v)) for k, v in row.items()}  # -1: no references
    summary: dict[str, Any] = {}
    for key in ("mAP", "mAR", "AP_0.1", "AR_0.1"):
        scored = [value for row in per_class.values() if (value := row[key]) is not None]
        summary[key] = float(np.mean(scored)) if scored else None
    summary["per_class"] = per_class
    return summary


def match_case(prediction: CaseBoxes, reference: CaseBoxes, iou_threshold: float = FROC_IOU
               ) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching, highest score first, same label only: ``(hit, score)`` per prediction; a hit claims the
    unmatched reference box it overlaps most (IoU ≥ ``iou_threshold``)."""
    order = np.argsort(-prediction.scores, kind="stable")
    iou = box_iou(prediction.boxes, reference.boxes)
    taken = np.zeros(len(reference.boxes), dtype=bool)
    hits = np.zeros(len(order), dtype=bool)
    for rank, n in enumerate(order):
        if len(reference.boxes) == 0:
            break
        candidates = np.where((~taken) & (reference.labels == prediction.labels[n]), iou[n], -1.0)
        best = int(np.argmax(candidates))
        if candidates[best] >= iou_threshold:
            taken[best] = True
            hits[rank] = True
    return hits, prediction.scores[order]


def froc(predictions: Sequence[CaseBoxes], references: Sequence[CaseBoxes], rates: Sequence[float] = FROC_RATES,
         iou_threshold: float = FROC_IOU) -> dict[str, Any]:
    """Sensitivity at ``rates`` false positives per scan, and the FROC curve.

    The curve has one point per distinct score ``t``: (false positives with score ≥ ``t`` per scan, hits with
    score ≥ ``t`` / reference boxes), from (0, 0). The sensitivity at a rate is that of the lowest threshold
    whose false-positive rate does not exceed it (a step read-out, no interpolation). MONAI's
    ``compute_froc_curve_data`` is not used: it drops the lowest threshold, i.e. the operating point with every
    detection kept.
    """
    tp_scores, fp_scores = [], []
    for prediction, reference in zip(predictions, references, strict=True):
        hits, scores = match_case(prediction, reference, iou_threshold)
        tp_scores.extend(scores[hits])
        fp_scores.extend(scores[~hits])
    targets = int(sum(len(r.boxes) for r in references))
    if targets == 0:
        return {"sensitivity": {str(r): None for r in rates}, "score": None, "fps_per_scan": [], "curve": []}
    tp, fp = np.asarray(tp_scores, float), np.asarray(fp_scores, float)
    thresholds = np.unique(np.concatenate([tp, fp]))[::-1]
    fps = np.array([0.0, *((fp[:, None] >= thresholds[None]).sum(axis=0) / len(predictions))])
    sensitivity = np.array([0.0, *((tp[:, None] >= thresholds[None]).sum(axis=0) / targets)])
    at = {str(rate): float(sensitivity[fps <= rate].max()) for rate in rates}
    return {"sensitivity": at, "score": float(np.mean(list(at.values()))), "fps_per_scan": fps.tolist(),
            "curve": sensitivity.tolist()}


def evaluate_detection(predictions: Sequence[CaseBoxes], references: Sequence[CaseBoxes]) -> dict[str, Any]:
    """COCO mAP/mAR and FROC over scans paired in order."""
    if len(predictions) != len(references):
        raise ValueError("predictions and references must pair up")
    for prediction, reference in zip(predictions, references, strict=True):
        if len(prediction.boxes) and len(reference.boxes) and prediction.space != reference.space:
            raise InputError("one side has world boxes and the other voxel boxes; give both the same")
    classes = sorted({int(v) for case in (*predictions, *references) for v in case.labels}) or [1]
    return {"scans": len(predictions), "reference_boxes": int(sum(len(r.boxes) for r in references)),
            "predicted_boxes": int(sum(len(p.boxes) for p in predictions)),
            **coco_metrics(predictions, references, classes), "froc": froc(predictions, references)}


def save_froc_png(result: dict[str, Any], path: Path) -> Path:
    """The FROC curve (sensitivity against false positives per scan, log axis), the read-out rates marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    curve = result["froc"]
    if curve["fps_per_scan"]:
        axes.step(curve["fps_per_scan"], curve["curve"], where="post", color="tab:blue")
    rates = [float(r) for r in curve["sensitivity"]]
    values = [v if v is not None else 0.0 for v in curve["sensitivity"].values()]
    axes.plot(rates, values, "o", color="tab:red", label="FROC read-outs")
    axes.set_xscale("log")
    axes.set_xlim(rates[0] / 2, rates[-1] * 2)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("false positives per scan")
    axes.set_ylabel("sensitivity")
    score = curve["score"]
    axes.set_title(f"FROC (mean sensitivity {score:.3f})" if score is not None else "FROC (no reference boxes)")
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path
