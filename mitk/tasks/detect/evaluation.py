"""Detection metrics: COCO-style mAP / mAR over IoU 0.1–0.5 (pycocotools' algorithm, as MONAI's ``COCOMetric``,
in NumPy: :mod:`mitk.tasks.detect.coco`) and FROC sensitivities.

Boxes are compared as axis-aligned corner boxes ``(x0, y0, z0, x1, y1, z1)`` (MONAI's ``xyzxyz`` mode) in world
millimetres when both sides carry them in the same convention (RAS or LPS; LPS is turned to RAS), otherwise in
voxel extents. A class without reference boxes scores -1 in pycocotools and MONAI's ``COCOMetric``; such classes
are left out of every mean here, never averaged in.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mitk.errors import InputError
from mitk.image import map_box_extents
from mitk.tasks.detect.coco import box_iou, coco_scores

IOU_RANGE = (0.1, 0.5, 0.05)
"""COCO-style thresholds: IoU 0.10, 0.15, …, 0.50."""
IOU_THRESHOLDS = np.linspace(IOU_RANGE[0], IOU_RANGE[1],
                             int(np.round((IOU_RANGE[1] - IOU_RANGE[0]) / IOU_RANGE[2])) + 1)
"""The thresholds themselves, as ``np.linspace`` gives them (the values MONAI's ``COCOMetric`` uses); AP_0.1 and
AR_0.1 are read at the first."""
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
    world: np.ndarray | None = None
    """RAS extents ``(N, 6)`` when the file gave world boxes for every record."""
    voxel: np.ndarray | None = None
    """Voxel boxes ``(N, 6)`` ``(i0, j0, k0, i1, j1, k1)`` (end exclusive) when the file gave them for every record."""
    affine: np.ndarray | None = None
    """Voxel → RAS mm of the grid the voxel boxes are on, when the file records it (``affine``)."""
    input: str | None = None
    """The image the boxes were found on, as the file names it (``input``), if any."""

    def __post_init__(self) -> None:
        if self.world is None and self.voxel is None:  # built from one array: ``boxes`` in ``space``
            boxes = np.asarray(self.boxes, float).reshape(-1, 6)
            if self.space == "voxel":
                self.voxel = boxes + 0.5
            else:
                self.world = boxes

    def in_world(self, affine: np.ndarray | None = None) -> np.ndarray | None:
        """The boxes as RAS extents: as given, or the voxel boxes through the case's affine; None if neither."""
        if self.world is not None or not len(self.boxes):
            return self.world if self.world is not None else np.zeros((0, 6))
        grid = self.affine if self.affine is not None else affine
        if self.voxel is None or grid is None:
            return None
        return map_box_extents(self.voxel, grid)

    def in_voxels(self, affine: np.ndarray | None = None) -> np.ndarray | None:
        """The boxes as voxel extents (``index - 0.5``): as given, or the world boxes through the inverse affine."""
        if self.voxel is not None or not len(self.boxes):
            return np.asarray([_extent(b) for b in self.voxel], float).reshape(-1, 6) if self.voxel is not None \
                else np.zeros((0, 6))
        grid = self.affine if self.affine is not None else affine
        if self.world is None or grid is None:
            return None
        return map_box_extents(self.world + 0.5, np.linalg.inv(grid)) - 0.5  # world extent → voxel extent

    def as_space(self, space: str, boxes: np.ndarray) -> CaseBoxes:
        """These boxes given in ``space`` (``"RAS"``: world extents; ``"voxel"``: voxel extents)."""
        boxes = np.asarray(boxes, float).reshape(-1, 6)
        world, voxel = (boxes, self.voxel) if space == "RAS" else (self.world, boxes + 0.5)
        return CaseBoxes(boxes, self.labels, self.scores, space, self.names, world, voxel, self.affine, self.input)


def _extent(voxel_box: Sequence[float]) -> list[float]:
    """A voxel box ``(i0, j0, k0, i1, j1, k1)`` (end exclusive) as its extent corners."""
    return [float(v) - 0.5 for v in voxel_box]


def _to_ras(box: Sequence[float], system: str) -> list[float]:
    x0, y0, z0, x1, y1, z1 = (float(v) for v in box)
    return [-x1, -y1, z0, -x0, -y0, z1] if system.upper() == "LPS" else [x0, y0, z0, x1, y1, z1]


def _affine(raw: Any, path: Path) -> np.ndarray | None:
    if raw is None:
        return None
    try:
        affine = np.asarray(raw, dtype=float)
    except (TypeError, ValueError):
        affine = np.zeros(0)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError("'affine' must be an invertible 4×4 voxel → RAS matrix", path)
    return affine


def _parse_records(records: list[dict[str, Any]], default_system: str, path: Path,
                   affine: np.ndarray | None = None, input_image: str | None = None) -> CaseBoxes:
    world = all(isinstance(r, dict) and "box_world_mm" in r for r in records)
    voxel = all(isinstance(r, dict) and "box_voxel" in r for r in records)
    world_boxes, voxel_boxes, labels, scores, names = [], [], [], [], {}
    for record in records:
        try:
            if world:
                world_boxes.append(_to_ras(np.asarray(record["box_world_mm"], dtype=float).ravel().tolist(),
                                           str(record.get("coordinate_system", default_system))))
            if voxel:
                voxel_boxes.append(np.asarray(record["box_voxel"], dtype=float).ravel().tolist())
            if not (world or voxel):
                raise KeyError("box_world_mm")
            label = int(record.get("label", 1))
            labels.append(label)
            scores.append(float(record.get("score", 1.0)))
            if "name" in record:
                names[label] = str(record["name"])
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"not a box record ({error}): needs box_world_mm or box_voxel, a label, a score",
                             path) from None
    try:
        world_array = np.asarray(world_boxes, dtype=float).reshape(-1, 6) if world else None
        voxel_array = np.asarray(voxel_boxes, dtype=float).reshape(-1, 6) if voxel else None
    except ValueError:
        raise InputError("a box needs 6 numbers (min corner, then max corner)", path) from None
    for array in (world_array, voxel_array):
        if array is not None and np.any(array[:, 3:] < array[:, :3]):
            raise InputError("a box has its max corner below its min corner", path)
    if world_array is not None:
        array, space = world_array, "RAS"
    else:
        array, space = np.asarray([_extent(b) for b in voxel_boxes], float).reshape(-1, 6), "voxel"
    return CaseBoxes(array, np.asarray(labels, dtype=int), np.asarray(scores, dtype=float),
                     space if records else "RAS", names, world_array, voxel_array, affine, input_image)


