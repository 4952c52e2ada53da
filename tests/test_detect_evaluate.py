"""Detection metrics against hand-computed matches: COCO mAP/mAR (IoU 0.1–0.5), FROC, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import invoke

from mitk.tasks.detect.evaluation import CaseBoxes, coco_metrics, evaluate_detection, froc


def case(boxes: list[list[float]], scores: list[float] | None = None, labels: list[int] | None = None) -> CaseBoxes:
    n = len(boxes)
    return CaseBoxes(np.asarray(boxes, float).reshape(-1, 6), np.asarray(labels or [1] * n, int),
                     np.asarray(scores or [1.0] * n, float), "RAS")


# Scan A: two references; a perfect hit (0.9), a false positive (0.8), a hit at IoU 0.729 (0.3).
# Scan B: one reference; a hit at IoU 32/96 = 1/3 (0.6), a false positive (0.5).
REFERENCES = [case([[0, 0, 0, 10, 10, 10], [20, 20, 20, 30, 30, 30]]), case([[0, 0, 0, 4, 4, 4]])]
PREDICTIONS = [case([[0, 0, 0, 10, 10, 10], [50, 50, 50, 60, 60, 60], [21, 21, 21, 30, 30, 30]], [0.9, 0.8, 0.3]),
               case([[2, 0, 0, 6, 4, 4], [100, 100, 100, 110, 110, 110]], [0.6, 0.5])]


def coco_ap(hits: list[bool], targets: int) -> float:
    """COCO's 101-point interpolated AP of a ranked list of hits (written out independently of MONAI)."""
    tp = np.cumsum(hits)
    recall, precision = tp / targets, tp / np.arange(1, len(hits) + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.mean([envelope[recall >= r - 1e-12][0] if np.any(recall >= r - 1e-12) else 0.0
                          for r in np.linspace(0, 1, 101)]))


def test_coco_metrics_by_hand() -> None:
    result = coco_metrics(PREDICTIONS, REFERENCES, [1])
    low = coco_ap([True, False, True, False, True], 3)  # IoU thresholds 0.10 … 0.30: every hit counts
    high = coco_ap([True, False, False, False, True], 3)  # 0.35 … 0.50: the IoU-1/3 hit is a false positive
    assert low == pytest.approx((34 + 33 * 2 / 3 + 34 * 0.6) / 101)
    assert result["AP_0.1"] == pytest.approx(low, abs=1e-6)
    assert result["mAP"] == pytest.approx((5 * low + 4 * high) / 9, abs=1e-6)
    assert result["AR_0.1"] == pytest.approx(1.0)
    assert result["mAR"] == pytest.approx((5 * 1.0 + 4 * 2 / 3) / 9, abs=1e-6)


def test_a_class_without_references_is_not_averaged_in() -> None:
    """MONAI scores it -1; averaging that in would drag the mean down."""
    extra = [case([*PREDICTIONS[0].boxes.tolist(), [70, 70, 70, 80, 80, 80]], [0.9, 0.8, 0.3, 0.7], [1, 1, 1, 2]),
             PREDICTIONS[1]]
    with_class_two = coco_metrics(extra, REFERENCES, [1, 2])
    assert with_class_two["per_class"]["2"]["mAP"] is None
    assert with_class_two["mAP"] == pytest.approx(coco_metrics(PREDICTIONS, REFERENCES, [1])["mAP"])


def test_froc_by_hand() -> None:
    # Ranked: 0.9 hit (0 FP/scan, 1/3), 0.8 FP (0.5, 1/3), 0.6 hit (0.5, 2/3), 0.5 FP (1, 2/3), 0.3 hit (1, 1).
    result = froc(PREDICTIONS, REFERENCES)
    expected = {"0.125": 1 / 3, "0.25": 1 / 3, "0.5": 2 / 3, "1.0": 1.0, "2.0": 1.0, "4.0": 1.0, "8.0": 1.0}
    assert result["sensitivity"] == pytest.approx(expected)
    assert result["score"] == pytest.approx(np.mean(list(expected.values())))
    # IoU >= 0.5: the 0.6 detection becomes a false positive, so the 0.3 hit comes at 3 FP / 2 scans.
    strict = froc(PREDICTIONS, REFERENCES, iou_threshold=0.5)
    assert (strict["sensitivity"]["1.0"], strict["sensitivity"]["2.0"]) == pytest.approx((1 / 3, 2 / 3))


def test_no_references_gives_no_scores() -> None:
    result = evaluate_detection([case([[0, 0, 0, 1, 1, 1]], [0.5])], [case([])])
    assert result["mAP"] is None and result["froc"]["score"] is None


