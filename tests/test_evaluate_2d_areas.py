"""``mitk evaluate segment`` on one-slice label maps reports areas in mm² (with the pixel spacing's source, and a
note when a PNG has none, so 1 mm is assumed), never mL; 3-D label maps keep their volumes in mL. Real images:
scikit-image's retinal microaneurysm crop (PNG, no spacing) and a slice of pyradiomics' brain MR (0.78 mm)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import invoke
from PIL import Image as Picture

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def masks() -> tuple[np.ndarray, np.ndarray]:
    """A reference mask from a real photograph (the darkest quarter of the microaneurysm crop) and a prediction
    one pixel off."""
    import skimage.data

    picture = skimage.data.microaneurysms().astype(np.float64)
    reference = (picture < np.percentile(picture, 25)).astype(np.uint8)
    return reference, np.roll(reference, 1, axis=0)


def test_png_masks_get_areas_in_mm2_with_the_assumed_spacing_said(masks, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    reference, prediction = masks
    Picture.fromarray(reference).save(tmp_path / "ref.png")
    Picture.fromarray(prediction).save(tmp_path / "pred.png")
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = invoke(["evaluate", "segment", "--pred", "pred.png", "--ref", "ref.png", "--json"])
    assert code == 0, stderr
    [case] = json.loads(stdout)["cases"]
    [row] = case["labels"]
    assert case["spacing_source"] == "unknown (1 mm assumed)"
    assert row["reference_area_mm2"] == int(reference.sum()) and row["predicted_area_mm2"] == int(prediction.sum())
    assert row["reference_volume_ml"] is None and row["predicted_volume_ml"] is None
    monkeypatch.setenv("COLUMNS", "400")
    code, stdout, stderr = invoke(["evaluate", "segment", "--pred", "pred.png", "--ref", "ref.png",
                                   "--csv", "scores.csv"])
    assert code == 0, stderr
    header = stdout.splitlines()[0]
    assert "Ref mm²" in header and "Pred mm²" in header and "mL" not in stdout
    assert f"{float(reference.sum()):.1f}" in stdout
    assert "ref.png: no pixel spacing in the file; 1 mm assumed" in stderr
    columns = (tmp_path / "scores.csv").read_text().splitlines()[0].split(",")
    assert columns[-2:] == ["reference_area_mm2", "predicted_area_mm2"]


def test_a_slice_with_spacing_gets_its_own_pixel_area_and_volumes_stay_ml(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    label = nib.load(DATA / "brain1_label.nii.gz")
    array = np.asarray(label.dataobj).astype(np.uint8)
    middle = int(np.argmax(array.sum(axis=(0, 1))))
    nib.Nifti1Image(array[:, :, middle:middle + 1], label.affine).to_filename(tmp_path / "slice.nii.gz")
    monkeypatch.chdir(tmp_path)
    spacing = np.linalg.norm(label.affine[:3, :3], axis=0)
    code, stdout, stderr = invoke(["evaluate", "segment", "--pred", "slice.nii.gz", "--ref", "slice.nii.gz",
                                   "--json"])
    assert code == 0, stderr
    [case] = json.loads(stdout)["cases"]
    [row] = case["labels"]
    pixels = int((array[:, :, middle] == 1).sum())
    assert row["reference_area_mm2"] == pytest.approx(pixels * spacing[0] * spacing[1], rel=1e-6)
    assert row["reference_volume_ml"] is None and case["spacing_source"] == "file header"
    code, stdout, stderr = invoke(["evaluate", "segment", "--pred", str(DATA / "brain1_label.nii.gz"),
                                   "--ref", str(DATA / "brain1_label.nii.gz"), "--json"])
    assert code == 0, stderr
    [case] = json.loads(stdout)["cases"]
    [row] = case["labels"]
    voxels = int((array == 1).sum())
    assert row["reference_volume_ml"] == pytest.approx(voxels * float(np.prod(spacing)) / 1000, rel=1e-5)
    assert row["reference_area_mm2"] is None and case["spacing_source"] is None
