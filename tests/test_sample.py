"""`mitk sample segment`: a Decathlon-form training set from real MNI152 anatomy, deterministic per seed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from mitk.cli import app
from mitk.errors import OutputExistsError, UsageError
from mitk.sample import make_segmentation_sample, split_counts


def load_nifti(path: Path) -> Any:
    """``nibabel.load``, typed loosely (its stubs name a base class without affine or dataobj)."""
    return nib.load(path)


CASES, SIZE, SEED = 4, 32, 7


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_segmentation_sample(tmp_path_factory.mktemp("sample") / "brain", CASES, SIZE, SEED, "brain")


def entries(dataset: Path) -> list[dict[str, str]]:
    document = json.loads(dataset.read_text())
    return [entry for key in ("training", "validation", "test") for entry in document[key]]


def test_datalist_loads_with_monai(sample: Path) -> None:
    from monai.data import load_decathlon_datalist

    document = json.loads(sample.read_text())
    assert document["labels"] == {"0": "background", "1": "brain"}
    sizes = {}
    for key in ("training", "validation", "test"):
        items = load_decathlon_datalist(sample, is_segmentation=True, data_list_key=key)
        sizes[key] = len(items)
        for item in items:
            assert Path(item["image"]).is_file() and Path(item["label"]).is_file()
            assert ("imagesTs" in item["image"]) == (key == "test")
    assert sizes == {"training": 2, "validation": 1, "test": 1}
    assert split_counts(12) == (8, 2, 2)
    assert document["numTraining"] == 3 and document["numTest"] == 1


def test_labels_on_image_grid_and_cases_differ(sample: Path) -> None:
    affines = []
    for entry in entries(sample):
        image = load_nifti(sample.parent / entry["image"])
        label = load_nifti(sample.parent / entry["label"])
        assert image.shape == label.shape == (SIZE, SIZE, SIZE)
        assert np.array_equal(image.affine, label.affine)
        assert image.get_data_dtype() == np.int16 and label.get_data_dtype() == np.uint8
        values = np.asanyarray(label.dataobj)
        assert set(np.unique(values)) == {0, 1}
        assert 0.05 < values.mean() < 0.6
        affines.append(image.affine)
    for a in range(len(affines)):
        for b in range(a + 1, len(affines)):
            assert not np.allclose(affines[a], affines[b])
    assert len({nib.aff2axcodes(a) for a in affines}) > 1  # stored axis orders differ too


def test_same_seed_gives_identical_files(sample: Path, tmp_path: Path) -> None:
    again = make_segmentation_sample(tmp_path / "again", CASES, SIZE, SEED, "brain")
    files = sorted(p.relative_to(sample.parent) for p in sample.parent.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again.parent) for p in again.parent.rglob("*") if p.is_file())
    for name in files:
        assert (sample.parent / name).read_bytes() == (again.parent / name).read_bytes(), name
    other = make_segmentation_sample(tmp_path / "other", CASES, SIZE, SEED + 1, "brain")
    first = "imagesTr/case_000.nii.gz"
    assert (other.parent / first).read_bytes() != (sample.parent / first).read_bytes()
    with pytest.raises(OutputExistsError):
        make_segmentation_sample(tmp_path / "again", CASES, SIZE, SEED, "brain")
    with pytest.raises(UsageError):
        make_segmentation_sample(tmp_path / "few", 2, SIZE, SEED, "brain")


def test_images_are_real_anatomy_resampled_back_with_simpleitk(sample: Path) -> None:
    """SimpleITK, an independent reader and resampler, undoes each case's recorded transform."""
    import SimpleITK as sitk
    from nilearn import datasets

    template = datasets.load_mni152_template(resolution=2)
    mask = datasets.load_mni152_brain_mask(resolution=2)
    template_path = sample.parent.parent / "mni.nii.gz"
    template.to_filename(template_path)
    fixed = sitk.ReadImage(str(template_path))
    reference = sitk.GetArrayFromImage(fixed).astype(float)
    reference_mask = np.asarray(mask.get_fdata()).transpose(2, 1, 0) > 0.5
    transforms = json.loads(sample.read_text())["mitk_sample"]["template_from_case"]
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    for entry in entries(sample):
        name = Path(entry["image"]).name.split(".")[0]
        # template world → case world, in ITK's LPS convention.
        case_from_template = lps @ np.linalg.inv(np.asarray(transforms[name])) @ lps
        transform = sitk.AffineTransform(3)
        transform.SetMatrix(case_from_template[:3, :3].ravel().tolist())
        transform.SetTranslation(case_from_template[:3, 3].tolist())
        image = sitk.ReadImage(str(sample.parent / entry["image"]), sitk.sitkFloat32)
        label = sitk.ReadImage(str(sample.parent / entry["label"]))
        back = sitk.GetArrayFromImage(sitk.Resample(image, fixed, transform, sitk.sitkLinear, -1.0))
        label_back = sitk.GetArrayFromImage(sitk.Resample(label, fixed, transform, sitk.sitkNearestNeighbor, 255))
        inside = back >= 0
        assert inside.mean() > 0.5
        correlation = np.corrcoef(back[inside], reference[inside])[0, 1]
        assert correlation > 0.9, name  # about 0.98; a wrong affine gives about 0.7
        covered = label_back != 255
        brain = (label_back == 1) & covered
        dice = 2 * np.count_nonzero(brain & reference_mask) / (np.count_nonzero(brain) +
                                                                  np.count_nonzero(reference_mask & covered))
        assert dice > 0.85, name


def test_image_and_label_agree(sample: Path) -> None:
    """The brain task is learnable: an Otsu threshold of each image already matches its label."""
    from skimage.filters import threshold_otsu

    for entry in entries(sample):
        image = np.asanyarray(load_nifti(sample.parent / entry["image"]).dataobj).astype(float)
        label = np.asanyarray(load_nifti(sample.parent / entry["label"]).dataobj) > 0
        mask = image > threshold_otsu(image)
        assert 2 * np.count_nonzero(mask & label) / (np.count_nonzero(mask) + np.count_nonzero(label)) > 0.85


def test_tissue_task_and_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["sample", "segment", "--output-dir", str(tmp_path), "--cases", "3", "--size", "24", "--task",
            "tissue", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["labels"] == {"0": "background", "1": "grey matter", "2": "white matter"}
    assert (summary["training"], summary["validation"], summary["test"]) == (1, 1, 1)
    label = np.asanyarray(load_nifti(tmp_path / "labelsTr" / "case_000.nii.gz").dataobj)
    counts = np.bincount(label.ravel(), minlength=3)
    assert counts.size == 3 and counts[1] > counts[2] > 0.02 * label.size  # more grey than white matter
    refused = runner.invoke(app, args)
    assert refused.exit_code != 0
    bad = runner.invoke(app, ["sample", "segment", "--output-dir", str(tmp_path / "x"), "--task", "lungs"])
    assert bad.exit_code == 2
