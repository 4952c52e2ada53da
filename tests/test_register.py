"""``mitk register`` end to end with plugins that return a known transform.

The moving image is the real MNI152 T1 resampled through a ground-truth affine (10° rotation about a tilted
axis and a 5 mm shift) onto a different, flipped, slightly oblique and larger grid. The test plugins return
that affine (or a constant displacement field), so these tests check the runner's warping, writing and
LPS conversion, not an optimiser. SimpleITK, reading the written ``.tfm``, is the independent oracle.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from helpers import invoke, load
from scipy import ndimage
from scipy.spatial.transform import Rotation

from mitk import hookimpl
from mitk.tasks import RegistrationPlugin
from mitk.types import Image

SHIFT_RAS = np.array([3.0, 0.0, 0.0])
"""The displacement-field plugin's constant displacement: 3 mm towards the subject's right."""
FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


def ground_truth() -> np.ndarray:
    """Fixed-world → moving-world (RAS mm): rotate 10° about a tilted axis, then shift 5 mm."""
    axis = np.array([0.3, -0.2, 1.0])
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_rotvec(np.radians(10.0) * axis / np.linalg.norm(axis)).as_matrix()
    matrix[:3, 3] = [4.0, -3.0, 0.0]
    return matrix


class KnownAffine(RegistrationPlugin):
    """Returns the ground-truth matrix whatever the images."""

    needs_weights = False
    trainable = False

    def register(self, fixed: Image, moving: Image, model: Any, config: dict[str, Any]
                 ) -> tuple[np.ndarray | None, np.ndarray | None]:
        return ground_truth(), None


class ShiftRight(RegistrationPlugin):
    """No matrix; a constant displacement field on the fixed grid."""

    needs_weights = False
    trainable = False

    def register(self, fixed: Image, moving: Image, model: Any, config: dict[str, Any]
                 ) -> tuple[np.ndarray | None, np.ndarray | None]:
        return None, np.broadcast_to(SHIFT_RAS, (*fixed.spatial_shape, 3))


@pytest.fixture(scope="module", autouse=True)
def registration_plugins() -> Iterator[None]:
    from mitk.plugin_manager import use_plugins

    class Plugin:
        @staticmethod
        @hookimpl
        def mitk_register_plugins(register: Any) -> None:
            register("known-affine", task="register", factory=KnownAffine)
            register("shift-right", task="register", factory=ShiftRight)

    with use_plugins(Plugin()):
        yield


@pytest.fixture(scope="module")
def pair(mni_t1_2mm: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """FIXED (MNI T1, qform code 1, sform code 4) and MOVING (FIXED through the ground truth, other grid)."""
    root = tmp_path_factory.mktemp("register")
    template = load(mni_t1_2mm)
    fixed_data = np.asarray(template.get_fdata(), dtype=np.float32)
    fixed_affine = np.asarray(template.affine, float)
    fixed_image = nib.Nifti1Image(fixed_data, fixed_affine)
    fixed_image.set_qform(fixed_affine, code=1)
    fixed_image.set_sform(fixed_affine, code=4)
    nib.save(fixed_image, root / "fixed.nii.gz")

    # The moving grid: i and j reversed (LPS-like), tilted 5° about x, larger, centred on the fixed volume.
    moving_shape = (105, 123, 101)
    linear = Rotation.from_euler("x", 5.0, degrees=True).as_matrix() @ np.diag([-2.0, -2.0, 2.0])
    centre = fixed_affine @ np.append((np.array(fixed_data.shape) - 1) / 2, 1.0)
    moving_affine = np.eye(4)
    moving_affine[:3, :3] = linear
    moving_affine[:3, 3] = centre[:3] - linear @ ((np.array(moving_shape) - 1) / 2)
    # moving(y) = fixed(M⁻¹ y): sample FIXED where each moving voxel came from.
    voxels = np.indices(moving_shape).reshape(3, -1)
    sources = np.linalg.inv(fixed_affine) @ np.linalg.inv(ground_truth()) @ moving_affine
    coordinates = sources[:3, :3] @ voxels + sources[:3, 3:]
    moving_data = ndimage.map_coordinates(fixed_data, coordinates, order=3, cval=0.0).reshape(moving_shape)
    moving_data = moving_data.astype(np.float32)
    for name, scale in (("moving", 1.0), ("second", 2.0)):
        image = nib.Nifti1Image(moving_data * np.float32(scale), moving_affine)
        image.set_qform(moving_affine, code=1)
        image.set_sform(moving_affine, code=1)
        nib.save(image, root / f"{name}.nii.gz")

    from nilearn.datasets import load_mni152_brain_mask

    brain = np.asarray(load_mni152_brain_mask(resolution=2).get_fdata()) > 0.5
    assert brain.shape == fixed_data.shape
    return {"root": root, "fixed": root / "fixed.nii.gz", "moving": root / "moving.nii.gz",
            "second": root / "second.nii.gz", "fixed_data": fixed_data, "fixed_affine": fixed_affine,
            "moving_shape": moving_shape, "moving_affine": moving_affine, "brain": brain}


@pytest.fixture(scope="module")
def registered(pair: dict[str, Any]) -> dict[str, Any]:
    """One ``mitk register`` run with the known affine, writing the warped image and a .tfm and a .json."""
    root = pair["root"]
    outputs = {"warped": root / "warped.nii.gz", "tfm": root / "t.tfm", "json": root / "t.json"}
    code, stdout, stderr = invoke(["register", str(pair["fixed"]), str(pair["moving"]), "--plugin", "known-affine",
                                   "-o", str(outputs["warped"]), "--transform", str(outputs["tfm"]), "--json"])
    assert code == 0, stderr
    code, _, stderr = invoke(["register", str(pair["fixed"]), str(pair["moving"]), "--plugin", "known-affine",
                              "-o", str(root / "again.nii.gz"), "--transform", str(outputs["json"])])
    assert code == 0, stderr
    return {**outputs, "document": json.loads(stdout)}


def sitk_array(image: sitk.Image) -> np.ndarray:
    """SimpleITK's (k, j, i) array as (i, j, k)."""
    return np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))


