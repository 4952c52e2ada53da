"""Classification metrics, and pairing ``mitk classify`` predictions with reference labels.

Definitions (single-label, ``K`` classes, ``N`` cases; class ``c`` positive, every other class negative):

- ``accuracy``: share of cases whose predicted class is the reference class.
- ``sensitivity`` (recall) = TP / (TP + FN); ``specificity`` = TN / (TN + FP); ``ppv`` (precision) =
  TP / (TP + FP); each undefined (NaN, ``null`` in JSON) when its denominator is 0.
- ``balanced_accuracy``: the mean sensitivity over the classes present in the reference.
- ``auc``: one-vs-rest ROC AUC from class ``c``'s probability, the Mann–Whitney statistic with tied scores
  counted one half (as scikit-learn's ``roc_auc_score``); undefined when the reference lacks positives or
  negatives. ``macro_auc``: the mean over classes where it is defined.
- ``ece``: expected calibration error of the top-class probability, ``Σ_b (n_b / N) · |acc_b − conf_b|``
  over ``bins`` equal-width bins of (0, 1] (Guo et al., 2017).
- ``confusion``: rows are reference classes, columns predicted classes, in class order.
- ``roc``: per class, the one-vs-rest ROC curve (``fpr``, ``tpr``, ``threshold``; as scikit-learn's
  ``roc_curve(drop_intermediate=False)``), which ``mitk report`` draws; null where ``auc`` is undefined.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mitk.errors import InputError, UsageError
from mitk.evaluation import calibration

PROBABILITY_PREFIX = "prob_"
"""Prediction CSV columns ``prob_<class>`` hold each class's probability (``mitk classify --csv``)."""
ECE_BINS = 15


# ---------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------


roc_auc = calibration.mann_whitney_auc
"""ROC AUC of ``scores`` for the ``positive`` cases (Mann–Whitney U / (n⁺ n⁻), ties averaged)."""