def write_boxes(path: Path, boxes: CaseBoxes, system: str = "RAS") -> None:
    records = [{"label": int(label), "score": float(score), "box_world_mm": box.tolist()}
               for box, label, score in zip(boxes.boxes, boxes.labels, boxes.scores, strict=True)]
    path.write_text(json.dumps({"coordinate_system": system, "boxes": records}))


def test_evaluate_detect_command(tmp_path: Path) -> None:
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    for name, prediction, reference in zip(("a", "b"), PREDICTIONS, REFERENCES, strict=True):
        write_boxes(pred / f"{name}_boxes.json", prediction)
        write_boxes(ref / f"{name}.json", reference)
    # The same reference for scan b in LPS: x and y negated, min and max swapped; the scores must not change.
    lps = REFERENCES[1].boxes * np.array([-1, -1, 1, -1, -1, 1])
    write_boxes(ref / "b.json", case(lps[:, [3, 4, 2, 0, 1, 5]].tolist()), system="LPS")
    png = tmp_path / "froc.png"
    code, stdout, stderr = invoke(["evaluate", "detect", "--pred", str(pred), "--ref", str(ref), "--json",
                                   "--froc-png", str(png)])
    assert code == 0, stderr
    document = json.loads(stdout)
    expected = evaluate_detection(PREDICTIONS, REFERENCES)
    assert document["mAP"] == pytest.approx(expected["mAP"])
    assert document["froc"]["sensitivity"] == pytest.approx(expected["froc"]["sensitivity"])
    assert [c["case"] for c in document["cases"]] == ["a", "b"]
    assert png.read_bytes()[:4] == b"\x89PNG"

    alias = tmp_path / "alias.png"  # a symlink to an input: refused, even with --overwrite
    alias.symlink_to(pred / "a_boxes.json")
    before = (pred / "a_boxes.json").read_bytes()
    code, _, stderr = invoke(["evaluate", "detect", "--pred", str(pred), "--ref", str(ref), "--froc-png", str(alias),
                              "--overwrite"])
    assert code == 2 and "refusing to write over it" in stderr
    assert (pred / "a_boxes.json").read_bytes() == before


def test_evaluate_detect_refuses_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "a_boxes.json"
    bad.write_text('{"boxes": [{"label": 1}]}')
    good = tmp_path / "a_ref.json"
    write_boxes(good, REFERENCES[0])
    code, _, stderr = invoke(["evaluate", "detect", "--pred", str(bad), "--ref", str(good)])
    assert code != 0 and "a_boxes.json" in stderr and "Traceback" not in stderr


def test_evaluate_detect_reads_the_folder_detect_writes(tmp_path: Path) -> None:
    """``mitk detect --csv -d DIR`` writes a JSON and a CSV per case: the JSON is read. World-only predictions
    against voxel-only references are compared through the grid the prediction record carries."""
    sample, pred = tmp_path / "sample", tmp_path / "pred"
    assert invoke(["sample", "detect", "-d", str(sample), "--cases", "6", "--size", "32"])[0] == 0
    code, _, stderr = invoke(["detect", "-p", "blob", "--set", "polarity=both", "--set", "threshold=0.3",
                              str(sample / "imagesTs"), "-d", str(pred), "--csv"])
    assert code == 0, stderr
    assert sorted(p.suffix for p in pred.iterdir()) == [".csv", ".json"]
    code, stdout, stderr = invoke(["evaluate", "detect", "--pred", str(pred), "--ref", str(sample / "boxesTs"),
                                   "--json"])
    assert code == 0, stderr
    both = json.loads(stdout)
    assert both["cases"][0]["prediction"].endswith("_boxes.json") and both["reference_boxes"] >= 1
    assert both["predicted_boxes"] >= 1 and both["mAP"] is not None

    world_only, voxel_only = tmp_path / "world_pred", tmp_path / "voxel_ref"
    for folder, source, drop in ((world_only, pred, "box_voxel"), (voxel_only, sample / "boxesTs", "box_world_mm")):
        folder.mkdir()
        for file in source.glob("*.json"):
            document = json.loads(file.read_text())
            document["boxes"] = [{k: v for k, v in b.items() if k != drop} for b in document["boxes"]]
            document.pop("input", None)
            (folder / file.name).write_text(json.dumps(document))
    code, stdout, stderr = invoke(["evaluate", "detect", "--pred", str(world_only), "--ref", str(voxel_only),
                                   "--json"])
    assert code == 0, stderr
    converted = json.loads(stdout)
    assert converted["cases"][0]["space"] == "RAS"
    assert converted["mAP"] == pytest.approx(both["mAP"], abs=1e-3)
    assert converted["froc"]["sensitivity"] == pytest.approx(both["froc"]["sensitivity"])
