"""Weighted boxes fusion against the authors' reference implementation (``ensemble-boxes``) on real detections:
the ``blob`` detector on the real lung CT of tests/data, run with different settings and on a flipped copy
(test-time augmentation), plus jittered copies of its boxes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mitk.tasks.detect.fusion import box_iou, weighted_boxes_fusion

ensemble_boxes = pytest.importorskip("ensemble_boxes", reason="the reference needs the test extra (ensemble-boxes)")

MEMBER_SETTINGS = ({}, {"num_scales": 4}, {"max_radius_mm": 12.0})


@pytest.fixture(scope="module")
def members(lung_ct: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[tuple], np.ndarray]:
    """Boxes, scores and labels of blob detectors with three settings and of one on the image flipped along i
    (mapped back), clipped to the image; and the image shape."""
    import mitk

    source = nib.load(lung_ct)
    shape = np.asarray(source.shape[:3], dtype=np.float64)
    flipped = tmp_path_factory.mktemp("wbf") / "flipped.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(source.dataobj)[::-1].copy(), source.affine), flipped)
    found = []
    for settings in MEMBER_SETTINGS:
        result = mitk.load("blob", settings=settings).detect(lung_ct)
        found.append((np.asarray(result.boxes_voxel), result.scores, result.labels))
    result = mitk.load("blob").detect(flipped)
    boxes = np.asarray(result.boxes_voxel).copy()
    boxes[:, [0, 3]] = shape[0] - boxes[:, [3, 0]]  # voxels [a, b) of the flipped grid are [n - b, n - a) here
    found.append((boxes, result.scores, result.labels))
    clipped = [(np.clip(b, 0, np.concatenate([shape, shape])), s, lab) for b, s, lab in found]
    return clipped, shape


def _reference(members: list[tuple], shape: np.ndarray, dims: int, **options: object) -> tuple:
    scale = np.concatenate([shape[:dims], shape[:dims]])
    pick = [0, 1, 3, 4] if dims == 2 else list(range(6))
    function = ensemble_boxes.weighted_boxes_fusion if dims == 2 else ensemble_boxes.weighted_boxes_fusion_3d
    boxes, scores, labels = function([b[:, pick] / scale for b, _, _ in members], [s for _, s, _ in members],
                                     [lab for _, _, lab in members], **options)
    return boxes * scale, scores, labels


def _compare(fused: object, reference: tuple, shape: np.ndarray) -> None:
    boxes, scores, labels = reference
    assert len(fused) == len(scores) > 0  # type: ignore[arg-type]
    np.testing.assert_allclose(fused.scores, scores, rtol=0, atol=1e-6)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(fused.labels, labels)  # type: ignore[attr-defined]
    # the reference keeps fused corners in float32 (normalised to [0, 1]): 1e-6 of the image is far below a voxel
    np.testing.assert_allclose(fused.boxes, boxes, rtol=0, atol=1e-5 * shape.max())  # type: ignore[attr-defined]


@pytest.mark.parametrize("dims", [3, 2])
def test_wbf_matches_ensemble_boxes_on_real_detections(members: tuple, dims: int) -> None:
    found, shape = members
    pick = [0, 1, 3, 4] if dims == 2 else list(range(6))
    fused = weighted_boxes_fusion([b[:, pick] for b, _, _ in found], [s for _, s, _ in found],
                                  [lab for _, _, lab in found], iou_threshold=0.55)
    _compare(fused, _reference(found, shape, dims, iou_thr=0.55), shape)
    assert len(fused) < sum(len(s) for _, s, _ in found)  # boxes were actually fused
    assert fused.members.max() == len(found)  # some lesion every member found


@pytest.mark.filterwarnings("ignore:Z2 < Z1")
def test_wbf_matches_ensemble_boxes_on_jittered_weighted_members(members: tuple) -> None:
    found, shape = members
    rng = np.random.default_rng(0)
    base_boxes, base_scores, base_labels = found[0]
    jittered = [found[0]]
    for _ in range(3):
        keep = rng.random(len(base_scores)) > 0.2  # each copy misses a fifth of the boxes
        boxes = base_boxes[keep] + rng.normal(0, 1.0, size=(int(keep.sum()), 6))
        boxes = np.clip(boxes, 0, np.concatenate([shape, shape]))
        jittered.append((boxes, np.clip(base_scores[keep] + rng.normal(0, 0.03, int(keep.sum())), 0.01, 1),
                         base_labels[keep]))
    options = {"weights": [2.0, 1.0, 1.0, 1.0], "iou_thr": 0.4, "skip_box_thr": 0.1}
    fused = weighted_boxes_fusion([b for b, _, _ in jittered], [s for _, s, _ in jittered],
                                  [lab for _, _, lab in jittered], weights=options["weights"],  # type: ignore[arg-type]
                                  iou_threshold=0.4, skip_score=0.1)
    _compare(fused, _reference(jittered, shape, 3, **options), shape)


def test_score_spread_and_members_by_hand() -> None:
    a = np.array([[0, 0, 0, 10, 10, 10]], float)
    b = np.array([[1, 1, 1, 11, 11, 11], [50, 50, 50, 60, 60, 60]], float)
    fused = weighted_boxes_fusion([a, b], [np.array([0.8]), np.array([0.6, 0.5])], [np.array([1]), np.array([1, 1])])
    # cluster 1: scores 0.8 and 0.6 → mean 0.7 × min(2, 2)/2; corners weighted 0.8:0.6
    assert fused.scores.tolist() == pytest.approx([0.7, 0.25])
    np.testing.assert_allclose(fused.boxes[0], np.full(6, 0.6 / 1.4) + np.array([0, 0, 0, 10, 10, 10]))
    assert fused.members.tolist() == [2, 1]
    assert fused.score_std.tolist() == pytest.approx([0.1, 0.25])  # std of (0.8, 0.6) and of (0, 0.5)
    np.testing.assert_allclose(fused.member_scores, [[0.8, 0.6], [0.0, 0.5]])
    other_label = weighted_boxes_fusion([a, a.copy()], [np.array([0.9]), np.array([0.9])],
                                        [np.array([1]), np.array([2])])
    assert sorted(other_label.labels.tolist()) == [1, 2]  # boxes of different labels never fuse


def test_iou_and_bad_input() -> None:
    boxes = np.array([[0, 0, 2, 2], [1, 1, 3, 3], [5, 5, 6, 6]], float)
    np.testing.assert_allclose(box_iou(boxes, np.array([0, 0, 2, 2], float)), [1.0, 1 / 7, 0.0])
    empty = weighted_boxes_fusion([np.zeros((0, 6))], [np.zeros(0)], [np.zeros(0)])
    assert len(empty) == 0 and empty.boxes.shape == (0, 6)
    with pytest.raises(ValueError, match="one positive weight"):
        weighted_boxes_fusion([boxes], [np.ones(3)], [np.ones(3)], weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="3 boxes, 2 scores"):
        weighted_boxes_fusion([boxes], [np.ones(2)], [np.ones(3)])


def test_ensemble_runner_fuses_models_and_flips(lung_ct: Path, tmp_path: Path) -> None:
    """Two blob settings × (identity, flip along i) on the real CT: the runner's boxes are WBF of the four passes
    computed here one by one (the flipped pass from a flipped file), and each box records its score spread."""
    import mitk
    from mitk.io.reader import load_image
    from mitk.tasks.detect.runner import DetectionEnsembleRunner

    models = [mitk.load("blob", settings=settings) for settings in MEMBER_SETTINGS[:2]]
    source = nib.load(lung_ct)
    n = source.shape[0]
    flipped = tmp_path / "flipped.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(source.dataobj)[::-1].copy(), source.affine), flipped)
    passes = []
    for model in models:
        for path, mirrored in ((lung_ct, False), (flipped, True)):
            result = model.detect(path)
            boxes = np.asarray(result.boxes_voxel).copy()
            if mirrored:
                boxes[:, [0, 3]] = n - boxes[:, [3, 0]]
            passes.append((boxes, result.scores, result.labels))
    expected = weighted_boxes_fusion([b for b, _, _ in passes], [s for _, s, _ in passes],
                                     [lab for _, _, lab in passes])
    runner = DetectionEnsembleRunner([m.loaded for m in models], flip_axes=(0,))  # world x: voxel i on this CT
    fused = runner(load_image(lung_ct))
    assert fused.record()["passes"] == {"members": 2, "flips": 2, "total": 4}
    np.testing.assert_allclose(fused.boxes_voxel, expected.boxes, atol=1e-9)
    np.testing.assert_allclose(fused.scores, expected.scores, atol=1e-12)
    records = fused.to_dicts()
    assert [r["uncertainty"]["members"] for r in records] == expected.members.tolist()
    assert records[0]["uncertainty"]["passes"] == 4
    assert records[0]["uncertainty"]["score_std"] == pytest.approx(expected.score_std[0], abs=1e-6)
    assert any(r["uncertainty"]["members"] < 4 for r in records)  # the passes disagree on some boxes


def test_detect_tta_fuses_the_flips_a_plugin_allows(lung_ct: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``mitk detect --tta``: with a plugin that declares axis 0 safe, two passes fused, each box with its score
    spread; without declared axes the plain pass alone (no uncertainty)."""
    import json

    from helpers import invoke

    from mitk.tasks.detect.runner import DetectionEnsembleRunner, DetectionRunner, detection_runner

    code, stdout, stderr = invoke(["detect", "--plugin", "blob", str(lung_ct), "--tta", "--json"])
    assert code == 0, stderr
    [plain] = json.loads(stdout)["cases"]
    assert plain["boxes"] and "uncertainty" not in plain["boxes"][0]
    from mitk_builtin._detect_blob import BlobDetector

    monkeypatch.setattr(BlobDetector, "tta_axes", lambda self, config: (0,), raising=False)
    code, stdout, stderr = invoke(["detect", "--plugin", "blob", str(lung_ct), "--tta", "--json"])
    assert code == 0, stderr
    [fused] = json.loads(stdout)["cases"]
    assert {box["uncertainty"]["passes"] for box in fused["boxes"]} == {2}
    assert max(box["uncertainty"]["members"] for box in fused["boxes"]) == 2
    import mitk

    model = mitk.load("blob").loaded
    assert isinstance(detection_runner(model, tta=True), DetectionEnsembleRunner)
    assert isinstance(detection_runner(model, tta=False), DetectionRunner)
