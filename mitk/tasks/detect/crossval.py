"""Out-of-fold scores of a detection fold run (``mitk evaluate crossval RUN --predict``): every case detected by
the fold that did not train on it, the pooled boxes scored as ``mitk evaluate detect`` scores them (COCO mAP/mAR
over IoU 0.1–0.5, FROC), in world mm; with fused passes, the score spread of true and false boxes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mitk.tasks.detect.evaluation import CaseBoxes, coco_metrics, froc, match_case
from mitk.tasks.detect.recipe import world_boxes
from mitk.tasks.detect.result import DetectionResult


def score_out_of_fold(cases: Sequence[dict[str, Any]], results: Sequence[DetectionResult],
                      config: dict[str, Any]) -> dict[str, Any]:
    """mAP, mAR, AP/AR at IoU 0.1 and the FROC score of ``results`` against the cases' reference boxes; with
    fused passes (an ensemble, ``--tta``), ``uncertainty_auc``: how well the per-box score spread ranks the
    false positives (FROC matching) above the true ones."""
    predictions, references = [], []
    for case, result in zip(cases, results, strict=True):
        predictions.append(CaseBoxes(np.asarray(result.boxes_world, float).reshape(-1, 6),
                                     np.asarray(result.labels, int), np.asarray(result.scores, float), "RAS"))
        labels = np.asarray(case.get("label") or [], dtype=int)
        references.append(CaseBoxes(world_boxes(case, result.affine, case), labels, np.ones(len(labels)), "RAS"))
    classes = sorted({int(k) for k in (config.get("labels") or {1: "object"})})
    coco = coco_metrics(predictions, references, classes)
    sensitivity = froc(predictions, references)
    scores: dict[str, Any] = {"cases": len(results), "reference_boxes": int(sum(len(r.labels) for r in references)),
                              **{key: coco.get(key) for key in ("mAP", "mAR", "AP_0.1", "AR_0.1")},
                              "froc": sensitivity["score"]}
    spreads = [r.score_std for r in results]
    if results and all(spread is not None for spread in spreads):
        from mitk.evaluation.calibration import uncertainty_auc

        hits: list[bool] = []
        spread: list[float] = []
        for prediction, reference, result in zip(predictions, references, results, strict=True):
            found, _ = match_case(prediction, reference)
            order = np.argsort(-prediction.scores, kind="stable")
            hits.extend(bool(h) for h in found)
            spread.extend(np.asarray(result.score_std, float)[order].tolist())
        value = uncertainty_auc(spread, [not hit for hit in hits]) if hits else float("nan")
        scores["uncertainty_auc"] = value if np.isfinite(value) else None
        scores["uncertainty"] = "per-box score spread"
    return scores
