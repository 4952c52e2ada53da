"""Geometry helpers and result types in :mod:`mitk.types`, checked against nibabel and hand computations."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest
from helpers import rotation

from mitk.types import (
    DetectionResult,
    Image,
    SegmentationResult,
    orientation_code,
    ras_to_lps,
    voxel_spacing,
)

PERMUTATIONS = list(itertools.permutations(range(3)))
FLIPS = list(itertools.product((1, -1), repeat=3))
ORIENTATIONS = [(p, f) for p in PERMUTATIONS for f in FLIPS]


def axis_affine(permutation: tuple[int, ...], flips: tuple[int, ...],
                spacing: tuple[float, float, float] = (0.7, 1.3, 2.9)) -> np.ndarray:
    """Voxel axis ``a`` points along world axis ``permutation[a]`` with sign ``flips[a]``."""
    affine = np.eye(4)
    affine[:3, :3] = 0
    for voxel_axis, (world_axis, sign) in enumerate(zip(permutation, flips, strict=True)):
        affine[world_axis, voxel_axis] = sign * spacing[voxel_axis]
    affine[:3, 3] = (12.5, -40.0, 7.25)
    return affine




def test_there_are_48_orientations() -> None:
    codes = {orientation_code(axis_affine(p, f)) for p, f in ORIENTATIONS}
    assert len(codes) == 48


@pytest.mark.parametrize(("permutation", "flips"), ORIENTATIONS)
def test_orientation_code_matches_nibabel(permutation: tuple[int, ...], flips: tuple[int, ...]) -> None:
    affine = axis_affine(permutation, flips)
    assert orientation_code(affine) == "".join(nib.aff2axcodes(affine))


@pytest.mark.parametrize("angles", [(20, 0, 0), (0, -30, 0), (10, 25, -35), (-40, 15, 30), (5, -5, 44)])
@pytest.mark.parametrize(("permutation", "flips"), ORIENTATIONS[::7])
def test_orientation_code_of_oblique_affines_matches_nibabel(
        angles: tuple[float, float, float], permutation: tuple[int, ...], flips: tuple[int, ...]) -> None:
    affine = axis_affine(permutation, flips)
    affine[:3, :3] = rotation(*angles) @ affine[:3, :3]
    assert orientation_code(affine) == "".join(nib.aff2axcodes(affine))


def test_voxel_spacing_of_oblique_affine() -> None:
    affine = axis_affine((2, 0, 1), (-1, 1, -1), spacing=(0.5, 1.25, 3.0))
    affine[:3, :3] = rotation(17, -23, 41) @ affine[:3, :3]
    assert voxel_spacing(affine) == pytest.approx((0.5, 1.25, 3.0))
    assert Image(np.zeros((2, 3, 4)), affine).spacing == pytest.approx((0.5, 1.25, 3.0))


def test_ras_to_lps_negates_x_and_y_and_is_its_own_inverse() -> None:
    affine = axis_affine((1, 2, 0), (1, -1, 1))
    lps = ras_to_lps(affine)
    point = np.array([3.0, 4.0, 5.0, 1.0])
    ras_point, lps_point = affine @ point, lps @ point
    assert lps_point[:3] == pytest.approx([-ras_point[0], -ras_point[1], ras_point[2]])
    assert np.allclose(ras_to_lps(lps), affine)
    assert orientation_code(lps) == "".join("RLAPSI"["LRPASI".index(c)] for c in orientation_code(affine))


# -------------------------------------------------------------------------------------------------
# DetectionResult.boxes_world
# -------------------------------------------------------------------------------------------------

# Voxel axis 0 points to -x (L) at 2 mm, axis 1 to +z (S) at 3 mm, axis 2 to +y (A) at 0.5 mm.
DETECTION_AFFINE = np.array([
    [-2.0, 0.0, 0.0, 100.0],
    [0.0, 0.0, 0.5, -20.0],
    [0.0, 3.0, 0.0, 10.0],
    [0.0, 0.0, 0.0, 1.0],
])


def _detections(system: str) -> DetectionResult:
    return DetectionResult(boxes_voxel=np.array([[2, 4, 10, 5, 6, 30], [0, 0, 0, 1, 1, 1]], float),
                           affine=DETECTION_AFFINE, scores=np.array([0.9, 0.2]), labels=np.array([1, 2]),
                           label_names={1: "nodule", 2: "cyst"}, coordinate_system=system)


def test_boxes_world_ras_by_hand() -> None:
    # Box 1 covers voxel centres i 2..4, j 4..5, k 10..29; its extent reaches half a voxel beyond.
    # x = 100 - 2 i over i in [1.5, 4.5] -> [91, 97]; y = -20 + 0.5 k over k in [9.5, 29.5] -> [-15.25, -5.25];
    # z = 10 + 3 j over j in [3.5, 5.5] -> [20.5, 26.5].
    world = _detections("RAS").boxes_world
    assert world[0] == pytest.approx([91.0, -15.25, 20.5, 97.0, -5.25, 26.5])
    # Box 2 is the single voxel (0, 0, 0), centred at (100, -20, 10).
    assert world[1] == pytest.approx([99.0, -20.25, 8.5, 101.0, -19.75, 11.5])


def test_boxes_world_lps_by_hand() -> None:
    world = _detections("LPS").boxes_world
    assert world[0] == pytest.approx([-97.0, 5.25, 20.5, -91.0, 15.25, 26.5])
    assert world[1] == pytest.approx([-101.0, 19.75, 8.5, -99.0, 20.25, 11.5])
    assert np.all(world[:, :3] < world[:, 3:])


def test_detection_to_dicts_names_and_rounds() -> None:
    rows = _detections("RAS").to_dicts()
    assert [r["name"] for r in rows] == ["nodule", "cyst"]
    assert rows[0]["box_voxel"] == [2.0, 4.0, 10.0, 5.0, 6.0, 30.0]
    assert rows[0]["box_world_mm"] == [91.0, -15.25, 20.5, 97.0, -5.25, 26.5]
    assert rows[0]["score"] == pytest.approx(0.9) and rows[0]["coordinate_system"] == "RAS"


# -------------------------------------------------------------------------------------------------
# SegmentationResult.statistics
# -------------------------------------------------------------------------------------------------


def test_statistics_volume_in_ml_with_anisotropic_spacing() -> None:
    affine = axis_affine((0, 1, 2), (-1, 1, 1), spacing=(0.5, 2.0, 3.0))  # 3 mm³ per voxel
    affine[:3, :3] = rotation(12, 0, -30) @ affine[:3, :3]  # obliquity must not change volumes
    label_map = np.zeros((10, 10, 10), np.uint8)
    label_map[:5] = 1  # 500 voxels -> 1.5 mL
    label_map[9, 9, :4] = 3  # 4 voxels -> 0.012 mL
    intensities = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    result = SegmentationResult(label_map, affine, {0: "background", 1: "liver", 2: "spleen", 3: "lesion"})
    rows = {r["name"]: r for r in result.statistics(Image(intensities, affine))}
    assert set(rows) == {"liver", "spleen", "lesion"}
    assert rows["liver"]["voxels"] == 500 and rows["liver"]["volume_ml"] == pytest.approx(1.5)
    assert rows["lesion"]["voxels"] == 4 and rows["lesion"]["volume_ml"] == pytest.approx(0.012)
    assert rows["spleen"]["voxels"] == 0 and rows["spleen"]["mean_intensity"] is None
    assert rows["liver"]["mean_intensity"] == pytest.approx(float(intensities[:5].mean()))
    assert rows["lesion"]["mean_intensity"] == pytest.approx(float(intensities[9, 9, :4].mean()))
    assert "mean_intensity" not in result.statistics()[0]


def test_orientation_code_ignores_voxel_size() -> None:
    """Random oblique directions with very anisotropic voxels: the code depends on directions only."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(7)
    for seed in range(300):
        affine = np.eye(4)
        spacing = rng.uniform(0.3, 6.0, size=3)
        affine[:3, :3] = Rotation.random(random_state=seed).as_matrix() @ np.diag(spacing)
        assert orientation_code(affine) == "".join(nib.aff2axcodes(affine)), (seed, spacing)