def roc_points(scores: Sequence[float] | np.ndarray, positive: Sequence[bool] | np.ndarray
               ) -> dict[str, list[float]] | None:
    """The ROC curve of ``scores`` for the ``positive`` cases: false and true positive rates at every distinct
    score taken as the threshold (highest first), from (0, 0); scikit-learn's ``roc_curve`` with
    ``drop_intermediate=False``. None when the reference lacks positives or negatives."""
    values = np.asarray(scores, dtype=np.float64)
    mask = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(mask.sum()), int((~mask).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(-values, kind="mergesort")
    ranked, hits = values[order], mask[order]
    last = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # the last case of each distinct score
    tps, fps = np.cumsum(hits)[last], np.cumsum(~hits)[last]
    return {"fpr": [0.0, *(fps / n_neg).tolist()], "tpr": [0.0, *(tps / n_pos).tolist()],
            "threshold": [None, *ranked[last].tolist()]}


def confusion_matrix(reference: Sequence[int] | np.ndarray, predicted: Sequence[int] | np.ndarray, classes: int
                     ) -> np.ndarray:
    """``matrix[r, p]``: cases of reference class ``r`` predicted as ``p``."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(reference, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return matrix


def expected_calibration_error(confidence: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray,
                               bins: int = ECE_BINS) -> float:
    """ECE over ``bins`` equal-width bins of (0, 1]: a case of confidence ``c`` falls in bin ``ceil(c·bins)``
    (:mod:`mitk.evaluation.calibration`)."""
    return calibration.expected_calibration_error(confidence, correct, bins)


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def classification_metrics(reference: Sequence[str], probabilities: np.ndarray, class_names: Sequence[str],
                           predicted: Sequence[str] | None = None, bins: int = ECE_BINS,
                           uncertainty: Sequence[float] | np.ndarray | None = None) -> dict[str, Any]:
    """Every metric of the module docstring for ``N`` cases: reference class names, an ``(N, K)`` array of
    probabilities in ``class_names`` order, and the predicted names (default: the most probable class).
    ``calibration`` adds the reliability bins, MCE and the AUC of ``uncertainty`` (per case; default
    1 − the largest probability) for telling the wrong cases from the right ones."""
    names = list(class_names)
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted({r for r in reference} - set(index))
    if unknown:
        raise InputError(f"reference classes {unknown} are not among the predicted classes {names}")
    probs = np.asarray(probabilities, dtype=np.float64).reshape(len(reference), len(names))
    truth = np.asarray([index[r] for r in reference], dtype=np.int64)
    if predicted is None:
        guess = probs.argmax(axis=1)
    else:
        missing = sorted({p for p in predicted} - set(index))
        if missing:
            raise InputError(f"predicted classes {missing} are not among the classes {names}")
        guess = np.asarray([index[p] for p in predicted], dtype=np.int64)
    matrix = confusion_matrix(truth, guess, len(names))
    per_class: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(names):
        tp = int(matrix[c, c])
        fn = int(matrix[c].sum()) - tp
        fp = int(matrix[:, c].sum()) - tp
        tn = int(matrix.sum()) - tp - fn - fp
        per_class[name] = {"support": tp + fn, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
                           "sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
                           "ppv": _ratio(tp, tp + fp), "auc": roc_auc(probs[:, c], truth == c)}
    present = [v["sensitivity"] for v in per_class.values() if v["support"] > 0]
    aucs = [v["auc"] for v in per_class.values() if math.isfinite(v["auc"])]
    confidence = probs[np.arange(len(truth)), guess] if len(truth) else np.zeros(0)
    return {
        "cases": len(truth),
        "classes": names,
        "accuracy": float(np.mean(guess == truth)) if len(truth) else math.nan,
        "balanced_accuracy": float(np.mean(present)) if present else math.nan,
        "macro_auc": float(np.mean(aucs)) if aucs else math.nan,
        "ece": expected_calibration_error(confidence, guess == truth, bins),
        "ece_bins": bins,
        "per_class": per_class,
        "confusion": matrix.tolist(),
        "roc": {name: roc_points(probs[:, c], truth == c) for c, name in enumerate(names)},
        "calibration": calibration.calibration_summary(
            confidence, guess == truth, 1.0 - probs.max(axis=1) if uncertainty is None and len(truth) else
            uncertainty, bins, "1 - max probability" if uncertainty is None else "predictive_entropy"),
    }


def multi_label_metrics(reference: Sequence[Sequence[str]], probabilities: np.ndarray,
                        class_names: Sequence[str], predicted: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Multi-label scores: each class one vs rest from the predicted and reference *sets* of classes
    (sensitivity, specificity, PPV, AUC from its probability), ``exact_match`` (every class right) and
    ``hamming_accuracy`` (share of case × class decisions right). No confusion matrix or calibration error."""
    names = list(class_names)
    unknown = sorted({n for labels in [*reference, *predicted] for n in labels} - set(names))
    if unknown:
        raise InputError(f"classes {unknown} are not among the predicted classes {names}")
    probs = np.asarray(probabilities, dtype=np.float64).reshape(len(reference), len(names))
    truth = np.asarray([[n in set(labels) for n in names] for labels in reference], dtype=bool)
    guess = np.asarray([[n in set(labels) for n in names] for labels in predicted], dtype=bool)
    per_class: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(names):
        tp = int(np.sum(truth[:, c] & guess[:, c]))
        fn = int(np.sum(truth[:, c] & ~guess[:, c]))
        fp = int(np.sum(~truth[:, c] & guess[:, c]))
        tn = int(np.sum(~truth[:, c] & ~guess[:, c]))
        per_class[name] = {"support": tp + fn, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
                           "sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
                           "ppv": _ratio(tp, tp + fp), "auc": roc_auc(probs[:, c], truth[:, c])}
    present = [v["sensitivity"] for v in per_class.values() if v["support"] > 0]
    aucs = [v["auc"] for v in per_class.values() if math.isfinite(v["auc"])]
    return {
        "cases": len(truth),
        "classes": names,
        "multi_label": True,
        "exact_match": float(np.mean(np.all(truth == guess, axis=1))) if len(truth) else math.nan,
        "hamming_accuracy": float(np.mean(truth == guess)) if len(truth) else math.nan,
        "balanced_accuracy": float(np.mean(present)) if present else math.nan,
        "macro_auc": float(np.mean(aucs)) if aucs else math.nan,
        "per_class": per_class,
        "roc": {name: roc_points(probs[:, c], truth[:, c]) for c, name in enumerate(names)},
    }


def split_classes(label: str) -> list[str]:
    """``"a;b"`` → ``["a", "b"]``; the empty string (no class reached the threshold) → ``[]``."""
    return [part.strip() for part in label.split(";") if part.strip()]


def json_ready(value: Any) -> Any:
    """NaN and infinity as ``None``, recursively (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_ready(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------------
# Files: predictions and references
# ---------------------------------------------------------------------------------------------------


@dataclass
class Prediction:
    input: str
    predicted: str
    probabilities: dict[str, float]
    uncertainty: float | None = None
    """The record's ``uncertainty.predictive_entropy`` (an ensemble's or TTA's), when it has one."""


def _key(path: str, base: Path) -> str:
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = base / candidate
    return str(candidate.resolve())


def _stem(path: str) -> str:
    from mitk.io.atomic import split_suffix

    return split_suffix(Path(path))[0]


def read_predictions(path: Path) -> tuple[list[Prediction], list[str]]:
    """Predictions from ``mitk classify --csv`` (``input``, ``predicted``, ``prob_<class>`` columns) or
    ``mitk classify --json`` output; returns them with the class names in column order."""
    if not path.is_file():
        raise InputError("no such predictions file", path)
    if path.suffix.lower() == ".json":
        return _predictions_from_json(path)
    rows, columns = _read_csv(path)
    classes = [c[len(PROBABILITY_PREFIX):] for c in columns if c.startswith(PROBABILITY_PREFIX)]
    image_column = "input" if "input" in columns else "image" if "image" in columns else None
    if image_column is None or not classes:
        raise InputError(f"a predictions CSV needs an input column and {PROBABILITY_PREFIX}<class> columns "
                         f"(as `mitk classify --csv` writes), got {columns}", path)
    predictions = []
    for number, row in enumerate(rows, start=2):
        try:
            probabilities = {c: float(row[PROBABILITY_PREFIX + c]) for c in classes}
        except (TypeError, ValueError):
            raise InputError(f"line {number}: probabilities must be numbers", path) from None
        if not all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in probabilities.values()):
            raise InputError(f"line {number}: probabilities must lie in [0, 1]", path)
        predicted = row["predicted"] if "predicted" in row else max(probabilities, key=lambda c: probabilities[c])
        predictions.append(Prediction(_key(row[image_column], path.parent), predicted, probabilities,
                                      _entropy_cell(row.get(UNCERTAINTY_COLUMN), number, path)))
    return predictions, classes


