"""The real images in tests/data: crops of the pyradiomics cases whose geometry is exactly the original's."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import TEST_DATA

from mitk.types import ras_to_lps

sys.path.insert(0, str(TEST_DATA))
from make_test_data import crop_affine

CROPS = json.loads((TEST_DATA / "crops.json").read_text(encoding="utf-8"))


def test_every_file_is_described_and_licensed() -> None:
    images = sorted(p.name for p in TEST_DATA.glob("*.nii.gz"))
    assert images == sorted(CROPS) == ["brain1_image.nii.gz", "brain1_label.nii.gz", "lung1_image.nii.gz",
                                       "lung1_label.nii.gz"]
    assert "Harvard Medical School" in (TEST_DATA / "LICENSE.txt").read_text(encoding="utf-8")
    readme = (TEST_DATA / "README.md").read_text(encoding="utf-8")
    assert all(name in readme for name in images)
    assert sum(p.stat().st_size for p in TEST_DATA.rglob("*") if p.is_file()) < 3_000_000  # stays light


@pytest.mark.parametrize(("folder", "holder"), [("itk", "Apache License"), ("nibabel", "Matthew Brett"),
                                                ("itk_formats", "Apache License")])
def test_every_borrowed_folder_is_described_and_licensed(folder: str, holder: str) -> None:
    files = sorted(p.name for p in (TEST_DATA / folder).iterdir() if p.name != "LICENSE.txt"
                   and not p.name.startswith("."))  # .gitattributes
    assert files
    assert holder in (TEST_DATA / folder / "LICENSE.txt").read_text(encoding="utf-8")
    readme = (TEST_DATA / "README.md").read_text(encoding="utf-8")
    assert all(name in readme for name in files), files


def test_crop_affine_moves_the_origin_to_the_first_kept_voxel() -> None:
    affine = np.array([[-0.5, 0.1, 0, 10], [0, 0.5, 0.2, -20], [0.1, 0, 5, 30], [0, 0, 0, 1]])
    cropped = crop_affine(affine, (7, 3, 2))
    for voxel in ([0, 0, 0], [1, 2, 3], [10, 0, 5]):
        np.testing.assert_allclose(nib.affines.apply_affine(cropped, voxel),
                                   nib.affines.apply_affine(affine, np.add(voxel, (7, 3, 2))), atol=1e-12)


@pytest.mark.parametrize("name", sorted(CROPS))
def test_crop_keeps_the_original_geometry(name: str) -> None:
    record = CROPS[name]
    image = nib.load(TEST_DATA / name)
    assert list(image.shape) == record["shape"]
    assert image.shape[2] == record["source_shape"][2]  # every slice kept
    assert str(image.get_data_dtype()) == record["dtype"]
    expected = crop_affine(np.asarray(record["source_affine"]), tuple(record["offset"]))
    np.testing.assert_array_equal(image.affine, expected)
    np.testing.assert_allclose(image.header.get_qform(), expected, atol=1e-5)  # qform and sform agree
    # The crop's voxel (0, 0, 0) is the original's voxel at the offset, in world millimetres.
    np.testing.assert_allclose(image.affine @ [0, 0, 0, 1],
                               np.asarray(record["source_affine"]) @ [*record["offset"], 1], atol=1e-9)
    if "source_foreground_voxels" in record:
        labels = np.asanyarray(image.dataobj)
        assert np.count_nonzero(labels) == record["source_foreground_voxels"]  # the whole lesion is inside
        assert set(np.unique(labels)) == {0, 1}


@pytest.mark.parametrize("name", sorted(CROPS))
def test_simpleitk_reads_the_same_grid_and_values(name: str) -> None:
    image = nib.load(TEST_DATA / name)
    itk = sitk.ReadImage(str(TEST_DATA / name))
    lps = np.eye(4)
    lps[:3, :3] = np.array(itk.GetDirection()).reshape(3, 3) * np.array(itk.GetSpacing())
    lps[:3, 3] = itk.GetOrigin()
    np.testing.assert_allclose(ras_to_lps(lps), image.affine, atol=1e-5)
    array = np.transpose(sitk.GetArrayFromImage(itk), (2, 1, 0))
    assert np.array_equal(array, np.asanyarray(image.dataobj))


def test_image_and_label_share_a_grid() -> None:
    for case in ("brain1", "lung1"):
        image, label = (nib.load(Path(TEST_DATA) / f"{case}_{part}.nii.gz") for part in ("image", "label"))
        assert image.shape == label.shape
        np.testing.assert_array_equal(image.affine, label.affine)
