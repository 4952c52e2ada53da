"""``mitk warp --labels`` with an atlas of many labels: nilearn's MNI152 brain split into 116 parcels (as many
as AAL has) by k-means on voxel coordinates. Label-wise linear interpolation is checked against its definition
(each label's indicator interpolated, the largest wins: the per-label implementation it replaced) and against
SimpleITK's ``sitkLabelGaussian`` on the same input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import invoke, load
from scipy.spatial.transform import Rotation

FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


def parcellation(resolution: int, parcels: int = 116, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The MNI152 brain mask split into ``parcels`` labels by k-means on voxel coordinates; and the grid."""
    from nilearn.datasets import load_mni152_brain_mask
    from scipy.cluster.vq import kmeans2
    from scipy.spatial import cKDTree

    mask = load_mni152_brain_mask(resolution=resolution)
    inside = np.asarray(mask.get_fdata()) > 0.5
    points = np.argwhere(inside).astype(float)
    sample = points[np.random.default_rng(seed).choice(len(points), 20000, replace=False)]
    centres, _ = kmeans2(sample, parcels, iter=10, minit="++", seed=seed)
    _, nearest = cKDTree(centres).query(points)
    labels = np.zeros(inside.shape, np.int16)
    labels[inside] = nearest + 1
    return labels, np.asarray(mask.affine, float)


def moved(center: np.ndarray) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = 1.03 * Rotation.from_euler("xyz", [7.0, -5.0, 4.0], degrees=True).as_matrix()
    matrix[:3, 3] = center - matrix[:3, :3] @ center + np.array([3.3, -2.1, 1.7])
    return matrix


def per_label_reference(labels: np.ndarray, affine: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The definition, label by label (mitk's implementation before it became one pass): each label's 0/1
    indicator sampled trilinearly at ``matrix @ x`` for the voxels ``x`` of the same grid; the largest wins,
    ties to the smaller label; outside the volume is background."""
    shape = labels.shape
    voxels = np.indices(shape, dtype=np.float64).reshape(3, -1)
    world = affine[:3, :3] @ voxels + affine[:3, 3:]
    index = np.linalg.inv(affine) @ matrix @ np.vstack([world, np.ones(world.shape[1])])
    normalised = 2 * index[:3].T / (np.array(shape) - 1) - 1
    grid = torch.from_numpy(normalised[:, ::-1].copy()).float().reshape(1, *shape, 3)
    source = torch.from_numpy(labels.astype(np.float32))[None, None]
    best = np.full(shape, -1.0, np.float32)
    out = np.zeros(shape, labels.dtype)
    inside = np.all(np.abs(normalised) <= 1, axis=1).reshape(shape)
    for value in np.unique(labels):
        weight = torch.nn.functional.grid_sample((source == float(value)).float(), grid, mode="bilinear",
                                                 padding_mode="zeros", align_corners=True)[0, 0].numpy()
        if value == 0:
            weight = np.where(inside, weight, 1.0)
        better = weight > best
        best[better], out[better] = weight[better], value
    return out


@pytest.fixture(scope="module")
def atlas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("atlas")
    labels, affine = parcellation(resolution=2)
    nib.save(nib.Nifti1Image(labels, affine), root / "atlas.nii.gz")
    centre = affine @ np.append((np.array(labels.shape) - 1) / 2, 1.0)
    matrix = moved(centre[:3])
    (root / "t.json").write_text(__import__("json").dumps({"matrix_ras": matrix.tolist()}))
    code, _, stderr = invoke(["warp", str(root / "atlas.nii.gz"), "-t", str(root / "t.json"), "-r",
                              str(root / "atlas.nii.gz"), "-o", str(root / "warped.nii.gz"), "--labels"])
    assert code == 0, stderr
    return {"root": root, "labels": labels, "affine": affine, "matrix": matrix,
            "warped": np.asarray(load(root / "warped.nii.gz").dataobj)}


def test_the_atlas_has_over_a_hundred_labels(atlas: dict[str, Any]) -> None:
    assert len(np.unique(atlas["labels"])) == 117  # 116 parcels and background
    assert atlas["warped"].dtype == np.int16 and set(np.unique(atlas["warped"])) <= set(np.unique(atlas["labels"]))


def test_one_pass_equals_the_per_label_definition(atlas: dict[str, Any]) -> None:
    expected = per_label_reference(atlas["labels"], atlas["affine"], atlas["matrix"])
    agreement = (atlas["warped"] == expected).mean()
    assert agreement > 0.9999, agreement  # only float ties (exact half-way points) may round either way


def test_agrees_with_simpleitk_label_gaussian(atlas: dict[str, Any]) -> None:
    image = sitk.ReadImage(str(atlas["root"] / "atlas.nii.gz"))
    lps = FLIP @ atlas["matrix"] @ FLIP
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(lps[:3, :3].ravel().tolist())
    transform.SetTranslation(lps[:3, 3].tolist())
    expected = np.transpose(sitk.GetArrayFromImage(sitk.Resample(image, image, transform, sitk.sitkLabelGaussian,
                                                                 0)), (2, 1, 0))
    assert (atlas["warped"] == expected).mean() >= 0.99
    labelled = (atlas["warped"] > 0) | (expected > 0)
    assert (atlas["warped"] == expected)[labelled].mean() >= 0.95  # inside the brain too, not only background


def test_a_one_slice_label_map_and_no_background(tmp_path: Path) -> None:
    """Edge cases of the definition: an axis of one voxel, and a map with no 0 label (outside is still 0)."""
    from mitk.image import Image
    from mitk.runner.resample import resample_through

    labels = np.arange(1, 1 + 6 * 5).reshape(6, 5, 1).astype(np.int32)
    image = Image(array=labels, affine=np.eye(4))
    same = resample_through(image, image, lambda points: points, mode="labels")
    assert np.array_equal(same, labels)
    shifted = resample_through(image, image, lambda points: points + np.array([2.0, 0.0, 0.0]), mode="labels")
    assert np.array_equal(shifted[:4], labels[2:]) and not shifted[4:].any()