def _predictions_from_json(path: Path) -> tuple[list[Prediction], list[str]]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        cases = [c for c in document["cases"] if c.get("status") == "ok"]
        classes = list(cases[0]["probabilities"]) if cases else []
        predictions = [Prediction(_key(c["input"], Path.cwd()), str(c["predicted"]),
                                  {k: float(v) for k, v in c["probabilities"].items()}, _record_entropy(c))
                       for c in cases]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, IndexError):
        raise InputError("not the JSON output of `mitk classify --json`", path) from None
    return predictions, classes


UNCERTAINTY_COLUMN = "predictive_entropy"
"""An optional predictions-CSV column with each case's predictive entropy."""


def _record_entropy(case: dict[str, Any]) -> float | None:
    """``uncertainty.predictive_entropy`` of a ``mitk classify --json`` case, when present and finite."""
    block = case.get("uncertainty")
    value = block.get("predictive_entropy") if isinstance(block, dict) else None
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError("predictive_entropy must be a finite number >= 0")
    return number


def _entropy_cell(text: str | None, line: int, path: Path) -> float | None:
    if not text:
        return None
    try:
        return _record_entropy({"uncertainty": {"predictive_entropy": text}})
    except ValueError:
        raise InputError(f"line {line}: {UNCERTAINTY_COLUMN} must be a number >= 0", path) from None


def _read_csv(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = [c.strip() for c in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"not a readable CSV file ({error})", path) from None
    rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in rows]
    return rows, columns


def read_references(path: Path) -> dict[str, str]:
    """Reference labels from a CSV with ``image`` and ``label`` columns (paths relative to the CSV), as
    ``mitk train classify`` reads; keyed by resolved path."""
    if not path.is_file():
        raise InputError("no such reference labels file", path)
    rows, columns = _read_csv(path)
    if "image" not in columns or "label" not in columns:
        raise InputError(f"a reference CSV needs image and label columns, got {columns}", path)
    references: dict[str, str] = {}
    for number, row in enumerate(rows, start=2):
        if not row["image"] or not row["label"]:
            raise InputError(f"line {number}: empty image or label", path)
        references[_key(row["image"], path.parent)] = row["label"]
    return references


@dataclass
class Pairing:
    reference: list[str]
    predictions: list[Prediction]
    unpaired_predictions: list[str]
    unpaired_references: list[str]


