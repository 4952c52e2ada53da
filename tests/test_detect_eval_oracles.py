"""The NumPy COCO scores of `mitk evaluate detect` against pycocotools' COCOeval and MONAI's COCOMetric.

Boxes come from real images: reference boxes are the bounding boxes (in mm) of the connected bright structures
of the lung CT and the brain MR of tests/data and of their lesion labels, and predictions are those boxes moved
and resized by seeded amounts, with false positives, missed references, tied scores and a second class. Edge
cases: a scan without predictions, a scan without references, a class without references, more than 100
detections in a scan, 2-D boxes. pycocotools reads 2-D boxes natively (its own IoU); for 3-D, its COCOeval is
given an IoU written out independently here. MONAI computes IoU and recall in float32: its scores equal
these to float32 precision (1e-6) wherever no value falls on a threshold to float32 precision, and a constructed
case shows where they part.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from test_startup import imported_heavy_modules

from mitk.tasks.detect.evaluation import CaseBoxes, coco_metrics, evaluate_detection

pytest.importorskip("pycocotools")
THRESHOLDS = np.linspace(0.1, 0.5, 9)


def structure_boxes(path: Path, cut: float, minimum: int = 30) -> np.ndarray:
    """Bounding boxes (RAS mm extents) of the 6-connected structures of ``image > cut`` of at least ``minimum``
    voxels."""
    image: Any = nib.load(path)
    array = np.asarray(image.dataobj)
    labels, _ = ndimage.label(array > cut)
    sizes = np.bincount(labels.ravel())
    boxes = []
    for number, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is None or sizes[number] < minimum:
            continue
        corners = np.array([[s.start - 0.5 for s in found], [s.stop - 0.5 for s in found]])
        world = nib.affines.apply_affine(image.affine, np.array(list(itertools.product(*corners.T))))
        boxes.append([*world.min(axis=0), *world.max(axis=0)])
    return np.asarray(boxes, float).reshape(-1, 6)


def scan(boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> Any:
    """One scan's boxes: :class:`CaseBoxes` for 3-D boxes; for 2-D ones (which :class:`CaseBoxes` does not hold)
    the three arrays that :func:`coco_metrics` reads."""
    if boxes.shape[1] == 6:
        return CaseBoxes(boxes, labels, scores, "RAS")
    return SimpleNamespace(boxes=boxes, labels=labels, scores=scores)


def real_cases(data: Path, seed: int = 0) -> tuple[list[CaseBoxes], list[CaseBoxes]]:
    rng = np.random.default_rng(seed)
    sources = [(data / "lung1_image.nii.gz", 300.0), (data / "lung1_label.nii.gz", 0.5),
               (data / "brain1_image.nii.gz", 600.0), (data / "brain1_label.nii.gz", 0.5)]
    predictions, references = [], []
    for path, cut in sources:
        refs = structure_boxes(path, cut)
        labels = rng.integers(1, 3, len(refs))  # two classes
        size = refs[:, 3:] - refs[:, :3]
        moved = refs + np.concatenate([rng.normal(0, 0.25, refs[:, :3].shape) * size,
                                       rng.normal(0, 0.25, refs[:, :3].shape) * size], axis=1)
        moved = np.concatenate([np.minimum(moved[:, :3], moved[:, 3:]), np.maximum(moved[:, :3], moved[:, 3:])], 1)
        kept = rng.random(len(refs)) > 0.2  # some references are missed
        chosen = rng.permutation(len(refs))[: max(1, len(refs) // 3)]
        shift = rng.normal(0, 30, (len(chosen), 3))
        false = refs[chosen] + np.concatenate([shift, shift], axis=1)  # moved away: mostly false positives
        boxes = np.concatenate([moved[kept], false])
        scores = np.round(rng.random(len(boxes)), 1)  # one decimal: many tied scores
        predicted = np.concatenate([labels[kept], rng.integers(1, 3, len(false))])
        predictions.append(CaseBoxes(boxes, predicted, scores, "RAS"))
        references.append(CaseBoxes(refs, labels, np.ones(len(refs)), "RAS"))
    return predictions, references


def iou_by_loops(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """IoU of corner boxes, one pair at a time in Python floats (the oracle's IoU for 3-D boxes)."""
    out = np.zeros((len(first), len(second)))
    for (i, a), (j, b) in itertools.product(enumerate(first), enumerate(second)):
        dims = len(a) // 2
        inter, va, vb = 1.0, 1.0, 1.0
        for k in range(dims):
            inter *= max(0.0, min(a[dims + k], b[dims + k]) - max(a[k], b[k]))
            va *= a[dims + k] - a[k]
            vb *= b[dims + k] - b[k]
        out[i, j] = inter / (va + vb - inter) if va + vb - inter > 0 else 0.0
    return out


def pycocotools_scores(predictions: list[Any], references: list[Any], classes: list[int]
                       ) -> dict[str, Any]:
    """mAP, mAR, AP and AR at IoU 0.1 per class from pycocotools' COCOeval (2-D boxes: its own IoU)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dims = references[0].boxes.shape[1] // 2 if references[0].boxes.size else predictions[0].boxes.shape[1] // 2

    def record(box: np.ndarray) -> dict[str, Any]:
        size = box[dims:] - box[:dims]
        return {"bbox": [*box[:dims], *size][:4] if dims == 2 else [0, 0, 1, 1], "area": float(np.prod(size)),
                "corners": box}

    gts, dts = [], []
    for image, (prediction, reference) in enumerate(zip(predictions, references, strict=True)):
        for box, label in zip(reference.boxes, reference.labels, strict=True):
            gts.append({"id": len(gts) + 1, "image_id": image, "category_id": int(label), "iscrowd": 0,
                        **record(box)})
        for box, label, score in zip(prediction.boxes, prediction.labels, prediction.scores, strict=True):
            dts.append({"id": len(dts) + 1, "image_id": image, "category_id": int(label), "score": float(score),
                        **record(box)})
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {"images": [{"id": n} for n in range(len(references))], "annotations": gts,
                         "categories": [{"id": c} for c in classes]}
        truth.createIndex()
        found = COCO()
        found.dataset = {"images": truth.dataset["images"], "annotations": dts, "categories": truth.dataset[
            "categories"]}
        found.createIndex()

        class Corners(COCOeval):  # 3-D: pycocotools' evaluation with an IoU of corner boxes
            def computeIoU(self, image: int, category: int) -> Any:
                if dims == 2:
                    return super().computeIoU(image, category)
                gt, dt = self._gts[image, category], self._dts[image, category]
                if not gt or not dt:
                    return []
                dt = [dt[i] for i in np.argsort([-d["score"] for d in dt], kind="mergesort")][: self.params.maxDets[-1]]
                return iou_by_loops(np.array([d["corners"] for d in dt]), np.array([g["corners"] for g in gt]))

        evaluation = Corners(truth, found, "bbox")
        evaluation.params.iouThrs = THRESHOLDS
        evaluation.params.maxDets = [100]
        evaluation.params.areaRng, evaluation.params.areaRngLbl = [[0.0, 1e12]], ["all"]
        evaluation.params.catIds = classes
        evaluation.evaluate()
        evaluation.accumulate()
    precision, recall = evaluation.eval["precision"][:, :, :, 0, 0], evaluation.eval["recall"][:, :, 0, 0]
    per_class = {}
    for column, label in enumerate(classes):
        if recall[0, column] < 0:
            per_class[str(label)] = {"mAP": None, "mAR": None, "AP_0.1": None, "AR_0.1": None}
        else:
            per_class[str(label)] = {"mAP": float(precision[:, :, column].mean()),
                                     "mAR": float(recall[:, column].mean()),
                                     "AP_0.1": float(precision[0, :, column].mean()),
                                     "AR_0.1": float(recall[0, column])}
    return per_class


def monai_scores(predictions: list[Any], references: list[Any], classes: list[int]) -> dict[str, Any]:
    """The same per-class scores from MONAI's matching_batch, box_iou and COCOMetric (mitk's former code)."""
    from monai.apps.detection.metrics.coco import COCOMetric
    from monai.apps.detection.metrics.matching import matching_batch
    from monai.data.box_utils import box_iou

    index = {c: n for n, c in enumerate(classes)}
    metric = COCOMetric(classes=[str(c) for c in classes], iou_list=(0.1,), iou_range=(0.1, 0.5, 0.05),
                        max_detection=(100,), per_class=True, verbose=False)
    logging.disable(logging.WARNING)  # a warning per class without references
    try:
        matches = matching_batch(
            lambda a, b: np.asarray(box_iou(a, b), float), list(metric.iou_thresholds),
            [p.boxes for p in predictions], [np.array([index[int(v)] for v in p.labels], int) for p in predictions],
            [p.scores for p in predictions], [r.boxes for r in references],
            [np.array([index[int(v)] for v in r.labels], int) for r in references], max_detections=100)
        values = metric(matches)[0]
    finally:
        logging.disable(logging.NOTSET)
    m, one = "IoU_0.10_0.50_0.05_MaxDet_100", "IoU_0.10_MaxDet_100"
    return {str(c): {k: (None if v < 0 else float(v)) for k, v in {
        "mAP": values[f"{c}_mAP_{m}"], "mAR": values[f"{c}_mAR_{m}"], "AP_0.1": values[f"{c}_AP_{one}"],
        "AR_0.1": values[f"{c}_AR_{one}"]}.items()} for c in classes}


def assert_same(ours: dict[str, Any], theirs: dict[str, Any], tolerance: float = 1e-12) -> None:
    """Equal per-class scores (``tolerance``: 1e-12 for pycocotools; 1e-6 for MONAI, whose recalls are float32)."""
    assert ours.keys() == theirs.keys()
    for name, row in theirs.items():
        for key, value in row.items():
            assert (ours[name][key] is None) == (value is None), (name, key)
            if value is not None:
                assert ours[name][key] == pytest.approx(value, abs=tolerance), (name, key)


def edge_cases(rng: np.random.Generator, dims: int, integer: bool, counts: tuple[int, ...] = (10, 3, 0, 7)
               ) -> list[tuple[list[Any], list[Any]]]:
    """Hand-made scans with ``counts`` references each: no predictions, no references, a class with no
    references, >100 detections, ties."""
    def boxes(n: int) -> np.ndarray:
        low = rng.integers(0, 40, (n, dims)) if integer else rng.uniform(0, 40, (n, dims))
        size = rng.integers(1, 12, (n, dims)) if integer else rng.uniform(0.5, 12, (n, dims))
        return np.concatenate([low, low + size], axis=1).astype(float)

    def case(array: np.ndarray, labels: list[int] | np.ndarray | None = None,
             scores: np.ndarray | None = None) -> Any:
        n = len(array)
        return scan(array.reshape(-1, 2 * dims), np.asarray(labels if labels is not None else [1] * n, int),
                    np.asarray(scores if scores is not None else rng.random(n), float))

    refs = [boxes(n) for n in counts]
    jitter = [r + (rng.integers(-2, 3, r.shape) if integer else rng.normal(0, 1.5, r.shape)) for r in refs]
    jitter = [np.concatenate([np.minimum(j[:, :dims], j[:, dims:]), np.maximum(j[:, :dims], j[:, dims:])], 1)
              for j in jitter]
    crowd = np.concatenate([jitter[0], boxes(120)])  # more than 100 detections in one scan
    return [
        ([case(crowd, scores=np.round(rng.random(len(crowd)), 2)), case(np.zeros((0, 2 * dims))),
          case(boxes(4)), case(jitter[3])], [case(r, scores=np.ones(len(r))) for r in refs]),
        ([case(j, scores=np.full(len(j), 0.5)) for j in jitter],  # every score tied
         [case(r, scores=np.ones(len(r))) for r in refs]),
        ([case(jitter[0], [2] * len(jitter[0])), case(jitter[1])],  # class 2 is predicted but has no references
         [case(refs[0]), case(refs[1])]),
    ]


@pytest.mark.parametrize("dims", [2, 3])
def test_the_numpy_scores_equal_pycocotools(dims: int) -> None:
    rng = np.random.default_rng(dims)
    for integer in (True, False):  # integer boxes put IoUs and recalls exactly on thresholds
        for predictions, references in edge_cases(rng, dims, integer):
            assert_same(coco_metrics(predictions, references, [1, 2])["per_class"],
                        pycocotools_scores(predictions, references, [1, 2]))


def test_real_boxes_equal_pycocotools_and_monai(tmp_path: Path) -> None:
    data = Path(__file__).parent / "data"
    predictions, references = real_cases(data)
    assert sum(len(r.boxes) for r in references) >= 10 and len({s for p in predictions for s in p.scores}) < 12
    ours = coco_metrics(predictions, references, [1, 2])
    assert_same(ours["per_class"], pycocotools_scores(predictions, references, [1, 2]))
    assert_same(ours["per_class"], monai_scores(predictions, references, [1, 2]), 1e-6)
    assert 0 < ours["mAP"] < 1 and 0 < ours["mAR"] < 1
    # a 2-D view of the same boxes (x, y only)
    flat = [scan(c.boxes[:, [0, 1, 3, 4]], c.labels, c.scores) for c in predictions]
    flat_refs = [scan(c.boxes[:, [0, 1, 3, 4]], c.labels, c.scores) for c in references]
    assert_same(coco_metrics(flat, flat_refs, [1, 2])["per_class"], pycocotools_scores(flat, flat_refs, [1, 2]))
    assert_same(coco_metrics(flat, flat_refs, [1, 2])["per_class"], monai_scores(flat, flat_refs, [1, 2]), 1e-6)


def test_edge_cases_equal_monai_off_the_thresholds() -> None:
    """Real-valued boxes, and reference counts (21 and 14 per class) whose recalls never fall on a recall point."""
    rng = np.random.default_rng(7)
    for predictions, references in edge_cases(rng, 3, integer=False, counts=(11, 3, 0, 7)):
        assert_same(coco_metrics(predictions, references, [1, 2])["per_class"],
                    monai_scores(predictions, references, [1, 2]), 1e-6)


def test_where_monai_parts_from_pycocotools() -> None:
    """9 of 10 references found: recall 0.9 in float64 reaches the recall point 0.90, in float32 (MONAI) it
    falls short of it. The NumPy scores follow pycocotools."""
    refs = np.array([[10.0 * n, 0, 0, 10.0 * n + 5, 5, 5] for n in range(10)])
    preds = np.concatenate([refs[:9], refs[:3] + 200])
    scores = np.array([0.9] * 9 + [0.95] * 3)  # the false positives rank first: precision 0.75 at recall 0.9
    prediction = [CaseBoxes(preds, np.ones(12, int), scores, "RAS")]
    reference = [CaseBoxes(refs, np.ones(10, int), np.ones(10), "RAS")]
    ours = coco_metrics(prediction, reference, [1])["per_class"]
    assert_same(ours, pycocotools_scores(prediction, reference, [1]))
    assert ours["1"]["mAP"] != pytest.approx(monai_scores(prediction, reference, [1])["1"]["mAP"], abs=1e-6)


def test_no_reference_anywhere_gives_no_scores() -> None:
    result = evaluate_detection([CaseBoxes(np.array([[0, 0, 0, 1, 1, 1.0]]), np.array([1]), np.array([0.5]), "RAS")],
                                [CaseBoxes(np.zeros((0, 6)), np.zeros(0, int), np.zeros(0), "RAS")])
    assert result["mAP"] is None and result["mAR"] is None and result["froc"]["score"] is None


def test_evaluate_detect_imports_neither_torch_nor_monai(tmp_path: Path) -> None:
    reference, prediction = tmp_path / "a.json", tmp_path / "a_boxes.json"
    reference.write_text('{"boxes": [{"label": 1, "box_world_mm": [0, 0, 0, 10, 10, 10]}]}')
    prediction.write_text('{"boxes": [{"label": 1, "score": 0.8, "box_world_mm": [1, 0, 0, 10, 10, 10]}]}')
    assert imported_heavy_modules(tmp_path, "evaluate", "detect", "--pred", str(prediction), "--ref",
                                  str(reference), "--json") == []
