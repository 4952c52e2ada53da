"""Calibration (ECE, reliability bins) and uncertainty-vs-error AUC against scikit-learn and an independent
reference, and their use in ``mitk evaluate classify``."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import invoke

from mitk.evaluation.calibration import (
    calibration_summary,
    expected_calibration_error,
    reliability,
    spearman,
    top_label,
    uncertainty_auc,
    write_reliability_png,
)
from mitk.runner.ensemble import entropy


def _cases(n: int = 400, classes: int = 4, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Over-confident predictions: the reference drawn from softened probabilities."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.5, size=(n, classes))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    soft = np.exp(logits / 2.5) / np.exp(logits / 2.5).sum(axis=1, keepdims=True)
    truth = np.asarray([rng.choice(classes, p=p) for p in soft])
    return probs, truth


def _torchmetrics_l1_ece(probs: np.ndarray, truth: np.ndarray, bins: int) -> float:
    """torchmetrics' ``MulticlassCalibrationError(norm="l1")`` re-written in NumPy (``_binning_bucketize``:
    ``bucketize(conf, linspace(0, 1, bins + 1), right=True) − 1``, ``bins + 1`` accumulators)."""
    conf, guess = probs.max(axis=1), probs.argmax(axis=1)
    acc = (guess == truth).astype(np.float64)
    boundaries = np.linspace(0, 1, bins + 1)
    index = np.searchsorted(boundaries, conf, side="right") - 1
    count = np.bincount(index, minlength=bins + 1)
    conf_bin = np.bincount(index, weights=conf, minlength=bins + 1) / np.maximum(count, 1)
    acc_bin = np.bincount(index, weights=acc, minlength=bins + 1) / np.maximum(count, 1)
    return float(np.sum(np.abs(acc_bin - conf_bin) * count / conf.size))


@pytest.mark.parametrize("bins", [5, 10, 15])
def test_bins_match_sklearn_calibration_curve(bins: int) -> None:
    from sklearn.calibration import calibration_curve

    probs, truth = _cases()
    confidence, correct = top_label(probs, truth)
    # edge values: exactly on bin edges, 0 and 1, which the right-closed bins put below
    confidence = np.concatenate([confidence, np.arange(bins + 1) / bins])
    correct = np.concatenate([correct, np.arange(bins + 1) % 2 == 0])
    table = reliability(confidence, correct, bins)
    prob_true, prob_pred = calibration_curve(correct, confidence, n_bins=bins, strategy="uniform")
    filled = table.count > 0
    np.testing.assert_allclose(table.accuracy[filled], prob_true, rtol=0, atol=1e-12)
    np.testing.assert_allclose(table.confidence[filled], prob_pred, rtol=0, atol=1e-12)
    assert table.total == confidence.size


@pytest.mark.parametrize("bins", [10, 15])
def test_ece_matches_the_torchmetrics_definition(bins: int) -> None:
    probs, truth = _cases(seed=bins)
    confidence, correct = top_label(probs, truth)
    assert not np.any(np.isclose(confidence * bins, np.round(confidence * bins)))  # no value on an edge
    ece = expected_calibration_error(confidence, correct, bins)
    assert ece == pytest.approx(_torchmetrics_l1_ece(probs, truth, bins), abs=1e-12)
    assert 0.05 < ece < 0.5  # the softened reference makes these predictions over-confident


def test_ece_by_hand_and_degenerate_input() -> None:
    # bins of width 0.5: (0.3 miss, 0.4 hit) → |0.5 − 0.35|; (0.9 hit, 1.0 hit) → |1 − 0.95|
    assert expected_calibration_error([0.3, 0.4, 0.9, 1.0], [False, True, True, True], 2) == pytest.approx(
        0.5 * 0.15 + 0.5 * 0.05)
    assert math.isnan(expected_calibration_error([], [], 10))
    with pytest.raises(ValueError, match="lie in"):
        reliability([1.2], [True])
    with pytest.raises(ValueError, match="outcomes"):
        reliability([0.2, 0.3], [True])
    assert reliability([0.95], [True], 10).mce() == pytest.approx(0.05)


def test_uncertainty_auc_matches_sklearn() -> None:
    from sklearn.metrics import roc_auc_score

    probs, truth = _cases(seed=7)
    confidence, correct = top_label(probs, truth)
    spread = entropy(probs, axis=1)
    assert uncertainty_auc(spread, ~correct) == pytest.approx(roc_auc_score(~correct, spread), abs=1e-12)
    rounded = np.round(1 - confidence, 1)  # many ties
    assert uncertainty_auc(rounded, ~correct) == pytest.approx(roc_auc_score(~correct, rounded), abs=1e-12)
    assert uncertainty_auc(spread, ~correct) > 0.6  # entropy does rank the wrong cases first here
    assert math.isnan(uncertainty_auc([0.1, 0.2], [False, False]))


def test_ranks_spearman_and_entropy_against_scipy() -> None:
    from scipy.stats import entropy as scipy_entropy
    from scipy.stats import spearmanr

    values = np.asarray([3.0, 1.0, 3.0, 2.0, 5.0, 1.0])
    other = np.asarray([0.5, 0.1, 0.2, 0.9, 0.4, 0.3])
    assert spearman(values, other) == pytest.approx(spearmanr(values, other).statistic)
    probs, _ = _cases(n=20)
    np.testing.assert_allclose(entropy(probs, axis=1), scipy_entropy(probs, axis=1))
    assert entropy(np.asarray([1.0, 0.0])) == 0.0


def test_summary_and_png(tmp_path: Path) -> None:
    probs, truth = _cases(n=200)
    confidence, correct = top_label(probs, truth)
    summary = calibration_summary(confidence, correct, bins=10)
    assert summary["uncertainty"] == "1 - confidence" and summary["decisions"] == 200
    assert sum(row["count"] for row in summary["reliability"]) == 200
    assert summary["ece"] == pytest.approx(expected_calibration_error(confidence, correct, 10))
    path = write_reliability_png(reliability(confidence, correct, 10), tmp_path / "reliability.png")
    from PIL import Image

    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.width >= 400
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind


# ---------------------------------------------------------------------------------------------------
# mitk evaluate classify
# ---------------------------------------------------------------------------------------------------


def _ensemble_outputs(tmp_path: Path, with_entropy: bool) -> tuple[Path, Path]:
    """A ``mitk classify --json`` document in the shape the ensemble path writes, and a reference CSV."""
    probs, truth = _cases(n=60, classes=3, seed=11)
    names = ["normal", "fracture", "tumour"]
    images = tmp_path / "images"
    images.mkdir()
    cases = []
    for i, p in enumerate(probs):
        case = {"input": str(images / f"c{i}.png"), "status": "ok", "predicted": names[int(p.argmax())],
                "probabilities": dict(zip(names, map(float, p), strict=True))}
        if with_entropy:
            case["uncertainty"] = {"predictive_entropy": float(entropy(p)), "mutual_information": None, "passes": 5}
        cases.append(case)
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"cases": cases}))
    ref = images / "labels.csv"
    with ref.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label"])
        writer.writerows((f"c{i}.png", names[t]) for i, t in enumerate(truth))
    return pred, ref


@pytest.mark.parametrize("with_entropy", [True, False])
def test_evaluate_classify_reports_calibration(tmp_path: Path, with_entropy: bool) -> None:
    from sklearn.metrics import roc_auc_score

    pred, ref = _ensemble_outputs(tmp_path, with_entropy)
    diagram = tmp_path / "reliability.png"
    code, stdout, stderr = invoke(["evaluate", "classify", "--pred", str(pred), "--ref", str(ref), "--json",
                                   "--bins", "10", "--reliability-png", str(diagram)])
    assert code == 0, stderr
    document = json.loads(stdout)
    probs, truth = _cases(n=60, classes=3, seed=11)
    wrong = probs.argmax(axis=1) != truth
    calibration = document["calibration"]
    assert calibration["ece"] == pytest.approx(_torchmetrics_l1_ece(probs, truth, 10), abs=1e-9)
    assert calibration["ece"] == pytest.approx(document["ece"])
    score = entropy(probs, axis=1) if with_entropy else 1 - probs.max(axis=1)
    assert calibration["uncertainty_auc"] == pytest.approx(roc_auc_score(wrong, score), abs=1e-9)
    assert calibration["uncertainty"] == ("predictive_entropy" if with_entropy else "1 - max probability")
    assert calibration["errors"] == int(wrong.sum())
    assert diagram.stat().st_size > 1000
    code, stdout, _ = invoke(["evaluate", "classify", "--pred", str(pred), "--ref", str(ref)])
    assert code == 0 and "vs error: AUC" in stdout


def test_evaluate_classify_refuses_a_diagram_over_an_input(tmp_path: Path) -> None:
    pred, ref = _ensemble_outputs(tmp_path, True)
    before = pred.read_bytes()
    code, _, stderr = invoke(["evaluate", "classify", "--pred", str(pred), "--ref", str(ref),
                                   "--reliability-png", str(pred), "--overwrite"])
    assert code == 2 and "input of this command" in stderr and pred.read_bytes() == before