WORLD_COLUMNS = ("x0_mm", "y0_mm", "z0_mm", "x1_mm", "y1_mm", "z1_mm")
VOXEL_COLUMNS = ("i0", "j0", "k0", "i1", "j1", "k1")


def _csv_record(row: dict[str, str]) -> dict[str, Any]:
    record: dict[str, Any] = {"label": int(row["label"]), "score": float(row.get("score") or 1.0),
                              "coordinate_system": row.get("coordinate_system") or "RAS"}
    if row.get("x0_mm"):
        record["box_world_mm"] = [float(row[k]) for k in WORLD_COLUMNS]
    if row.get("i0"):
        record["box_voxel"] = [float(row[k]) for k in VOXEL_COLUMNS]
    if row.get("name"):
        record["name"] = row["name"]
    if "box_world_mm" not in record and "box_voxel" not in record:
        raise KeyError("x0_mm…z1_mm or i0…k1")
    return record


def read_boxes(path: Path) -> CaseBoxes:
    """Boxes from a mitk ``_boxes.json`` / ``_boxes.csv`` (or any JSON with a ``boxes`` list of such records).
    A JSON document may also record the grid of its voxel boxes (``affine``, voxel → RAS) and its ``input``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read boxes ({error})", path) from None
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        try:
            records = [_csv_record(row) for row in rows]
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
    if not isinstance(document, dict):
        return _parse_records(found, "RAS", path)
    source = document.get("input")
    return _parse_records(found, str(document.get("coordinate_system", "RAS")), path,
                          _affine(document.get("affine"), path), source if isinstance(source, str) else None)


def common_space(prediction: CaseBoxes, reference: CaseBoxes, affine: np.ndarray | None = None
                 ) -> tuple[CaseBoxes, CaseBoxes]:
    """The pair in one space: world RAS mm when both sides have world boxes or can be given them through an
    affine (the file's own, else ``affine``: the case's image), else voxel extents; :class:`InputError` when one
    side has only world and the other only voxel boxes and no grid is known."""
    own = [case.affine for case in (prediction, reference) if case.affine is not None]
    grid = own[0] if own and affine is None else affine
    pred_world, ref_world = prediction.in_world(grid), reference.in_world(grid)
    if pred_world is not None and ref_world is not None:
        return prediction.as_space("RAS", pred_world), reference.as_space("RAS", ref_world)
    pred_voxel, ref_voxel = prediction.in_voxels(grid), reference.in_voxels(grid)
    if pred_voxel is not None and ref_voxel is not None:
        return prediction.as_space("voxel", pred_voxel), reference.as_space("voxel", ref_voxel)
    raise InputError("one side has only world boxes and the other only voxel boxes, and the case's grid is not "
                     "known: give --images DIR (the images the boxes were found on)")


def coco_metrics(predictions: Sequence[CaseBoxes], references: Sequence[CaseBoxes], classes: Sequence[int]
                 ) -> dict[str, Any]:
    """mAP and mAR over IoU 0.1–0.5 (step 0.05) and AP/AR at IoU 0.1, per class and averaged over the classes
    that have reference boxes (:mod:`mitk.tasks.detect.coco`: pycocotools' algorithm, as MONAI's
    ``COCOMetric`` with ``iou_list=(0.1,)``, ``max_detection=(100,)``)."""
    precision, recall = coco_scores([p.boxes for p in predictions], [p.labels for p in predictions],
                                    [p.scores for p in predictions], [r.boxes for r in references],
                                    [r.labels for r in references], [int(c) for c in classes],
                                    IOU_THRESHOLDS.tolist(), MAX_DETECTIONS)
    per_class: dict[str, dict[str, float | None]] = {}
    for column, label in enumerate(classes):
        if recall[0, column] < 0:  # no reference boxes of this class
            per_class[str(label)] = {"mAP": None, "mAR": None, "AP_0.1": None, "AR_0.1": None}
            continue
        per_class[str(label)] = {"mAP": float(np.mean(precision[:, :, column])),
                                 "mAR": float(np.mean(recall[:, column])),
                                 "AP_0.1": float(np.mean(precision[0, :, column])),
                                 "AR_0.1": float(recall[0, column])}
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
    pairs = [common_space(p, r) for p, r in zip(predictions, references, strict=True)]
    predictions, references = [p for p, _ in pairs], [r for _, r in pairs]
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
