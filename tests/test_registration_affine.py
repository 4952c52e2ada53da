"""The built-in ``affine`` plugin on real anatomy: the MNI152 T1 (2 mm) moved by known transforms.

The moving image is the template resampled through a ground-truth affine (rotation about two axes, a shift and,
for ``affine``, a 5 % scale) onto a different grid: axes flipped, tilted 5°. The plugin must recover the
transform within half a millimetre over the brain mask (target registration error), and SimpleITK, reading the
written ``.tfm``, must resample the moving image to the image mitk wrote.
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
from scipy.spatial.transform import Rotation

FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


def known_affine(scale: float = 1.05) -> np.ndarray:
    """Fixed-world → moving-world: 10° about x, −8° about y, scaled, 8 mm shift, about the brain's centre."""
    centre = np.array([0.0, -18.0, 18.0])
    matrix = np.eye(4)
    matrix[:3, :3] = scale * Rotation.from_euler("xy", [10.0, -8.0], degrees=True).as_matrix()
    matrix[:3, 3] = centre - matrix[:3, :3] @ centre + np.array([6.0, -4.0, 3.5])
    return matrix


def moved_copy(fixed_data: np.ndarray, fixed_affine: np.ndarray, truth: np.ndarray, path: Path,
               contrast: str = "same") -> np.ndarray:
    """Write FIXED seen through ``truth`` on a flipped, tilted grid; return that grid's affine."""
    shape = (92, 110, 90)
    linear = Rotation.from_euler("x", 5.0, degrees=True).as_matrix() @ np.diag([-2.0, -2.0, 2.0])
    centre = fixed_affine @ np.append((np.array(fixed_data.shape) - 1) / 2, 1.0)
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = centre[:3] - linear @ ((np.array(shape) - 1) / 2)
    voxels = np.indices(shape).reshape(3, -1)
    sources = np.linalg.inv(fixed_affine) @ np.linalg.inv(truth) @ affine
    data = ndimage.map_coordinates(fixed_data, sources[:3, :3] @ voxels + sources[:3, 3:], order=1)
    data = data.reshape(shape).astype(np.float32)
    if contrast == "inverted":  # a different "modality": dark where the T1 is bright, background kept at 0
        head = data > 0.05 * data.max()
        data = np.where(head, 1.2 * data.max() - data, 0.0).astype(np.float32)
    nib.save(nib.Nifti1Image(data, affine), path)
    return affine


@pytest.fixture(scope="module", autouse=True)
def one_thread(single_threaded_torch: None) -> None:
    """Point sampling works on small tensors: one torch thread beats two on a shared CPU."""


@pytest.fixture(scope="module")
def template(mni_t1_2mm: Path) -> dict[str, Any]:
    from nilearn.datasets import load_mni152_brain_mask

    image = load(mni_t1_2mm)
    brain = np.asarray(load_mni152_brain_mask(resolution=2).get_fdata()) > 0.5
    return {"path": mni_t1_2mm, "data": np.asarray(image.get_fdata(), np.float32),
            "affine": np.asarray(image.affine, float), "brain": brain}


