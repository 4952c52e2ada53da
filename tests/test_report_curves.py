"""Evaluation plots in ``mitk report``: FROC from ``mitk evaluate detect --json``, per-case Dice from ``mitk evaluate
segment --csv``, and ROC / reliability curves wherever an evaluation document holds them (drawn as inline SVG)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import invoke
from report_batch import Batch, shared_batch

from mitk.report.curves import curves_in, dice_plot


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Batch:
    return shared_batch(tmp_path_factory.getbasetemp())


def test_froc_and_dice_plots_of_real_evaluations(batch: Batch, tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    code, _, stderr = invoke(["report", str(batch.out), "-o", str(target), "--evaluation", str(batch.evaluation)])
    assert code == 0, stderr
    html = target.read_text()
    froc = json.loads((batch.evaluation / "detect.json").read_text())["froc"]["sensitivity"]
    match = re.search(r"<figure>(<svg.*?</svg>)<figcaption>FROC of detect.json", html)
    assert match is not None
    points = re.search(r'<polyline[^>]*points="([^"]+)"', match.group(1))
    assert points is not None and len(points.group(1).split()) == len(froc)  # one vertex per FP rate
    assert "per-case Dice of per_case.csv" in html


def test_roc_and_reliability_wherever_a_document_holds_them() -> None:
    document = {"per_class": {"lesion": {"auc": 0.8, "roc": {"fpr": [0, 0.2, 1], "tpr": [0, 0.7, 1]}}},
                "reliability": [{"confidence": 0.55, "accuracy": 0.5, "count": 4},
                                {"confidence": None, "accuracy": None, "count": 0},
                                {"confidence": 0.9, "accuracy": 0.8, "count": 6}]}
    found = dict(curves_in(document))
    assert set(found) == {"ROC", "Reliability diagram"}
    assert "per_class/lesion/roc" in found["ROC"] and found["ROC"].count("<polyline") == 1
    assert found["Reliability diagram"].count("<circle") == 2  # the empty bin is left out
    assert curves_in({"froc": {"sensitivity": {"a": "b"}}, "auc": 0.5}) == []
    assert dice_plot([["a", "0.9"], ["b", "nan"], ["c", "0.7"]], ["case", "dice"]).count("<circle") == 2
    assert dice_plot([["a", "1"]], ["case", "hd95"]) is None
