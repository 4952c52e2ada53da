"""COCO-style detection scores in NumPy: AP over 101 recall points and recall, per class and IoU threshold.

The algorithm of pycocotools' ``COCOeval`` (``evaluateImg`` and ``accumulate``), which MONAI's ``COCOMetric``
and ``matching_batch`` adapt, for corner boxes of any dimension (``(x0, y0, x1, y1)`` or
``(x0, y0, z0, x1, y1, z1)``): per scan and class, detections are taken by descending score (stable, at most
``max_detections``) and each claims the unmatched reference box it overlaps most with IoU at least the threshold
(on equal IoU, the later reference box); over the scans, the precision envelope is read at the recall points
0, 0.01, …, 1. Arithmetic is in float64, as in pycocotools (MONAI computes IoU and recall in float32, which can
move a value lying exactly on a threshold to the other side of it). No torch or MONAI is imported.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RECALL_POINTS = np.linspace(0.0, 1.00, 101, endpoint=True)
"""The recall points at which precision is read (COCO's 101)."""


def box_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """IoU of every pair of corner boxes ``(N, 2d)`` × ``(M, 2d)``, float64; 0 where both boxes are empty."""
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if len(first) == 0 or len(second) == 0:
        return np.zeros((len(first), len(second)))
    dims = first.shape[1] // 2
    low = np.maximum(first[:, None, :dims], second[None, :, :dims])
    high = np.minimum(first[:, None, dims:], second[None, :, dims:])
    inter = np.prod(np.clip(high - low, 0.0, None), axis=-1)
    union = np.prod(first[:, dims:] - first[:, :dims], axis=-1)[:, None] \
        + np.prod(second[:, dims:] - second[:, :dims], axis=-1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_scan(pred_boxes: np.ndarray, pred_scores: np.ndarray, ref_boxes: np.ndarray,
               thresholds: Sequence[float], max_detections: int) -> tuple[np.ndarray, np.ndarray]:
    """One scan and class: ``(scores, matched)``, the kept detections' scores by descending score and whether
    each is a true positive at each threshold ``(T, D)``."""
    order = np.argsort(-np.asarray(pred_scores, dtype=np.float64), kind="mergesort")[:max_detections]
    scores = np.asarray(pred_scores, dtype=np.float64)[order]
    matched = np.zeros((len(thresholds), len(order)), dtype=bool)
    if len(order) == 0 or len(ref_boxes) == 0:
        return scores, matched
    iou = box_iou(np.asarray(pred_boxes)[order], ref_boxes)
    for t, threshold in enumerate(thresholds):
        taken = np.zeros(len(ref_boxes), dtype=bool)
        floor = min(float(threshold), 1 - 1e-10)
        for d in range(len(order)):
            candidates = np.where(~taken & (iou[d] >= floor), iou[d], -np.inf)
            best = candidates.max()
            if best == -np.inf:
                continue
            ref = len(candidates) - 1 - int(np.argmax(candidates[::-1] == best))  # the last of the best
            taken[ref] = matched[t, d] = True
    return scores, matched


def precision_recall(scores: Sequence[np.ndarray], matched: Sequence[np.ndarray], references: int,
                     thresholds: int) -> tuple[np.ndarray, np.ndarray]:
    """Over the scans of one class: ``(precision, recall)``, the precision envelope at :data:`RECALL_POINTS`
    ``(T, 101)`` (0 past the last recall reached) and the recall ``(T,)``; -1 everywhere without references."""
    if references == 0:
        return -np.ones((thresholds, len(RECALL_POINTS))), -np.ones(thresholds)
    all_scores = np.concatenate([np.zeros(0), *scores])
    order = np.argsort(-all_scores, kind="mergesort")
    hits = np.concatenate([np.zeros((thresholds, 0), dtype=bool), *matched], axis=1)[:, order]
    tp = np.cumsum(hits, axis=1).astype(np.float64)
    fp = np.cumsum(~hits, axis=1).astype(np.float64)
    precision = np.zeros((thresholds, len(RECALL_POINTS)))
    recall = np.zeros(thresholds)
    for t in range(thresholds):
        if tp.shape[1] == 0:
            continue
        rc = tp[t] / references
        envelope = np.maximum.accumulate((tp[t] / (fp[t] + tp[t] + np.spacing(1)))[::-1])[::-1]
        recall[t] = rc[-1]
        at = np.searchsorted(rc, RECALL_POINTS, side="left")
        reached = at < len(rc)
        precision[t, reached] = envelope[at[reached]]
    return precision, recall


def coco_scores(pred_boxes: Sequence[np.ndarray], pred_labels: Sequence[np.ndarray],
                pred_scores: Sequence[np.ndarray], ref_boxes: Sequence[np.ndarray],
                ref_labels: Sequence[np.ndarray], classes: Sequence[int], thresholds: Sequence[float],
                max_detections: int) -> tuple[np.ndarray, np.ndarray]:
    """Scans paired in order: ``(precision, recall)`` of shape ``(T, 101, C)`` and ``(T, C)`` for ``classes``
    (-1 for a class without reference boxes)."""
    count = len(thresholds)
    precision = -np.ones((count, len(RECALL_POINTS), len(classes)))
    recall = -np.ones((count, len(classes)))
    for c, label in enumerate(classes):
        scores, matched, references = [], [], 0
        for boxes, labels, confidence, refs, ref_classes in zip(pred_boxes, pred_labels, pred_scores, ref_boxes,
                                                                ref_labels, strict=True):
            mine, theirs = np.asarray(labels) == label, np.asarray(ref_classes) == label
            kept, hit = match_scan(np.asarray(boxes)[mine], np.asarray(confidence)[mine],
                                   np.asarray(refs)[theirs], thresholds, max_detections)
            scores.append(kept)
            matched.append(hit)
            references += int(theirs.sum())
        precision[:, :, c], recall[:, c] = precision_recall(scores, matched, references, count)
    return precision, recall