def target_registration_error(template: dict[str, Any], estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Distance (mm) between where the estimate and the truth send every brain voxel centre."""
    voxels = np.argwhere(template["brain"])
    world = np.c_[voxels, np.ones(len(voxels))] @ template["affine"].T
    return np.linalg.norm((world @ (estimate - truth).T)[:, :3], axis=1)


FAST = ("--set", "iterations=[50,25,12]", "--set", "samples=8000")
"""Fewer iterations and samples than the defaults keep each registration to seconds on a busy CPU."""


def register(template: dict[str, Any], moving: Path, out: Path, *extra: str) -> dict[str, Any]:
    code, stdout, stderr = invoke(["register", str(template["path"]), str(moving), "--plugin", "affine",
                                   "-o", str(out / "warped.nii.gz"), "--json", *FAST, *extra])
    assert code == 0, stderr
    [record] = json.loads(stdout)["cases"]
    assert record["status"] == "ok", record
    return record


@pytest.mark.parametrize(("transform", "metric", "contrast", "scale"), [
    ("affine", "mi", "same", 1.05),
    ("rigid", "mi", "inverted", 1.0),
    ("similarity", "ncc", "same", 1.05),
])
def test_recovers_a_known_transform_within_half_a_millimetre(template: dict[str, Any], tmp_path: Path,
                                                             transform: str, metric: str, contrast: str,
                                                             scale: float) -> None:
    truth = known_affine(scale)
    moved_copy(template["data"], template["affine"], truth, tmp_path / "moving.nii.gz", contrast)
    record = register(template, tmp_path / "moving.nii.gz", tmp_path, "--transform", str(tmp_path / "t.tfm"),
                      "--set", f"transform={transform}", "--set", f"metric={metric}")
    estimate = np.asarray(record["matrix_ras"])
    error = target_registration_error(template, estimate, truth)
    assert error.mean() < 0.5, (error.mean(), error.max())
    assert error.max() < 1.5
    before = target_registration_error(template, np.eye(4), truth)
    assert before.mean() > 8  # the task was not trivial
    report = record["registration"]
    assert report["transform"] == transform and report["metric"] == metric
    assert len(report["iterations"]) == len(report["similarity"]) == 3 and report["seconds"] > 0
    if transform == "rigid":  # rigid means rigid: an orthonormal linear part
        linear = estimate[:3, :3]
        np.testing.assert_allclose(linear @ linear.T, np.eye(3), atol=1e-6)


def test_simpleitk_reads_the_tfm_and_resamples_to_the_same_image(template: dict[str, Any], tmp_path: Path) -> None:
    truth = known_affine()
    moving_affine = moved_copy(template["data"], template["affine"], truth, tmp_path / "moving.nii.gz")
    record = register(template, tmp_path / "moving.nii.gz", tmp_path, "--transform", str(tmp_path / "t.tfm"),
                      "--set", "iterations=[20,10,5]")
    transform = sitk.ReadTransform(str(tmp_path / "t.tfm"))
    # The same point through SimpleITK (LPS) and through the reported RAS matrix.
    point = np.array([20.0, -35.0, 12.0])
    mapped = FLIP[:3, :3] @ np.asarray(transform.TransformPoint(tuple(FLIP[:3, :3] @ point)))
    np.testing.assert_allclose(mapped, (np.asarray(record["matrix_ras"]) @ np.append(point, 1))[:3], atol=1e-6)

    fixed = sitk.ReadImage(str(template["path"]), sitk.sitkFloat32)
    moving = sitk.ReadImage(str(tmp_path / "moving.nii.gz"), sitk.sitkFloat32)
    expected = np.transpose(sitk.GetArrayFromImage(sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0)),
                            (2, 1, 0))
    warped = load(tmp_path / "warped.nii.gz")
    assert np.array_equal(warped.affine, template["affine"])
    warped_data = np.asarray(warped.dataobj)
    # Compare where every sample lies well inside the moving grid (edges differ only by padding rules).
    voxels = np.indices(warped_data.shape).reshape(3, -1)
    world = template["affine"][:3] @ np.vstack([voxels, np.ones(voxels.shape[1])])
    index = (np.linalg.inv(moving_affine) @ np.asarray(record["matrix_ras"]))[:3] @ np.vstack(
        [world, np.ones(world.shape[1])])
    inside = np.all((index >= 1) & (index <= np.array([92, 110, 90])[:, None] - 2), axis=0).reshape(
        warped_data.shape)
    assert inside.mean() > 0.5
    scale = float(np.abs(expected).max())
    assert np.abs(warped_data[inside] - expected[inside]).max() < 1e-3 * scale
    brain = template["brain"]
    assert np.corrcoef(warped_data[brain], template["data"][brain])[0, 1] > 0.9


def test_moments_initialisation_and_json_transform(template: dict[str, Any], tmp_path: Path) -> None:
    truth = known_affine(1.0)
    moved_copy(template["data"], template["affine"], truth, tmp_path / "moving.nii.gz")
    record = register(template, tmp_path / "moving.nii.gz", tmp_path, "--transform", str(tmp_path / "t.json"),
                      "--set", "init=moments", "--set", "transform=rigid")
    document = json.loads((tmp_path / "t.json").read_text())
    np.testing.assert_allclose(document["matrix_ras"], record["matrix_ras"])
    assert target_registration_error(template, np.asarray(document["matrix_ras"]), truth).mean() < 0.5


def test_a_misspelt_metric_is_one_line(template: dict[str, Any], tmp_path: Path) -> None:
    code, stdout, stderr = invoke(["register", str(template["path"]), str(template["path"]), "--plugin", "affine",
                                   "-o", str(tmp_path / "w.nii.gz"), "--set", "metric=nmi", "--json"])
    assert code != 0
    assert "Traceback" not in stderr
    text = stdout + stderr
    assert "metric" in text and "nmi" in text
    assert not (tmp_path / "w.nii.gz").exists()