def moving_index_of_fixed_voxels(pair: dict[str, Any], matrix: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Continuous moving-voxel index of every fixed voxel centre, shape (I, J, K, 3)."""
    shape = pair["fixed_data"].shape
    voxels = np.indices(shape).reshape(3, -1)
    world = (matrix @ pair["fixed_affine"])[:3] @ np.vstack([voxels, np.ones(voxels.shape[1])])
    world += shift[:, None]
    index = np.linalg.inv(pair["moving_affine"])[:3] @ np.vstack([world, np.ones(world.shape[1])])
    return index.T.reshape(*shape, 3)


def interior(pair: dict[str, Any], index: np.ndarray, margin: float = 1.0) -> np.ndarray:
    """Fixed voxels whose sample point lies at least ``margin`` voxels inside the moving grid."""
    upper = np.array(pair["moving_shape"]) - 1 - margin
    return np.all((index >= margin) & (index <= upper), axis=-1)


def test_warped_image_lives_on_the_fixed_grid_and_matches_it(pair: dict[str, Any], registered: dict[str, Any]
                                                             ) -> None:
    warped, fixed = load(registered["warped"]), load(pair["fixed"])
    assert warped.shape == fixed.shape
    assert np.array_equal(warped.affine, fixed.affine)
    for code in ("qform_code", "sform_code"):
        assert int(warped.header[code]) == int(fixed.header[code])
    assert (int(warped.header["qform_code"]), int(warped.header["sform_code"])) == (1, 4)
    assert np.array_equal(warped.header.get_qform(), fixed.header.get_qform())
    assert np.array_equal(warped.header.get_sform(), fixed.header.get_sform())
    assert warped.get_data_dtype() == np.float32

    brain = pair["brain"]
    warped_data, fixed_data = np.asarray(warped.dataobj), pair["fixed_data"]
    assert np.corrcoef(warped_data[brain], fixed_data[brain])[0, 1] > 0.95
    # The unregistered pair: MOVING on the fixed grid with the identity transform.
    unregistered = sitk_array(sitk.Resample(sitk.ReadImage(str(pair["moving"])), sitk.ReadImage(str(pair["fixed"])),
                                            sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    registered_error = np.abs(warped_data[brain] - fixed_data[brain]).mean()
    unregistered_error = np.abs(unregistered[brain] - fixed_data[brain]).mean()
    assert registered_error < 0.25 * unregistered_error, (registered_error, unregistered_error)

    [record] = registered["document"]["cases"]
    assert record["status"] == "ok" and record["output"] == str(registered["warped"])
    assert np.allclose(record["matrix_ras"], ground_truth())
    assert record["transform"] == str(registered["tfm"])


def test_simpleitk_reading_the_tfm_reproduces_the_warp(pair: dict[str, Any], registered: dict[str, Any]) -> None:
    transform = sitk.ReadTransform(str(registered["tfm"]))
    moving, fixed = sitk.ReadImage(str(pair["moving"])), sitk.ReadImage(str(pair["fixed"]))
    expected = sitk_array(sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    warped = np.asarray(load(registered["warped"]).dataobj)
    inside = interior(pair, moving_index_of_fixed_voxels(pair, ground_truth(), np.zeros(3)))
    assert inside.sum() > 0.5 * inside.size
    scale = float(np.abs(expected).max())
    assert np.abs(warped[inside] - expected[inside]).max() < 1e-3 * scale
    # ITK maps fixed-world points to moving-world points, in LPS: the same point, seen from both sides.
    point = np.array([12.0, -30.0, 25.0])
    mapped = np.asarray(transform.TransformPoint(tuple(FLIP[:3, :3] @ point)))
    assert np.allclose(FLIP[:3, :3] @ mapped, (ground_truth() @ np.append(point, 1.0))[:3], atol=1e-6)


def test_json_transform_holds_consistent_ras_and_lps(registered: dict[str, Any]) -> None:
    document = json.loads(registered["json"].read_text())
    ras, lps = np.asarray(document["matrix_ras"]), np.asarray(document["matrix_lps"])
    assert np.allclose(ras, ground_truth())
    assert np.allclose(lps, FLIP @ ras @ FLIP)
    point = np.array([-7.0, 40.0, 3.0, 1.0])  # RAS
    assert np.allclose(FLIP @ (ras @ point), lps @ (FLIP @ point))
    assert not np.allclose(lps, ras)


def test_displacement_field_samples_three_mm_to_the_right(pair: dict[str, Any], tmp_path: Path) -> None:
    output = tmp_path / "shifted.nii.gz"
    code, stdout, stderr = invoke(["register", str(pair["fixed"]), str(pair["moving"]), "--plugin", "shift-right",
                                   "-o", str(output), "--json"])
    assert code == 0, stderr
    assert json.loads(stdout)["cases"][0]["matrix_ras"] is None
    warped = np.asarray(load(output).dataobj)
    assert np.array_equal(load(output).affine, pair["fixed_affine"])

    # SimpleITK: a translation of +3 mm in RAS x is -3 mm in LPS x.
    moving, fixed = sitk.ReadImage(str(pair["moving"])), sitk.ReadImage(str(pair["fixed"]))
    translation = sitk.TranslationTransform(3, (-3.0, 0.0, 0.0))
    expected = sitk_array(sitk.Resample(moving, fixed, translation, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    index = moving_index_of_fixed_voxels(pair, np.eye(4), SHIFT_RAS)
    inside = interior(pair, index)
    scale = float(np.abs(expected).max())
    assert np.abs(warped[inside] - expected[inside]).max() < 1e-3 * scale

    # By hand: trilinear interpolation of MOVING at a few interior fixed voxels' shifted points.
    moving_data = np.asarray(load(pair["moving"]).dataobj)
    for voxel in [(49, 58, 47), (30, 70, 40), (62, 45, 60), (55, 80, 35)]:
        point = index[voxel]
        low = np.floor(point).astype(int)
        fraction = point - low
        value = 0.0
        for corner in np.ndindex(2, 2, 2):
            weight = np.prod(np.where(corner, fraction, 1 - fraction))
            value += weight * float(moving_data[tuple(low + corner)])
        assert warped[voxel] == pytest.approx(value, abs=1e-4 * scale)
    # And it is not MOVING sampled without the shift.
    unshifted = interior(pair, moving_index_of_fixed_voxels(pair, np.eye(4), np.zeros(3)))
    assert np.abs(warped[inside & unshifted] - expected[inside & unshifted]).max() < 1e-3 * scale


def test_batch_of_moving_images(pair: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = invoke(["register", str(pair["fixed"]), str(pair["moving"]), str(pair["second"]),
                                   "--plugin", "known-affine", "--output-dir", str(out), "--json"])
    assert code == 0, stderr
    assert json.loads(stdout)["summary"]["ok"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["moving_warped.nii.gz", "second_warped.nii.gz"]
    first, second = (load(out / name) for name in ("moving_warped.nii.gz", "second_warped.nii.gz"))
    for image in (first, second):
        assert image.shape == pair["fixed_data"].shape and np.array_equal(image.affine, pair["fixed_affine"])
    first_data, second_data = np.asarray(first.dataobj), np.asarray(second.dataobj)
    assert float(first_data.max()) > 0.5
    assert np.allclose(second_data, 2.0 * first_data, atol=1e-5)  # each output from its own input


def test_transform_with_two_moving_images_is_a_usage_error(pair: dict[str, Any], tmp_path: Path) -> None:
    code, stdout, stderr = invoke(["register", str(pair["fixed"]), str(pair["moving"]), str(pair["second"]),
                                   "--plugin", "known-affine", "--output-dir", str(tmp_path / "out"),
                                   "--transform", str(tmp_path / "t.tfm")])
    assert code == 2 and stdout == ""
    assert "--transform" in stderr and len(stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_transform_refusals_leave_no_output(pair: dict[str, Any], tmp_path: Path) -> None:
    warped, transform = tmp_path / "warped.nii.gz", tmp_path / "t.tfm"
    # A displacement field has no matrix to write: the case fails before the image is written.
    code, stdout, _ = invoke(["register", str(pair["fixed"]), str(pair["moving"]), "--plugin", "shift-right",
                              "-o", str(warped), "--transform", str(transform), "--json"])
    assert code == 1
    [record] = json.loads(stdout)["cases"]
    assert record["status"] == "failed" and "--transform needs a matrix" in record["error"]
    assert "internal error" not in record["error"]
    assert list(tmp_path.iterdir()) == []
    # An existing transform file is not overwritten, and nothing else is written either.
    transform.write_text("a transform someone keeps")
    code, stdout, _ = invoke(["register", str(pair["fixed"]), str(pair["moving"]), "--plugin", "known-affine",
                              "-o", str(warped), "--transform", str(transform), "--json"])
    assert code == 1
    [record] = json.loads(stdout)["cases"]
    assert "--overwrite" in record["error"] and record["output"] == str(transform)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.tfm"]
    assert transform.read_text() == "a transform someone keeps"


def test_output_over_the_fixed_image_is_refused_even_with_overwrite(pair: dict[str, Any], tmp_path: Path) -> None:
    fixed = tmp_path / "fixed.nii.gz"
    fixed.write_bytes(pair["fixed"].read_bytes())
    before = fixed.read_bytes()
    for target in ("-o", "--transform"):
        extra = ["-o", str(tmp_path / "w.nii.gz")] if target == "--transform" else []
        code, stdout, _ = invoke(["register", str(fixed), str(pair["moving"]), "--plugin", "known-affine",
                                  target, str(fixed), *extra, "--overwrite", "--json"])
        assert code == 1
        [record] = json.loads(stdout)["cases"]
        assert "over the input" in record["error"]
        assert fixed.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fixed.nii.gz"]


def test_corrupt_fixed_image_is_one_line(pair: dict[str, Any], tmp_path: Path) -> None:
    raw = pair["fixed"].read_bytes()
    corrupt = tmp_path / "fixed.nii.gz"
    corrupt.write_bytes(raw[: len(raw) // 2])
    code, stdout, stderr = invoke(["register", str(corrupt), str(pair["moving"]), "--plugin", "known-affine",
                                   "-d", str(tmp_path / "out")])
    assert code == 1 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and str(corrupt) in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out").exists()
