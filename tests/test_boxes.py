"""``mitk boxes``: one reference box per connected lesion of real label maps (pyradiomics' lung1 and brain1 crops),
checked against SimpleITK's connected components and bounding boxes; then scored by ``mitk evaluate detect`` with
voxel references against world-mm predictions through the images' grids."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import invoke
from test_detect_evaluate import coco_ap

DATA = Path(__file__).parent / "data"
LABELS = [DATA / "lung1_label.nii.gz", DATA / "brain1_label.nii.gz"]


def sitk_boxes(path: Path) -> list[tuple[list[float], list[float]]]:
    """(voxel box (i0, j0, k0, i1, j1, k1), RAS world extent) per fully connected component, by SimpleITK."""
    import SimpleITK as sitk

    label = sitk.ReadImage(str(path))
    components = sitk.ConnectedComponent(label > 0, True)  # fullyConnected: 26 neighbours
    statistics = sitk.LabelShapeStatisticsImageFilter()
    statistics.Execute(components)
    found = []
    for number in statistics.GetLabels():
        i, j, k, si, sj, sk = statistics.GetBoundingBox(number)
        voxel = [i, j, k, i + si, j + sj, k + sk]
        corners = np.array([label.TransformContinuousIndexToPhysicalPoint([a - 0.5, b - 0.5, c - 0.5])
                            for a in (i, i + si) for b in (j, j + sj) for c in (k, k + sk)])
        corners[:, :2] *= -1  # LPS → RAS
        found.append((voxel, [*corners.min(axis=0), *corners.max(axis=0)]))
    return sorted(found)


def test_boxes_match_simpleitk_components(tmp_path: Path) -> None:
    code, stdout, stderr = invoke(["boxes", *map(str, LABELS), "-o", str(tmp_path / "refs"), "--names", "1=lesion",
                                   "--json"])
    assert code == 0, stderr
    assert [c["boxes"] for c in json.loads(stdout)["cases"]] == [1, 2]
    for path, case in zip(LABELS, ("lung1", "brain1"), strict=True):
        document = json.loads((tmp_path / "refs" / f"{case}_boxes.json").read_text())
        mine = sorted((b["box_voxel"], b["box_world_mm"]) for b in document["boxes"])
        oracle = sitk_boxes(path)
        assert [m[0] for m in mine] == [o[0] for o in oracle]
        np.testing.assert_allclose([m[1] for m in mine], [o[1] for o in oracle], atol=1e-3)
        assert {b["name"] for b in document["boxes"]} == {"lesion"}
        assert np.asarray(document["affine"]).shape == (4, 4)


def test_boxes_refuses_bad_input_and_goes_on(tmp_path: Path) -> None:
    bad = tmp_path / "broken_label.nii.gz"
    bad.write_bytes(b"not a nifti")
    code, _, stderr = invoke(["boxes", str(bad), str(LABELS[0]), "-o", str(tmp_path / "out")])
    assert code == 3 and "broken_label.nii.gz" in stderr and "Traceback" not in stderr
    assert (tmp_path / "out" / "lung1_boxes.json").is_file() and not (tmp_path / "out" / "broken_boxes.json").exists()
    code, _, stderr = invoke(["boxes", str(LABELS[0]), "-o", str(tmp_path / "out")])  # exists: refused
    assert code != 0 and "lung1_boxes.json" in stderr


def shifted_world_predictions(refs: Path, out: Path, shift_mm: float) -> dict[str, list[list[float]]]:
    """Each reference box moved by ``shift_mm`` along x, written as an LPS world-only CSV (as another tool might);
    returns the RAS world boxes of both sides per case."""
    out.mkdir()
    boxes, rank = {}, 0
    for file in sorted(refs.glob("*_boxes.json")):
        case = file.name[: -len("_boxes.json")]
        world = [b["box_world_mm"] for b in json.loads(file.read_text())["boxes"]]
        moved = [[x0 + shift_mm, y0, z0, x1 + shift_mm, y1, z1] for x0, y0, z0, x1, y1, z1 in world]
        with (out / f"{case}_image_boxes.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["label", "score", "x0_mm", "y0_mm", "z0_mm", "x1_mm", "y1_mm", "z1_mm",
                             "coordinate_system"])
            for x0, y0, z0, x1, y1, z1 in moved:  # distinct scores: no ties in the ranking
                writer.writerow([1, 0.9 - 0.1 * rank, -x1, -y1, z0, -x0, -y0, z1, "LPS"])
                rank += 1
        boxes[case] = world
    return boxes


def iou_3d(a: list[float], b: list[float]) -> float:
    low, high = np.maximum(a[:3], b[:3]), np.minimum(a[3:], b[3:])
    inter = float(np.prod(np.clip(high - low, 0, None)))
    return inter / (float(np.prod(np.subtract(a[3:], a[:3]))) + float(np.prod(np.subtract(b[3:], b[:3]))) - inter)


def test_world_predictions_against_voxel_references_of_real_lesions(tmp_path: Path) -> None:
    refs = tmp_path / "refs"
    assert invoke(["boxes", *map(str, LABELS), "-o", str(refs)])[0] == 0
    world = shifted_world_predictions(refs, tmp_path / "pred", shift_mm=6.0)
    voxel_only = tmp_path / "voxel_refs"  # references in voxels only, without their grid
    voxel_only.mkdir()
    for file in refs.glob("*.json"):
        document = json.loads(file.read_text())
        boxes = [{k: v for k, v in b.items() if k != "box_world_mm"} for b in document["boxes"]]
        (voxel_only / file.name).write_text(json.dumps({"boxes": boxes}))
    command = ["evaluate", "detect", "--pred", str(tmp_path / "pred"), "--ref", str(voxel_only), "--json"]
    code, _, stderr = invoke(command)
    assert code == 1 and "--images" in stderr and "Traceback" not in stderr and len(stderr.splitlines()) == 1

    images = tmp_path / "images"
    images.mkdir()
    for name in ("lung1", "brain1"):
        shutil.copy(DATA / f"{name}_image.nii.gz", images / f"{name}_image.nii.gz")
    code, stdout, stderr = invoke([*command, "--images", str(images)])
    assert code == 0, stderr
    document = json.loads(stdout)
    assert {c["space"] for c in document["cases"]} == {"RAS"} and document["reference_boxes"] == 3
    # By hand: every prediction overlaps its own reference only; COCO AP per IoU threshold from the ranked hits.
    ious = [iou_3d([b[0] + 6, *b[1:3], b[3] + 6, *b[4:]], b) for boxes in world.values() for b in boxes]
    thresholds = np.arange(0.1, 0.5001, 0.05)
    expected = np.mean([coco_ap([iou >= t for iou in ious], 3) for t in thresholds])
    assert 0 < expected < 1
    assert document["mAP"] == pytest.approx(expected, abs=1e-6)
    # The same references with their world boxes (what `mitk boxes` writes) give the same numbers.
    code, stdout, _ = invoke(["evaluate", "detect", "--pred", str(tmp_path / "pred"), "--ref", str(refs), "--json"])
    assert code == 0 and json.loads(stdout)["mAP"] == pytest.approx(expected, abs=1e-6)


def test_a_2d_label_map_is_8_connected(tmp_path: Path) -> None:
    """Two squares touching at a corner are one lesion in 2-D; a PNG's pixels are (column, row) = (i, j)."""
    from PIL import Image as Picture

    mask = np.zeros((40, 30), np.uint8)  # rows, columns
    mask[5:10, 5:10] = 1
    mask[10:14, 10:14] = 1
    mask[20:25, 2:6] = 2
    Picture.fromarray(mask).save(tmp_path / "m_label.png")
    assert invoke(["boxes", str(tmp_path / "m_label.png"), "-o", str(tmp_path)])[0] == 0
    document = json.loads((tmp_path / "m_boxes.json").read_text())
    assert [(b["label"], b["box_voxel"][:2] + b["box_voxel"][3:5], b["voxels"]) for b in document["boxes"]] == \
        [(1, [5, 5, 14, 14], 41), (2, [2, 20, 6, 25], 20)]