def pair_predictions(predictions: list[Prediction], references: dict[str, str]) -> Pairing:
    """Pair by resolved path, else by file name without its image suffix (when that name is unique)."""
    by_stem: dict[str, list[str]] = {}
    for reference_key in references:
        by_stem.setdefault(_stem(reference_key), []).append(reference_key)
    used: set[str] = set()
    paired: list[Prediction] = []
    truth: list[str] = []
    unpaired: list[str] = []
    for prediction in predictions:
        key: str | None = prediction.input if prediction.input in references else None
        if key is None:
            matches = by_stem.get(_stem(prediction.input), [])
            key = matches[0] if len(matches) == 1 else None
        if key is None or key in used:
            unpaired.append(prediction.input)
            continue
        used.add(key)
        paired.append(prediction)
        truth.append(references[key])
    return Pairing(truth, paired, unpaired, [k for k in references if k not in used])


def evaluate_files(pred: Path, ref: Path, bins: int = ECE_BINS, multi_label: bool | None = None
                   ) -> tuple[dict[str, Any], Pairing]:
    """Read, pair and score; refuses when no prediction pairs with a reference. ``multi_label`` ``None``:
    multi-label when a predicted or reference label names several classes (``a;b``)."""
    predictions, classes = read_predictions(pred)
    pairing = pair_predictions(predictions, read_references(ref))
    if not pairing.predictions:
        raise UsageError(f"no prediction in {pred} pairs with a reference in {ref} (same image path or file name)")
    probabilities = np.asarray([[p.probabilities[c] for c in classes] for p in pairing.predictions])
    if multi_label is None:
        multi_label = any(";" in label for label in [*pairing.reference, *(p.predicted for p in pairing.predictions)])
    if multi_label:
        return multi_label_metrics([split_classes(r) for r in pairing.reference], probabilities, classes,
                                   [split_classes(p.predicted) for p in pairing.predictions]), pairing
    entropies = [p.uncertainty for p in pairing.predictions]
    known = all(e is not None for e in entropies)
    metrics = classification_metrics(pairing.reference, probabilities, classes,
                                      [p.predicted for p in pairing.predictions], bins=bins,
                                      uncertainty=np.asarray(entropies, dtype=np.float64) if known else None)
    return metrics, pairing


def per_class_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One CSV row per class, then a ``(all)`` row with accuracy, balanced accuracy, macro AUC and ECE."""
    rows = [{"class": name, **{k: json_ready(v) for k, v in values.items()}}
            for name, values in metrics["per_class"].items()]
    rows.append({"class": "(all)", "support": metrics["cases"],
                 "accuracy": json_ready(metrics.get("accuracy", metrics.get("exact_match"))),
                 "balanced_accuracy": json_ready(metrics["balanced_accuracy"]),
                 "auc": json_ready(metrics["macro_auc"]), "ece": json_ready(metrics.get("ece"))})
    return rows


CSV_COLUMNS = ["class", "support", "tp", "fp", "fn", "tn", "sensitivity", "specificity", "ppv", "auc",
               "accuracy", "balanced_accuracy", "ece"]


def confusion_picture(matrix: Sequence[Sequence[int]], class_names: Sequence[str]) -> Any:
    """The confusion matrix as a Pillow image: reference classes down, predicted across, counts in cells."""
    from PIL import Image as PillowImage
    from PIL import ImageDraw

    counts = np.asarray(matrix, dtype=np.float64)
    size = len(class_names)
    cell, margin = 64, 12 + 7 * max(len(n) for n in class_names)
    width = height = margin + size * cell + 8
    picture = PillowImage.new("RGB", (width, height + 20), "white")
    draw = ImageDraw.Draw(picture)
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    for r in range(size):
        draw.text((4, margin + r * cell + cell // 2 - 5), class_names[r], fill="black")
        draw.text((margin + r * cell + 4, margin - 16), class_names[r][: cell // 7], fill="black")
        for p in range(size):
            shade = int(255 - 200 * shares[r, p])
            box = (margin + p * cell, margin + r * cell, margin + (p + 1) * cell - 1, margin + (r + 1) * cell - 1)
            draw.rectangle(box, fill=(shade, shade, 255), outline="grey")
            draw.text((box[0] + cell // 2 - 8, box[1] + cell // 2 - 5), str(int(counts[r, p])),
                      fill="white" if shade < 128 else "black")
    draw.text((margin, height + 2), "rows: reference, columns: predicted", fill="black")
    return picture
