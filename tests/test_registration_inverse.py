"""Inverse transforms as ANTs users expect them: ``mitk register --transform`` writes the inverse beside the
forward transform, ``--inverse-warped`` the fixed image on the moving grid, ``mitk warp --invert`` applies a
chain inverted; ``--preview`` draws a checkerboard and edges. SimpleITK is the oracle (its ``GetInverse`` for a
matrix, ``InvertDisplacementField`` for a field), on real anatomy (nilearn's MNI152 T1 at 2 mm)."""

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


def itk_matrix(transform: Any) -> np.ndarray:
    """The RAS 4×4 matrix of a SimpleITK affine-family transform (as read from a file)."""
    affine = sitk.AffineTransform(transform)
    lps = np.eye(4)
    lps[:3, :3] = np.reshape(affine.GetMatrix(), (3, 3))
    centre, translation = np.asarray(affine.GetCenter()), np.asarray(affine.GetTranslation())
    lps[:3, 3] = translation + centre - lps[:3, :3] @ centre
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ lps @ flip


@pytest.fixture(scope="module")
def case(mni_t1_2mm: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """FIXED (MNI T1 2 mm), MOVING (it through a known affine on a tilted grid), and their affine registration
    with the transform as .tfm, the inverse-warped fixed image and a preview."""
    root = tmp_path_factory.mktemp("inverse")
    fixed = load(mni_t1_2mm)
    moved_copy(np.asarray(fixed.get_fdata(), np.float32), np.asarray(fixed.affine, float), known_affine(),
               root / "moving.nii.gz")
    code, stdout, stderr = invoke(["register", str(mni_t1_2mm), str(root / "moving.nii.gz"), "--plugin", "affine",
                                   "-o", str(root / "warped.nii.gz"), "--transform", str(root / "t.tfm"),
                                   "--inverse-warped", "--preview", "--set", "iterations=[50,25,12]",
                                   "--set", "samples=8000", "--json"])
    assert code == 0, stderr
    return {"root": root, "fixed": mni_t1_2mm, "record": json.loads(stdout)["cases"][0]}


def test_affine_inverse_is_simpleitks_inverse(case: dict[str, Any]) -> None:
    root = case["root"]
    assert case["record"]["inverse_transform"] == str(root / "t_inverse.tfm")
    forward = sitk.ReadTransform(str(root / "t.tfm"))
    inverse = sitk.ReadTransform(str(root / "t_inverse.tfm"))
    np.testing.assert_allclose(itk_matrix(inverse), itk_matrix(forward.GetInverse()), atol=1e-9)
    np.testing.assert_allclose(itk_matrix(inverse) @ np.asarray(case["record"]["matrix_ras"]), np.eye(4),
                               atol=1e-9)


def test_inverse_warped_matches_simpleitk(case: dict[str, Any]) -> None:
    root = case["root"]
    assert case["record"]["inverse_warped"] == str(root / "warped_inverse_warped.nii.gz")
    mine = load(root / "warped_inverse_warped.nii.gz")
    moving = load(root / "moving.nii.gz")
    assert mine.shape == moving.shape and np.array_equal(mine.affine, moving.affine)  # the moving grid, exactly
    expected = sitk.Resample(sitk.ReadImage(str(case["fixed"]), sitk.sitkFloat32),
                             sitk.ReadImage(str(root / "moving.nii.gz")),
                             sitk.ReadTransform(str(root / "t.tfm")).GetInverse(), sitk.sitkLinear, 0.0,
                             sitk.sitkFloat32)
    expected_array = np.transpose(sitk.GetArrayFromImage(expected), (2, 1, 0))
    inner = np.zeros(mine.shape, bool)
    inner[3:-3, 3:-3, 3:-3] = True
    error = np.abs(np.asarray(mine.get_fdata())[inner] - expected_array[inner])
    assert error.max() < 1e-3 * float(np.abs(expected_array).max())
    # the moving image and the fixed image brought onto its grid agree far better than unregistered
    moving_array = np.asarray(moving.get_fdata())
    head = moving_array > 0.2 * moving_array.max()
    assert np.corrcoef(moving_array[head], np.asarray(mine.get_fdata())[head])[0, 1] > 0.9


def test_warp_invert_equals_the_inverse_file_and_inverse_warped(case: dict[str, Any], tmp_path: Path) -> None:
    root = case["root"]
    outputs = {}
    for name, arguments in (("invert", ["-t", str(root / "t.tfm"), "--invert"]),
                            ("file", ["-t", str(root / "t_inverse.tfm")])):
        code, _, stderr = invoke(["warp", str(case["fixed"]), *arguments, "-r", str(root / "moving.nii.gz"),
                                  "-o", str(tmp_path / f"{name}.nii.gz")])
        assert code == 0, stderr
        outputs[name] = np.asarray(load(tmp_path / f"{name}.nii.gz").dataobj)
    np.testing.assert_allclose(outputs["invert"], outputs["file"], atol=1e-4)
    np.testing.assert_allclose(outputs["invert"], np.asarray(load(case["record"]["inverse_warped"]).dataobj),
                               atol=1e-3)


def test_mat_files_are_itks(tmp_path: Path) -> None:
    """ANTs' ``*GenericAffine.mat`` (ITK's MATLAB transform file): written and read as SimpleITK does."""
    from mitk.io.transforms import read_transform, write_matrix

    matrix = known_affine()
    write_matrix(matrix, tmp_path / "mine.mat")
    np.testing.assert_allclose(itk_matrix(sitk.ReadTransform(str(tmp_path / "mine.mat"))), matrix, atol=1e-9)
    theirs = sitk.AffineTransform(3)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ matrix @ np.diag([-1.0, -1.0, 1.0, 1.0])
    theirs.SetMatrix(lps[:3, :3].ravel().tolist())
    theirs.SetCenter((10.0, -20.0, 30.0))
    theirs.SetTranslation(tuple((lps[:3, 3] - (np.eye(3) - lps[:3, :3]) @ np.array([10.0, -20.0, 30.0])).tolist()))
    sitk.WriteTransform(theirs, str(tmp_path / "theirs.mat"))
    assert read_transform(tmp_path / "theirs.mat").matrix is not None
    np.testing.assert_allclose(read_transform(tmp_path / "theirs.mat").matrix, matrix, atol=1e-9)
    (tmp_path / "bad.mat").write_bytes(b"not a matlab file")
    code, _, stderr = invoke(["warp", str(tmp_path / "bad.mat"), "-t", str(tmp_path / "bad.mat"), "-r",
                              str(tmp_path / "bad.mat"), "-o", str(tmp_path / "out.nii.gz")])
    assert code != 0 and "bad.mat" in stderr and len(stderr.strip().splitlines()) == 1


def test_preview_is_a_png_beside_the_output(case: dict[str, Any]) -> None:
    from PIL import Image as PILImage

    path = Path(case["record"]["preview"])
    assert path == case["root"] / "warped_preview.png"
    with PILImage.open(path) as image:
        assert image.format == "PNG" and image.size == (1200, 800)
        pixels = np.asarray(image.convert("RGB"), float)
    assert pixels.std() > 10 and (pixels[..., 0] > pixels[..., 1] + 80).sum() > 500  # grey views, red edges


def test_checkerboard_and_edges() -> None:
    from mitk.tasks.register.preview import checkerboard, edges

    first, second = np.zeros((16, 16)), np.ones((16, 16))
    board = checkerboard(first, second, tiles=4)
    assert board[0, 0] == 0 and board[0, 4] == 1 and board[4, 4] == 0 and board.mean() == 0.5
    square = np.zeros((20, 20))
    square[5:15, 5:15] = 1
    found = edges(square)
    assert found[5, 10] and found[14, 10] and not found[10, 10] and not found[0, 0]
    assert not edges(np.ones((8, 8))).any()


def smooth_field(shape: tuple[int, ...], amplitude: float, seed: int = 0, sigma: float = 6.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), sigma) for _ in range(3)], axis=-1)
    return field * amplitude / np.abs(field).max()


