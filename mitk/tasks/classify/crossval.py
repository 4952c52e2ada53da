"""Out-of-fold scores of a classification fold run (``mitk evaluate crossval RUN --predict``): every case
predicted by the fold that did not train on it, the pooled predictions scored as ``mitk evaluate classify``
scores a prediction file (AUC, accuracy, ECE and whether the predictive entropy ranks the errors)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mitk.tasks.classify.evaluation import classification_metrics, multi_label_metrics
from mitk.tasks.classify.recipe import case_classes
from mitk.tasks.classify.result import ClassificationResult


def score_out_of_fold(cases: Sequence[dict[str, Any]], results: Sequence[ClassificationResult],
                      config: dict[str, Any]) -> dict[str, Any]:
    """Macro AUC, accuracy, balanced accuracy, ECE and the AUC of uncertainty vs error (the predictive entropy
    when the results carry it, else 1 − the top probability) over ``cases`` and their ``results``."""
    if not results:
        return {"cases": 0}
    names = list(results[0].class_names)
    probabilities = np.asarray([result.probabilities for result in results], dtype=np.float64)
    entropy = [(result.uncertainty or {}).get("predictive_entropy") for result in results]
    uncertainty = np.asarray(entropy, dtype=np.float64) if all(e is not None for e in entropy) else None
    if config.get("multi_label"):
        threshold = float(config.get("threshold", 0.5))
        predicted = [[name for name, p in zip(names, row, strict=True) if p >= threshold] for row in probabilities]
        metrics = multi_label_metrics([case_classes(case) for case in cases], probabilities, names, predicted)
        keep = ("cases", "macro_auc", "exact_match", "hamming_accuracy", "balanced_accuracy")
    else:
        metrics = classification_metrics([case_classes(case)[0] for case in cases], probabilities, names,
                                         uncertainty=uncertainty)
        keep = ("cases", "macro_auc", "accuracy", "balanced_accuracy", "ece")
    scores: dict[str, Any] = {key: _finite(metrics.get(key)) for key in keep if key in metrics}
    calibration = metrics.get("calibration") or {}
    if calibration:
        scores["uncertainty_auc"] = calibration.get("uncertainty_auc")
        scores["uncertainty"] = calibration.get("uncertainty")
        scores["errors"] = calibration.get("errors")
    return scores


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value
