"""Classification metrics against hand computation and scikit-learn, and ``mitk evaluate classify``."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import invoke

from mitk.tasks.classify.evaluation import (
    classification_metrics,
    confusion_matrix,
    expected_calibration_error,
    roc_auc,
)

CLASSES = ["normal", "fracture", "tumour"]
# Six cases by hand: reference, probabilities (normal, fracture, tumour).
CASES = [
    ("normal", (0.7, 0.2, 0.1)),
    ("normal", (0.4, 0.5, 0.1)),
    ("fracture", (0.1, 0.8, 0.1)),
    ("fracture", (0.3, 0.6, 0.1)),
    ("tumour", (0.2, 0.2, 0.6)),
    ("normal", (0.6, 0.1, 0.3)),
]


def test_auc_by_hand_with_ties() -> None:
    # positives 0.8, 0.4; negatives 0.4, 0.1: pairs (0.8>0.4) (0.8>0.1) (0.4=0.4: one half) (0.4>0.1)
    assert roc_auc([0.8, 0.4, 0.4, 0.1], [True, True, False, False]) == pytest.approx(3.5 / 4)
    assert math.isnan(roc_auc([0.2, 0.3], [True, True]))


def test_metrics_by_hand() -> None:
    reference = [r for r, _ in CASES]
    probabilities = np.asarray([p for _, p in CASES])
    metrics = classification_metrics(reference, probabilities, CLASSES)
    # predicted: normal, fracture, fracture, fracture, tumour, normal
    assert metrics["confusion"] == [[2, 1, 0], [0, 2, 0], [0, 0, 1]]
    assert metrics["accuracy"] == pytest.approx(5 / 6)
    normal = metrics["per_class"]["normal"]
    assert (normal["sensitivity"], normal["specificity"], normal["ppv"]) == pytest.approx((2 / 3, 1.0, 1.0))
    fracture = metrics["per_class"]["fracture"]
    assert (fracture["sensitivity"], fracture["specificity"], fracture["ppv"]) == pytest.approx((1.0, 0.75, 2 / 3))
    assert metrics["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    # normal vs rest: positives 0.7, 0.4, 0.6; negatives 0.1, 0.3, 0.2 → every pair ordered
    assert normal["auc"] == pytest.approx(1.0)
    # tumour vs rest: positive 0.6; negatives 0.1, 0.1, 0.1, 0.1, 0.3 → 1.0
    assert metrics["per_class"]["tumour"]["auc"] == pytest.approx(1.0)
    # top-class confidences 0.7 (hit), 0.5 (miss), 0.8, 0.6, 0.6, 0.6 (hits); 15 bins of width 1/15
    bins = {}
    for confidence, hit in [(0.7, 1), (0.5, 0), (0.8, 1), (0.6, 1), (0.6, 1), (0.6, 1)]:
        bins.setdefault(math.ceil(confidence * 15), []).append((confidence, hit))
    expected = sum(len(b) / 6 * abs(np.mean([h for _, h in b]) - np.mean([c for c, _ in b])) for b in bins.values())
    assert metrics["ece"] == pytest.approx(expected)


def test_metrics_match_scikit_learn() -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 3, size=200)
    logits = rng.normal(size=(200, 3)) + np.eye(3)[truth] * 1.5
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probabilities = np.round(probabilities, 2)  # ties, as written to a CSV
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    metrics = classification_metrics([CLASSES[t] for t in truth], probabilities, CLASSES)
    predicted = probabilities.argmax(axis=1)
    assert metrics["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(truth, predicted))
    assert metrics["balanced_accuracy"] == pytest.approx(sklearn_metrics.balanced_accuracy_score(truth, predicted))
    assert metrics["confusion"] == sklearn_metrics.confusion_matrix(truth, predicted).tolist()
    for c, name in enumerate(CLASSES):
        assert metrics["per_class"][name]["auc"] == pytest.approx(
            sklearn_metrics.roc_auc_score(truth == c, probabilities[:, c]))
        assert metrics["per_class"][name]["ppv"] == pytest.approx(
            sklearn_metrics.precision_score(truth == c, predicted == c))
    assert metrics["macro_auc"] == pytest.approx(
        sklearn_metrics.roc_auc_score(truth, probabilities, multi_class="ovr", average="macro"))
    for c, name in enumerate(CLASSES):  # the ROC curve mitk report draws, point for point
        fpr, tpr, thresholds = sklearn_metrics.roc_curve(truth == c, probabilities[:, c], drop_intermediate=False)
        curve = metrics["roc"][name]
        np.testing.assert_allclose(curve["fpr"], fpr)
        np.testing.assert_allclose(curve["tpr"], tpr)
        np.testing.assert_allclose(curve["threshold"][1:], thresholds[1:])
        assert curve["threshold"][0] is None and len(curve["fpr"]) == len(set(probabilities[:, c])) + 1


def test_confusion_and_calibration_edges() -> None:
    assert confusion_matrix([0, 1, 1], [1, 1, 0], 2).tolist() == [[0, 1], [1, 1]]
    assert expected_calibration_error([1.0, 1.0], [True, True]) == 0.0
    assert expected_calibration_error([1.0, 1.0], [False, False]) == 1.0


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def prediction_files(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "images"
    images.mkdir()
    predictions, references = [], []
    for index, (label, probabilities) in enumerate(CASES):
        name = f"case{index}.png"
        predictions.append({"input": f"images/{name}", "predicted": CLASSES[int(np.argmax(probabilities))],
                            **{f"prob_{c}": p for c, p in zip(CLASSES, probabilities, strict=True)}})
        references.append({"image": name, "label": label})
    return _write(tmp_path / "preds.csv", predictions), _write(images / "labels.csv", references)


def test_evaluate_cli_json_csv_and_png(prediction_files: tuple[Path, Path], tmp_path: Path) -> None:
    pred, ref = prediction_files
    out_csv, out_png = tmp_path / "scores.csv", tmp_path / "confusion.png"
    code, stdout, stderr = invoke(["evaluate", "classify", "--pred", str(pred), "--ref", str(ref), "--json",
                                   "--csv", str(out_csv), "--confusion-png", str(out_png)])
    assert code == 0, stderr
    document = json.loads(stdout)
    assert document["paired"] == 6 and document["confusion"] == [[2, 1, 0], [0, 2, 0], [0, 0, 1]]
    assert document["accuracy"] == pytest.approx(5 / 6)
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["class"] for r in rows] == [*CLASSES, "(all)"]
    assert float(rows[1]["specificity"]) == pytest.approx(0.75)
    from mitk.report.curves import curves_in

    assert document["roc"]["tumour"] == {"fpr": [0.0, 0.0, 0.2, 1.0], "tpr": [0.0, 1.0, 1.0, 1.0],
                                         "threshold": [None, 0.6, 0.3, 0.1]}
    assert "ROC" in dict(curves_in(document))  # mitk report draws the curves of this output
    from PIL import Image

    with Image.open(out_png) as picture:
        assert picture.format == "PNG" and picture.width > 3 * 64


def test_evaluate_cli_prints_table(prediction_files: tuple[Path, Path]) -> None:
    pred, ref = prediction_files
    code, stdout, _ = invoke(["evaluate", "classify", "--pred", str(pred), "--ref", str(ref)])
    assert code == 0
    assert "fracture" in stdout and "accuracy 0.8333" in stdout and "confusion matrix" in stdout


def test_evaluate_cli_refuses_writing_over_an_input(prediction_files: tuple[Path, Path]) -> None:
    pred, ref = prediction_files
    before = ref.read_bytes()
    code, stdout, stderr = invoke(["evaluate", "classify", "--pred", str(pred), "--ref", str(ref), "--csv",
                                   str(ref), "--overwrite"])
    assert code == 2 and stdout == ""
    assert "input of this command" in stderr and "Traceback" not in stderr
    assert ref.read_bytes() == before


def test_evaluate_cli_names_a_bad_file(tmp_path: Path, prediction_files: tuple[Path, Path]) -> None:
    _, ref = prediction_files
    bad = _write(tmp_path / "bad.csv", [{"input": "a.png", "score": 1}])
    code, _, stderr = invoke(["evaluate", "classify", "--pred", str(bad), "--ref", str(ref)])
    assert code == 1 and str(bad) in stderr and "prob_<class>" in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_multi_label_scores_by_hand(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    cases = [("a;b", "a;b", (0.9, 0.8)), ("a", "a;b", (0.7, 0.6)), ("b", "b", (0.2, 0.9)), ("", "a", (0.4, 0.1))]
    pred = _write(tmp_path / "preds.csv", [{"input": f"images/c{i}.png", "predicted": predicted, "prob_a": pa,
                                            "prob_b": pb} for i, (predicted, _, (pa, pb)) in enumerate(cases)])
    ref = _write(images / "labels.csv", [{"image": f"c{i}.png", "label": label}
                                        for i, (_, label, _) in enumerate(cases)])
    code, stdout, stderr = invoke(["evaluate", "classify", "--pred", str(pred), "--ref", str(ref), "--json"])
    assert code == 0, stderr
    scores = json.loads(stdout)
    assert scores["multi_label"] is True and "confusion" not in scores
    # a: reference {0, 1, 3}, predicted {0, 1} → tp 2, fn 1, fp 0, tn 1; b: reference {0, 1, 2}, predicted {0, 2}
    a, b = scores["per_class"]["a"], scores["per_class"]["b"]
    assert (a["tp"], a["fn"], a["fp"], a["tn"]) == (2, 1, 0, 1)
    assert (b["tp"], b["fn"], b["fp"], b["tn"]) == (2, 1, 0, 1)
    assert scores["exact_match"] == pytest.approx(2 / 4)  # cases 0 and 2
    assert scores["hamming_accuracy"] == pytest.approx(6 / 8)
    assert a["auc"] == pytest.approx(roc_auc([0.9, 0.7, 0.2, 0.4], [True, True, False, True]))
    code, _, stderr = invoke(["evaluate", "classify", "--pred", str(pred), "--ref", str(ref), "--confusion-png",
                              str(tmp_path / "c.png")])
    assert code == 2 and "no confusion matrix" in stderr and not (tmp_path / "c.png").exists()


def test_validation_log_loss_matches_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    from mitk.tasks.classify.recipe import log_loss

    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.0, 1.0, 0.0]])
    labels = np.array([0, 1, 0, 0])  # the last is a certain miss: clipped, finite
    expected = sklearn_metrics.log_loss(labels, np.clip(probabilities, 1e-7, 1 - 1e-7), labels=[0, 1, 2])
    assert log_loss(probabilities, labels, multi_label=False) == pytest.approx(expected, rel=1e-6)
    truth = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
    scores = np.array([[0.9, 0.2], [0.4, 0.6], [0.7, 0.99]])
    by_hand = -np.mean(np.where(truth > 0.5, np.log(scores), np.log(1 - scores)))
    assert log_loss(scores, truth, multi_label=True) == pytest.approx(by_hand)