@pytest.fixture(scope="module")
def mni_4mm(mni_t1_2mm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MNI152 T1 at 4 mm (a zoom of the 2 mm template): a small real fixed image."""
    path = tmp_path_factory.mktemp("mni4") / "mni4.nii.gz"
    template = load(mni_t1_2mm)
    small = ndimage.zoom(np.asarray(template.get_fdata(), np.float32), 0.5, order=1)
    nib.save(nib.Nifti1Image(small, template.affine @ np.diag([2.0, 2.0, 2.0, 1.0])), path)
    return path


def test_field_inverse_agrees_with_simpleitk(mni_4mm: Path, tmp_path: Path) -> None:
    """A smooth 6 mm warp on the MNI grid (4 mm): mitk's inverse against ``sitk.InvertDisplacementField`` on the
    same grid, and forward ∘ inverse = identity to 0.01 mm."""
    mni_t1_2mm = mni_4mm
    from mitk.io.reader import load_image
    from mitk.io.transforms import read_transform, write_displacement_field
    from mitk.runner.invert import Seeds, inverse_field

    fixed = load_image(mni_t1_2mm)
    shape = fixed.spatial_shape
    write_displacement_field(smooth_field(shape, 6.0, sigma=3.0), fixed, tmp_path / "forward.nii.gz")
    forward = read_transform(tmp_path / "forward.nii.gz")
    assert forward.field is not None
    seeds = Seeds(forward.apply, fixed.affine, shape)
    inverse, report = inverse_field(forward.apply, forward.fitted_matrix(), fixed.affine, shape, seeds=seeds)
    field = sitk.Cast(sitk.ReadImage(str(tmp_path / "forward.nii.gz")), sitk.sitkVectorFloat64)
    expected = sitk.InvertDisplacementField(field, 50, 0.001, 0.0001, False)
    expected_ras = np.transpose(sitk.GetArrayFromImage(expected), (2, 1, 0, 3)) * np.array([-1.0, -1.0, 1.0])
    inner = (slice(4, -4),) * 3
    assert np.linalg.norm(inverse[inner] - expected_ras[inner], axis=-1).max() < 0.05  # both stop near 0.01 mm
    voxels = np.indices(shape).reshape(3, -1)
    world = (fixed.affine[:3, :3] @ voxels + fixed.affine[:3, 3:]).T
    round_trip = forward.apply(world + inverse.reshape(-1, 3)) - world
    values = np.asarray(fixed.array).reshape(-1)
    brain = values > 0.3 * values.max()
    assert np.linalg.norm(round_trip[brain], axis=1).max() < 0.011
    assert report.points == int(np.prod(shape)) and report.mean_error_mm < 0.05


@pytest.mark.slow  # a deformable registration: about 100 s of CPU
def test_deformable_inverse_is_consistent_on_a_real_pair(tmp_path: Path, mni_4mm: Path) -> None:
    """nibabel's someones_anatomy (moving, 2.75 mm) onto the MNI152 T1 (fixed) with the deformable plugin: the
    inverse field (on the moving grid) read back by SimpleITK undoes the forward within 0.1 voxel in the brain."""
    data = Path(__file__).parent / "data" / "nibabel"
    fixed = mni_4mm
    code, stdout, stderr = invoke(["register", str(fixed), str(data / "someones_anatomy.nii.gz"), "--plugin",
                                   "deformable", "-o", str(tmp_path / "warped.nii.gz"), "--transform",
                                   str(tmp_path / "w.nii.gz"), "--inverse-warped", "--json"])
    assert code == 0, stderr
    record = json.loads(stdout)["cases"][0]
    assert record["inverse_transform"] == str(tmp_path / "w_inverse.nii.gz")
    moving = load(data / "someones_anatomy.nii.gz")
    inverse_file = load(tmp_path / "w_inverse.nii.gz")
    assert inverse_file.shape[:3] == moving.shape[:3] and np.allclose(inverse_file.affine, moving.affine)
    to_moving = sitk.DisplacementFieldTransform(sitk.Cast(sitk.ReadImage(str(tmp_path / "w.nii.gz")),
                                                          sitk.sitkVectorFloat64))
    to_fixed = sitk.DisplacementFieldTransform(sitk.Cast(sitk.ReadImage(str(tmp_path / "w_inverse.nii.gz")),
                                                         sitk.sitkVectorFloat64))
    brain = np.asarray(load(data / "someones_anatomy_brain.nii.gz").dataobj) > 0
    voxels = np.argwhere(brain)[::7]
    points = voxels @ moving.affine[:3, :3].T + moving.affine[:3, 3]
    errors = []
    for point in points:
        there = to_fixed.TransformPoint(tuple(FLIP3 @ point))
        back = FLIP3 @ np.asarray(to_moving.TransformPoint(there))
        errors.append(np.linalg.norm(back - point))
    assert np.max(errors) < 0.275, (np.max(errors), record["inverse"])  # a tenth of a moving voxel
    assert record["inverse"]["inverse_max_error_mm"] >= 0 and record["inverse"]["inverse_mean_error_mm"] < 0.5
    warped_back = load(tmp_path / "warped_inverse_warped.nii.gz")
    assert warped_back.shape == moving.shape and np.array_equal(warped_back.affine, moving.affine)


def test_warp_invert_of_a_field_matches_simpleitk(mni_4mm: Path, tmp_path: Path) -> None:
    """``mitk warp --invert -t field`` resamples as SimpleITK does through ``InvertDisplacementField``'s inverse."""
    from mitk.io.reader import load_image
    from mitk.io.transforms import write_displacement_field

    fixed = load_image(mni_4mm)
    write_displacement_field(smooth_field(fixed.spatial_shape, 5.0, seed=1, sigma=3.0), fixed,
                             tmp_path / "field.nii.gz")
    code, stdout, stderr = invoke(["warp", str(mni_4mm), "-t", str(tmp_path / "field.nii.gz"), "--invert", "-r",
                                   str(mni_4mm), "-o", str(tmp_path / "inverted.nii.gz"), "--json"])
    assert code == 0, stderr
    record = json.loads(stdout)
    assert record["invert"] and record["inverse_mean_error_mm"] < 0.05
    field = sitk.Cast(sitk.ReadImage(str(tmp_path / "field.nii.gz")), sitk.sitkVectorFloat64)
    inverse = sitk.DisplacementFieldTransform(sitk.InvertDisplacementField(field, 50, 0.001, 0.0001, False))
    image = sitk.ReadImage(str(mni_4mm), sitk.sitkFloat32)
    expected = np.transpose(sitk.GetArrayFromImage(sitk.Resample(image, image, inverse, sitk.sitkLinear, 0.0,
                                                                 sitk.sitkFloat32)), (2, 1, 0))
    mine = np.asarray(load(tmp_path / "inverted.nii.gz").get_fdata())
    inner = (slice(4, -4),) * 3
    assert np.abs(mine[inner] - expected[inner]).max() < 0.01 * float(np.abs(expected).max())
