"""The built-in ``blob`` detector on real anatomy: planted lesions found where a viewer would put them.

Spheres of known centre and radius are planted into nilearn's MNI152 T1 (real anatomy), stored under an
axis-aligned, a flipped and an oblique affine. ``mitk detect --plugin blob`` must report each lesion's centre
within one voxel of the planted one in world millimetres, where the planted centre is mapped from voxel to world
by SimpleITK (independently of nibabel and mitk).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from helpers import invoke, rotation

from mitk.tasks.detect.runner import boxes_to_input_grid
from mitk.types import DetectionResult

LESIONS = (((30.3, 40.6, 35.2), 6.0), ((60.0, 70.0, 40.0), 9.0), ((45.0, 30.0, 50.0), 4.5))
"""Planted (voxel centre, radius mm) in the stored array."""
SPACING = 2.0

AFFINES = {
    "axis-aligned": np.diag([SPACING, SPACING, SPACING, 1.0]) + np.array([[0, 0, 0, -98], [0, 0, 0, -134],
                                                                           [0, 0, 0, -72], [0, 0, 0, 0]]),
    "flipped": np.array([[-SPACING, 0, 0, 90], [0, SPACING, 0, -126], [0, 0, -SPACING, 72], [0, 0, 0, 1]]),
    "oblique": np.vstack([np.hstack([rotation(17.0, -11.0, 25.0) @ np.diag([SPACING] * 3),
                                     [[-80.0], [-120.0], [-40.0]]]), [[0, 0, 0, 1]]]),
}


def plant(volume: np.ndarray) -> np.ndarray:
    """Bright spheres (1.5 × the anatomy's maximum) at :data:`LESIONS`."""
    planted = volume.copy()
    grid = np.indices(volume.shape, dtype=np.float32)
    for centre, radius in LESIONS:
        distance = np.sqrt(sum(((grid[a] - centre[a]) * SPACING) ** 2 for a in range(3)))
        planted[distance <= radius] = 1.5 * float(volume.max())
    return planted


@pytest.fixture(scope="module")
def planted_scans(mni_t1_2mm: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    volume = np.asarray(load_data(mni_t1_2mm), dtype=np.float32)
    planted = plant(volume)
    folder = tmp_path_factory.mktemp("blob")
    paths = {}
    for name, affine in AFFINES.items():
        image = nib.Nifti1Image(planted, affine)
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
        paths[name] = folder / f"{name}.nii.gz"
        nib.save(image, paths[name])
    return paths


def load_data(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def sitk_world_ras(path: Path, index: tuple[float, float, float]) -> np.ndarray:
    """SimpleITK's continuous index → physical point (LPS), turned to RAS."""
    point = np.array(sitk.ReadImage(str(path)).TransformContinuousIndexToPhysicalPoint(tuple(map(float, index))))
    return point * np.array([-1.0, -1.0, 1.0])


def detect(path: Path, *args: str) -> list[dict]:
    code, stdout, stderr = invoke(["detect", "--plugin", "blob", str(path), "--json", "--set", "threshold=0.6",
                                   *args])
    assert code == 0, stderr
    [record] = json.loads(stdout)["cases"]
    return record["boxes"]


@pytest.mark.parametrize("name", list(AFFINES))
def test_blob_finds_planted_lesions_in_world_mm(planted_scans: dict[str, Path], name: str) -> None:
    path = planted_scans[name]
    boxes = detect(path)
    assert len(boxes) == len(LESIONS), [b["centre_voxel"] for b in boxes]  # anatomy stays below the threshold
    for centre, radius in LESIONS:
        truth = sitk_world_ras(path, centre)
        distances = [np.linalg.norm(np.array(b["centre_world_mm"]) - truth) for b in boxes]
        best = boxes[int(np.argmin(distances))]
        assert min(distances) < SPACING, (name, centre, min(distances))  # within one voxel
        assert best["label"] == 1 and best["name"] == "bright lesion" and best["coordinate_system"] == "RAS"
        assert abs(best["size_mm"][0] / 2 - radius) < SPACING, best["size_mm"]  # the box circumscribes it
        # The reported voxel centre is where SimpleITK puts the reported world centre.
        assert np.allclose(sitk_world_ras(path, best["centre_voxel"]), best["centre_world_mm"], atol=1e-3)


def test_blob_boxes_survive_resampling_and_lps(planted_scans: dict[str, Path]) -> None:
    """Searching on 4 mm blocks (2×2×2 voxels): the runner maps boxes back to the 2 mm oblique input; LPS."""
    path = planted_scans["oblique"]
    boxes = detect(path, "--set", "spacing=[4,4,4]", "--coordinates", "LPS")
    assert len(boxes) == len(LESIONS)
    for centre, _ in LESIONS:
        truth = sitk_world_ras(path, centre) * np.array([-1.0, -1.0, 1.0])  # LPS
        assert min(np.linalg.norm(np.array(b["centre_world_mm"]) - truth) for b in boxes) < SPACING
        assert all(b["coordinate_system"] == "LPS" for b in boxes)


def test_blob_writes_json_csv_and_preview(planted_scans: dict[str, Path], tmp_path: Path) -> None:
    path = planted_scans["flipped"]
    code, _, stderr = invoke(["detect", "--plugin", "blob", str(path), "-d", str(tmp_path), "--csv", "--preview",
                              "--set", "threshold=0.6"])
    assert code == 0, stderr
    document = json.loads((tmp_path / "flipped_boxes.json").read_text())
    assert document["coordinate_system"] == "RAS" and "box_voxel" in document["convention"]
    with (tmp_path / "flipped_boxes.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(document["boxes"]) == len(LESIONS)
    for row, box in zip(rows, document["boxes"], strict=True):
        assert float(row["centre_x_mm"]) == pytest.approx(box["centre_world_mm"][0])
        assert float(row["k1"]) == pytest.approx(box["box_voxel"][5])
    assert (tmp_path / "flipped_boxes_preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The CSV reads back as the same boxes: scored against the JSON, every box is a perfect match.
    code, stdout, stderr = invoke(["evaluate", "detect", "--pred", str(tmp_path / "flipped_boxes.csv"), "--ref",
                                   str(tmp_path / "flipped_boxes.json"), "--json"])
    assert code == 0, stderr
    assert json.loads(stdout)["mAP"] == pytest.approx(1.0)


def test_bad_detect_options_fail_in_one_line(planted_scans: dict[str, Path]) -> None:
    for option in (["--coordinates", "XYZ"], ["--format", "png"]):
        code, _, stderr = invoke(["detect", "--plugin", "blob", str(planted_scans["flipped"]), *option])
        assert code == 2 and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr


def test_dark_lesions_get_label_two(anatomical_t1: Path, tmp_path: Path) -> None:
    """A dark sphere in nibabel's real T1 (2 mm): found with polarity=dark, not with the default bright."""
    image = nib.load(anatomical_t1)
    volume = np.asarray(image.dataobj, dtype=np.float32)
    grid = np.indices(volume.shape, dtype=np.float32)
    centre = (16.0, 20.0, 12.0)
    volume[np.sqrt(sum(((grid[a] - centre[a]) * 2.0) ** 2 for a in range(3))) <= 5.0] = 0.0
    path = tmp_path / "dark.nii.gz"
    nib.save(nib.Nifti1Image(volume, image.affine), path)
    boxes = detect(path, "--set", "polarity=dark", "--set", "threshold=0.3", "--set", "max_lesions=1")
    assert [b["label"] for b in boxes] == [2]
    assert np.linalg.norm(np.array(boxes[0]["centre_voxel"]) - centre) < 1.0


def test_box_mapping_by_hand() -> None:
    """Network grid → input grid on hand-computed cases: a flip of axis i (size 10), and a 2× coarser grid."""
    box = np.array([[2.0, 3.0, 4.0, 5.0, 6.0, 7.0]])
    flip_net = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip_net[0, 3] = 9.0  # network voxel i ↔ input voxel 9 - i
    # extent i: 1.5..4.5 in the network → 9 - 4.5 .. 9 - 1.5 = 4.5..7.5 → box 5..8
    assert np.allclose(boxes_to_input_grid(box, flip_net, np.eye(4)), [[5.0, 3.0, 4.0, 8.0, 6.0, 7.0]])
    coarse = np.diag([2.0, 2.0, 2.0, 1.0])
    coarse[:3, 3] = 0.5  # network voxel n covers input voxels 2n and 2n + 1
    # extent 1.5..4.5 → 2·1.5 + 0.5 = 3.5 .. 9.5 → box 4..10 (input voxels 4..9 = network voxels 2..4)
    assert np.allclose(boxes_to_input_grid(box, coarse, np.eye(4)), [[4.0, 6.0, 8.0, 10.0, 12.0, 14.0]])


def test_centre_and_size_by_hand() -> None:
    affine = np.array([[0, 0, 3.0, 10], [-2.0, 0, 0, 20], [0, 1.5, 0, -5], [0, 0, 0, 1]])
    result = DetectionResult(boxes_voxel=np.array([[1.0, 2.0, 3.0, 5.0, 4.0, 4.0]]), affine=affine,
                             scores=np.array([0.5]), labels=np.array([1]), label_names={1: "lesion"})
    [record] = result.to_dicts()
    assert record["centre_voxel"] == [2.5, 2.5, 3.0]
    assert record["centre_world_mm"] == [10 + 3.0 * 3.0, 20 - 2.0 * 2.5, -5 + 1.5 * 2.5]
    assert record["size_mm"] == [4 * 2.0, 2 * 1.5, 1 * 3.0]


def test_block_mean_grid_by_hand() -> None:
    """Blocks of 2×1×3 voxels: coarse voxel n's centre is fine index (2n + 0.5, n, 3n + 1); values are means."""
    import torch
    from mitk_builtin._detect_blob import BlockMean
    from monai.data import MetaTensor

    fine = np.arange(4 * 3 * 7, dtype=np.float32).reshape(4, 3, 7)
    affine = np.array([[0, 0, 1.0, 5], [-1.0, 0, 0, 2], [0, 3.0, 0, -1], [0, 0, 0, 1]])  # spacing (1, 3, 1)
    image = MetaTensor(torch.as_tensor(fine[None]), affine=torch.as_tensor(affine))
    out = BlockMean([2.0, 3.0, 3.0], 3.0)({"image": image})
    coarse = out["image"]
    assert tuple(coarse.shape) == (1, 2, 3, 2)  # the seventh k voxel does not fill a block and is dropped
    assert float(coarse[0, 1, 2, 1]) == pytest.approx(fine[2:4, 2, 3:6].mean())
    expected = affine @ np.array([[2, 0, 0, 0.5], [0, 1, 0, 0], [0, 0, 3, 1], [0, 0, 0, 1.0]])
    assert np.allclose(np.asarray(coarse.affine), expected)
