"""The built-in ``deformable`` plugin on real anatomy: a block of the MNI152 T1 (2 mm) under a smooth known
deformation. Registration must raise the grey-matter Dice, fold no voxel, and write a displacement field that
SimpleITK reads as a ``DisplacementFieldTransform`` and resamples to the image mitk wrote."""

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

BLOCK = (slice(16, 80), slice(24, 104), slice(22, 78))
"""A 64 × 80 × 56 block of the 2 mm template: most of the brain, small enough for a quick test."""

FAST = ("--set", "affine.iterations=[30,15,8]", "--set", "affine.samples=5000", "--set", "iterations=[40,25]",
        "--set", "levels=[4,2]")


@pytest.fixture(scope="module", autouse=True)
def one_thread(single_threaded_torch: None) -> None:
    """Small tensors: one torch thread is faster on a shared CPU."""


@pytest.fixture(scope="module")
def case(mni_t1_2mm: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from nilearn.datasets import load_mni152_gm_mask

    root = tmp_path_factory.mktemp("deformable")
    template = load(mni_t1_2mm)
    data = np.asarray(template.get_fdata(), np.float32)[BLOCK]
    affine = np.asarray(template.affine, float).copy()
    affine[:3, 3] = (affine @ np.array([BLOCK[0].start, BLOCK[1].start, BLOCK[2].start, 1.0]))[:3]
    grey = (np.asarray(load_mni152_gm_mask(resolution=2).get_fdata()) > 0.5)[BLOCK].astype(np.float32)
    rng = np.random.default_rng(3)
    field = np.stack([ndimage.gaussian_filter(rng.standard_normal(data.shape), 6.0) for _ in range(3)], axis=-1)
    field *= 8.0 / np.abs(field).max()  # mm, peak 8 mm, smooth on a scale of 12 mm
    sources = np.indices(data.shape) + np.moveaxis(field, -1, 0) / 2.0  # moving(x) = fixed(x + u(x))
    moving = ndimage.map_coordinates(data, sources, order=1).astype(np.float32)
    moving_grey = ndimage.map_coordinates(grey, sources, order=1) > 0.5
    for name, array in (("fixed", data), ("moving", moving), ("fixed_gm", (grey > 0.5).astype(np.int16)),
                        ("moving_gm", moving_grey.astype(np.int16))):
        nib.save(nib.Nifti1Image(array, affine), root / f"{name}.nii.gz")
    code, stdout, stderr = invoke(["register", str(root / "fixed.nii.gz"), str(root / "moving.nii.gz"),
                                   "--plugin", "deformable", "-o", str(root / "warped.nii.gz"),
                                   "--transform", str(root / "field.nii.gz"), *FAST, "--json"])
    assert code == 0, stderr
    return {"root": root, "record": json.loads(stdout)["cases"][0]}


def dice(root: Path, warped: str) -> float:
    code, stdout, stderr = invoke(["evaluate", "register", "--warped-labels", str(root / warped),
                                   "--fixed-labels", str(root / "fixed_gm.nii.gz"), "--json"])
    assert code == 0, stderr
    return float(json.loads(stdout)["dice"]["per_label"]["1"])


def test_grey_matter_dice_rises_without_folding(case: dict[str, Any]) -> None:
    root = case["root"]
    code, _, stderr = invoke(["warp", str(root / "moving_gm.nii.gz"), "-t", str(root / "field.nii.gz"),
                              "-r", str(root / "fixed.nii.gz"), "-o", str(root / "warped_gm.nii.gz"), "--labels"])
    assert code == 0, stderr
    before, after = dice(root, "moving_gm.nii.gz"), dice(root, "warped_gm.nii.gz")
    assert before < 0.95 and after > before + 0.025, (before, after)  # 0.946 → 0.975
    code, stdout, stderr = invoke(["evaluate", "register", "-t", str(root / "field.nii.gz"), "--json"])
    assert code == 0, stderr
    [jacobian] = json.loads(stdout)["jacobian"].values()
    assert jacobian["folding_voxels"] == 0 and jacobian["min"] > 0
    report = case["record"]["registration"]
    assert report["iterations"] == [40, 25] and len(report["affine"]["iterations"]) == 3


def test_simpleitk_reads_the_field_and_resamples_to_the_same_image(case: dict[str, Any]) -> None:
    root = case["root"]
    field = sitk.ReadImage(str(root / "field.nii.gz"))
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    fixed = sitk.ReadImage(str(root / "fixed.nii.gz"), sitk.sitkFloat32)
    moving = sitk.ReadImage(str(root / "moving.nii.gz"), sitk.sitkFloat32)
    expected = np.transpose(sitk.GetArrayFromImage(sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0)),
                            (2, 1, 0))
    warped = np.asarray(load(root / "warped.nii.gz").dataobj)
    inner = (slice(3, -3),) * 3
    scale = float(np.abs(expected).max())
    assert np.abs(warped[inner] - expected[inner]).max() < 2e-3 * scale
    fixed_data = np.asarray(load(root / "fixed.nii.gz").dataobj)
    before = np.abs(np.asarray(load(root / "moving.nii.gz").dataobj) - fixed_data).mean()
    assert np.abs(warped - fixed_data).mean() < 0.6 * before


def test_a_field_cannot_be_written_as_tfm(case: dict[str, Any], tmp_path: Path) -> None:
    root = case["root"]
    code, stdout, _ = invoke(["register", str(root / "fixed.nii.gz"), str(root / "moving.nii.gz"), "--plugin",
                              "deformable", "-o", str(tmp_path / "w.nii.gz"), "--transform", str(tmp_path / "t.tfm"),
                              "--set", "iterations=[1,1]", "--json"])
    assert code == 1
    assert ".nii.gz" in json.loads(stdout)["cases"][0]["error"]
    assert list(tmp_path.iterdir()) == []
