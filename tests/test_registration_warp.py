"""``mitk warp`` and ``mitk evaluate register`` on real anatomy (MNI152 at 2 mm and its tissue masks).

Label maps are carried across with a registered ``.tfm`` and scored by Dice; landmarks give the target
registration error; displacement fields written in ITK's convention are read by SimpleITK and by mitk alike,
and their Jacobian determinants are checked against closed forms.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from helpers import invoke, load
from scipy import ndimage
from test_registration_affine import known_affine, moved_copy

FLIP3 = np.diag([-1.0, -1.0, 1.0])


@pytest.fixture(scope="module", autouse=True)
def one_thread(single_threaded_torch: None) -> None:
    """Small tensors: one torch thread is faster on a shared CPU."""


@pytest.fixture(scope="module")
def case(mni_t1_2mm: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """FIXED (MNI T1) with tissue labels (1 grey matter, 2 other brain); MOVING and its labels through a known
    affine on a flipped, tilted grid; and the affine registration of the two, written as .tfm."""
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_gm_mask

    root = tmp_path_factory.mktemp("warp")
    fixed = load(mni_t1_2mm)
    data, affine = np.asarray(fixed.get_fdata(), np.float32), np.asarray(fixed.affine, float)
    brain = np.asarray(load_mni152_brain_mask(resolution=2).get_fdata()) > 0.5
    grey = np.asarray(load_mni152_gm_mask(resolution=2).get_fdata()) > 0.5
    labels = np.where(grey & brain, 1, np.where(brain, 2, 0)).astype(np.int16)
    nib.save(nib.Nifti1Image(labels, affine), root / "fixed_labels.nii.gz")
    truth = known_affine()
    moving_affine = moved_copy(data, affine, truth, root / "moving.nii.gz")
    shape = nib.load(root / "moving.nii.gz").shape
    sources = np.linalg.inv(affine) @ np.linalg.inv(truth) @ moving_affine
    voxels = np.indices(shape).reshape(3, -1)
    moving_labels = ndimage.map_coordinates(labels, sources[:3, :3] @ voxels + sources[:3, 3:], order=0)
    nib.save(nib.Nifti1Image(moving_labels.reshape(shape).astype(np.int16), moving_affine),
             root / "moving_labels.nii.gz")
    code, stdout, stderr = invoke(["register", str(mni_t1_2mm), str(root / "moving.nii.gz"), "--plugin", "affine",
                                   "-o", str(root / "warped.nii.gz"), "--transform", str(root / "t.tfm"),
                                   "--set", "iterations=[50,25,12]", "--set", "samples=8000", "--json"])
    assert code == 0, stderr
    matrix = np.asarray(json.loads(stdout)["cases"][0]["matrix_ras"])
    return {"root": root, "fixed": mni_t1_2mm, "affine": affine, "labels": labels, "truth": truth,
            "matrix": matrix, "brain": brain}


def test_labels_carried_across_score_high_dice(case: dict[str, Any]) -> None:
    root = case["root"]
    code, _, stderr = invoke(["warp", str(root / "moving_labels.nii.gz"), "--transform", str(root / "t.tfm"),
                              "--reference", str(case["fixed"]), "-o", str(root / "warped_labels.nii.gz"),
                              "--labels"])
    assert code == 0, stderr
    warped = load(root / "warped_labels.nii.gz")
    assert np.array_equal(warped.affine, case["affine"]) and warped.get_data_dtype() == np.int16
    assert set(np.unique(np.asarray(warped.dataobj)).tolist()) <= {0, 1, 2}
    code, stdout, stderr = invoke(["evaluate", "register", "--warped-labels", str(root / "warped_labels.nii.gz"),
                                   "--fixed-labels", str(root / "fixed_labels.nii.gz"), "--json"])
    assert code == 0, stderr
    dice = json.loads(stdout)["dice"]["per_label"]
    assert dice["1"] > 0.8 and dice["2"] > 0.85, dice
    # Unregistered (identity), the same labels overlap far less: the transform did the work.
    code, _, _ = invoke(["warp", str(root / "moving_labels.nii.gz"), "--transform", str(identity(root)),
                         "--reference", str(case["fixed"]), "-o", str(root / "unregistered.nii.gz"), "--labels"])
    assert code == 0
    _, stdout, _ = invoke(["evaluate", "register", "--warped-labels", str(root / "unregistered.nii.gz"),
                           "--fixed-labels", str(root / "fixed_labels.nii.gz"), "--json"])
    assert json.loads(stdout)["dice"]["per_label"]["1"] < dice["1"] - 0.2


def identity(root: Path) -> Path:
    path = root / "identity.json"
    path.write_text(json.dumps({"matrix_ras": np.eye(4).tolist()}))
    return path


def test_nearest_neighbour_warp_matches_simpleitk(case: dict[str, Any]) -> None:
    root = case["root"]
    code, _, stderr = invoke(["warp", str(root / "moving_labels.nii.gz"), "-t", str(root / "t.tfm"),
                              "-r", str(case["fixed"]), "-o", str(root / "nearest.nii.gz"),
                              "--interpolation", "nearest"])
    assert code == 0, stderr
    mine = np.asarray(load(root / "nearest.nii.gz").dataobj)
    expected = sitk.Resample(sitk.ReadImage(str(root / "moving_labels.nii.gz")), sitk.ReadImage(str(case["fixed"])),
                             sitk.ReadTransform(str(root / "t.tfm")), sitk.sitkNearestNeighbor, 0)
    expected_array = np.transpose(sitk.GetArrayFromImage(expected), (2, 1, 0))
    assert (mine == expected_array).mean() > 0.995  # ties at exact half-voxels may round either way


def test_a_chain_equals_the_composed_matrix(case: dict[str, Any], tmp_path: Path) -> None:
    root = case["root"]
    first = np.eye(4)
    first[:3, 3] = [5.0, -3.0, 2.0]
    second = case["matrix"] @ np.linalg.inv(first)  # first, then second = the registration
    for name, matrix in (("first.json", first), ("second.json", second)):
        (tmp_path / name).write_text(json.dumps({"matrix_ras": matrix.tolist()}))
    outputs = {}
    for name, transforms in (("chain", ["first.json", "second.json"]), ("one", [str(root / "t.tfm")])):
        args = [arg for t in transforms for arg in ("-t", str(tmp_path / t))]
        code, _, stderr = invoke(["warp", str(root / "moving.nii.gz"), *args, "-r", str(case["fixed"]),
                                  "-o", str(tmp_path / f"{name}.nii.gz")])
        assert code == 0, stderr
        outputs[name] = np.asarray(load(tmp_path / f"{name}.nii.gz").dataobj)
    # first maps x to x + t; the chain applies it and then `second`: second(first(x)) = matrix x.
    np.testing.assert_allclose(outputs["chain"], outputs["one"], atol=1e-4)


def test_landmark_tre(case: dict[str, Any], tmp_path: Path) -> None:
    voxels = np.array([[30, 40, 50], [60, 70, 40], [45, 90, 30], [70, 30, 45], [50, 58, 60]])
    fixed_points = (np.c_[voxels, np.ones(len(voxels))] @ case["affine"].T)[:, :3]
    moving_points = (np.c_[fixed_points, np.ones(len(voxels))] @ case["truth"].T)[:, :3]
    write_landmarks(tmp_path / "fixed.csv", fixed_points)
    write_landmarks(tmp_path / "moving.csv", moving_points[::-1], names=[f"p{n}" for n in range(5)][::-1])
    arguments = ["evaluate", "register", "--fixed-landmarks", str(tmp_path / "fixed.csv"),
                 "--moving-landmarks", str(tmp_path / "moving.csv"), "--json"]
    code, stdout, stderr = invoke([*arguments, "-t", str(case["root"] / "t.tfm")])
    assert code == 0, stderr
    tre = json.loads(stdout)["tre_mm"]
    assert tre["mean"] < 0.6 and set(tre["per_landmark"]) == {f"p{n}" for n in range(5)}
    code, stdout, _ = invoke(arguments)  # no transform: the unregistered error
    expected = np.linalg.norm(moving_points - fixed_points, axis=1)
    np.testing.assert_allclose(json.loads(stdout)["tre_mm"]["mean"], expected.mean(), rtol=1e-6)
    # LPS files (3D Slicer, ITK) give the same errors.
    write_landmarks(tmp_path / "fixed_lps.csv", fixed_points @ FLIP3)
    write_landmarks(tmp_path / "moving_lps.csv", moving_points[::-1] @ FLIP3, names=[f"p{n}" for n in range(5)][::-1])
    code, stdout, _ = invoke(["evaluate", "register", "--fixed-landmarks", str(tmp_path / "fixed_lps.csv"),
                              "--moving-landmarks", str(tmp_path / "moving_lps.csv"), "--lps", "--json"])
    np.testing.assert_allclose(json.loads(stdout)["tre_mm"]["mean"], expected.mean(), rtol=1e-6)


def write_landmarks(path: Path, points: np.ndarray, names: list[str] | None = None) -> None:
    names = names or [f"p{n}" for n in range(len(points))]
    rows = ["name,x,y,z", *(f"{n},{p[0]:.6f},{p[1]:.6f},{p[2]:.6f}" for n, p in zip(names, points, strict=True))]
    path.write_text("\n".join(rows) + "\n")


def smooth_field(shape: tuple[int, ...], amplitude: float, seed: int = 0) -> np.ndarray:
    """A smooth random RAS displacement (mm) of the given peak amplitude."""
    rng = np.random.default_rng(seed)
    field = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), 6.0) for _ in range(3)], axis=-1)
    return field * amplitude / np.abs(field).max()


def test_displacement_field_files_agree_with_simpleitk(case: dict[str, Any], tmp_path: Path) -> None:
    from mitk.io.reader import load_image
    from mitk.io.transforms import read_transform, write_displacement_field

    fixed = load_image(case["fixed"])
    field = smooth_field(fixed.spatial_shape, 4.0)
    path = tmp_path / "field.nii.gz"
    write_displacement_field(field, fixed, path)
    np.testing.assert_allclose(read_transform(path).field, field, atol=1e-5)  # round trip

    itk_field = sitk.ReadImage(str(path))
    assert itk_field.GetNumberOfComponentsPerPixel() == 3
    transform = sitk.DisplacementFieldTransform(sitk.Cast(itk_field, sitk.sitkVectorFloat64))
    voxel = (40, 50, 45)
    point = (case["affine"] @ np.append(voxel, 1))[:3]
    mapped = FLIP3 @ np.asarray(transform.TransformPoint(tuple(FLIP3 @ point)))
    np.testing.assert_allclose(mapped, point + field[voxel], atol=1e-4)

    code, _, stderr = invoke(["warp", str(case["root"] / "moving.nii.gz"), "-t", str(path), "-r", str(case["fixed"]),
                              "-o", str(tmp_path / "warped.nii.gz")])
    assert code == 0, stderr
    mine = np.asarray(load(tmp_path / "warped.nii.gz").dataobj)
    expected = np.transpose(sitk.GetArrayFromImage(sitk.Resample(
        sitk.ReadImage(str(case["root"] / "moving.nii.gz"), sitk.sitkFloat32), sitk.ReadImage(str(case["fixed"])),
        transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)), (2, 1, 0))
    inner = np.zeros(mine.shape, bool)
    inner[4:-4, 4:-4, 4:-4] = True
    inner &= case["brain"]
    assert np.abs(mine[inner] - expected[inner]).max() < 1e-3 * float(np.abs(expected).max())


def test_jacobian_statistics_match_closed_forms(case: dict[str, Any], tmp_path: Path) -> None:
    from mitk.io.reader import load_image
    from mitk.io.transforms import write_displacement_field

    fixed = load_image(case["fixed"])
    shape = fixed.spatial_shape
    voxels = np.indices(shape).reshape(3, -1)
    world = (case["affine"][:3, :3] @ voxels + case["affine"][:3, 3:]).T.reshape(*shape, 3)
    # u(x) = −0.5 x₁ e₁: det = 0.5 everywhere. u(x) = −1.5 x₁ e₁: det = −0.5, all folded.
    for slope, determinant, folded in ((-0.5, 0.5, 0.0), (-1.5, -0.5, 100.0)):
        field = np.zeros((*shape, 3))
        field[..., 0] = slope * world[..., 0]
        write_displacement_field(field, fixed, tmp_path / "f.nii.gz")
        code, stdout, stderr = invoke(["evaluate", "register", "-t", str(tmp_path / "f.nii.gz"), "--json"])
        assert code == 0, stderr
        [statistics] = json.loads(stdout)["jacobian"].values()
        assert statistics["min"] == pytest.approx(determinant, abs=1e-4)
        assert statistics["max"] == pytest.approx(determinant, abs=1e-4)
        assert statistics["folding_percent"] == pytest.approx(folded)
        (tmp_path / "f.nii.gz").unlink()
    field = smooth_field(shape, 2.0)
    write_displacement_field(field, fixed, tmp_path / "f.nii.gz")
    _, stdout, _ = invoke(["evaluate", "register", "-t", str(tmp_path / "f.nii.gz"), "--json"])
    [statistics] = json.loads(stdout)["jacobian"].values()
    assert 0 < statistics["min"] < 1 < statistics["max"] and statistics["folding_voxels"] == 0


def test_warp_refusals_are_one_line(case: dict[str, Any], tmp_path: Path) -> None:
    bad = tmp_path / "bad.tfm"
    bad.write_text("#Insight Transform File V1.0\nTransform: BSplineTransform_double_3_3\nParameters: 1 2\n")
    code, _, stderr = invoke(["warp", str(case["root"] / "moving.nii.gz"), "-t", str(bad), "-r",
                                   str(case["fixed"]), "-o", str(tmp_path / "out.nii.gz")])
    assert code != 0 and "BSplineTransform" in stderr and str(bad) in stderr
    assert len(stderr.strip().splitlines()) == 1 and not (tmp_path / "out.nii.gz").exists()
    code, _, stderr = invoke(["warp", str(case["fixed"]), "-t", str(case["root"] / "t.tfm"), "-r",
                              str(case["fixed"]), "-o", str(case["fixed"]), "--overwrite"])
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    code, _, stderr = invoke(["evaluate", "register", "--fixed-landmarks", str(tmp_path / "none.csv")])
    assert code == 2 and "--moving-landmarks" in stderr
