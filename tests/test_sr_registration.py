"""TID 1500 SR of a registration's quality (``mitk register --dicom-sr``) on real anatomy written as DICOM: the
moving series is the fixed one moved by a known shift, in another study; the figures say what happened, the
SR references both series and passes dciodvfy."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest
from dicom_factory import load_nifti, orient_volume, write_series
from helpers import invoke

DCIODVFY = shutil.which("dciodvfy")
SHIFT = np.array([6.0, -4.0, 2.0])  # mm, RAS: where the anatomy of the moving series lies


@pytest.fixture(scope="module")
def pair(anatomical_t1: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("register_sr")
    array, affine = load_nifti(anatomical_t1)
    oriented, oriented_affine = orient_volume(array, affine, "axial")
    moved = oriented_affine.copy()
    moved[:3, 3] += SHIFT
    fixed = write_series(oriented, oriented_affine, folder / "fixed", series_number=1).directory
    moving = write_series(oriented, moved, folder / "moving", series_number=2, seed=1).directory
    mask = (oriented > np.percentile(oriented, 60)).astype(np.uint8)
    nib.save(nib.Nifti1Image(mask, oriented_affine), folder / "fixed_mask.nii.gz")
    nib.save(nib.Nifti1Image(mask, moved), folder / "moving_mask.nii.gz")
    return {"fixed": fixed, "moving": moving, "fixed_mask": folder / "fixed_mask.nii.gz",
            "moving_mask": folder / "moving_mask.nii.gz", "folder": folder}


def figures_of(path: str | Path) -> dict[str, float]:
    sr = hd.sr.srread(path)
    [measurements] = [item for item in sr.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "126010"]
    [group] = measurements.ContentSequence
    return {item.ConceptNameCodeSequence[0].CodeMeaning: float(item.MeasuredValueSequence[0].NumericValue)
            for item in group.ContentSequence if item.ValueType == "NUM"}


def test_register_dicom_sr(pair: dict[str, Path]) -> None:
    out = pair["folder"] / "out"
    code, _, stderr = invoke(["register", str(pair["fixed"]), str(pair["moving"]), "--plugin", "affine", "--set",
                              "transform=rigid", "--fixed-mask",
                              str(pair["fixed_mask"]), "--moving-mask", str(pair["moving_mask"]), "--dicom-sr",
                              "-d", str(out), "--manifest", str(pair["folder"] / "register.jsonl")])
    assert code == 0, stderr
    [sr_path] = out.glob("*_sr.dcm")
    figures = figures_of(sr_path)
    assert figures["Displacement of the fixed image centre"] == pytest.approx(float(np.linalg.norm(SHIFT)), abs=1.0)
    assert figures["Determinant of the linear part of the transform"] == pytest.approx(1.0, abs=1e-3)
    assert figures["Rotation Angle"] < 1.0
    assert figures["Normalized cross-correlation after registration"] > 0.95
    assert figures["Normalized cross-correlation before registration"] < 0.9
    assert figures["Dice of the masks after registration"] > 0.9 > figures["Dice of the masks before registration"]
    sr = hd.sr.srread(sr_path)
    fixed_study = hd.imread(next(pair["fixed"].iterdir())).StudyInstanceUID
    assert sr.StudyInstanceUID == fixed_study
    referenced = {item.ReferencedSOPInstanceUID for study in (
        *sr.get("CurrentRequestedProcedureEvidenceSequence", []), *sr.get("PertinentOtherEvidenceSequence", []))
        for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
    assert len(referenced) == 2 * len(list(pair["fixed"].iterdir()))  # every fixed and moving instance
    if DCIODVFY is not None:
        run = subprocess.run([DCIODVFY, str(sr_path)], capture_output=True, text=True, timeout=60)
        assert [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")] == []
    report = pair["folder"] / "report.html"  # the report shows the SR's figures from the record
    code, _, stderr = invoke(["report", str(pair["folder"] / "register.jsonl"), "-o", str(report)])
    assert code == 0, stderr
    html = report.read_text()
    assert "measured by mitk (in the DICOM SR)" in html and "ncc_after" in html and "checkerboard" in html


def test_a_nifti_fixed_image_is_refused(pair: dict[str, Path], anatomical_t1: Path) -> None:
    out = pair["folder"] / "refused"
    code, _, stderr = invoke(["register", str(anatomical_t1), str(pair["moving"]), "--plugin", "affine",
                              "--dicom-sr", "-d", str(out)])
    assert code == 2 and "--dicom-sr needs a DICOM fixed image" in stderr
    assert not out.exists() or not list(out.iterdir())


def test_an_anonymised_fixed_series_gets_minted_uids(pair: dict[str, Path], tmp_path: Path) -> None:
    import pydicom
    from test_dicom_seg import image_from_series

    from mitk.errors import MitkWarning
    from mitk.tasks.register.dicom_sr import write_registration_sr

    folder = tmp_path / "anonymised"
    folder.mkdir()
    for file in sorted(pair["fixed"].iterdir()):
        dataset = pydicom.dcmread(file)
        del dataset.StudyInstanceUID, dataset.FrameOfReferenceUID
        dataset.save_as(folder / file.name)
    series = type("Series", (), {})()
    series.files = sorted(folder.iterdir())
    series.series_uid = str(pydicom.dcmread(series.files[0]).SeriesInstanceUID)
    array, affine = load_nifti(pair["fixed_mask"])  # any array on the grid: the writer reads only the headers
    series.expected_array, series.expected_affine, series.directory = array, affine, folder
    fixed = image_from_series(series)
    with pytest.warns(MitkWarning, match="minted for the SR"):
        path = write_registration_sr({"ncc_before": 0.2, "ncc_after": 0.9}, fixed, None, tmp_path / "sr.dcm",
                                     plugin_name="affine")
    assert figures_of(path) == {"Normalized cross-correlation before registration": 0.2,
                                "Normalized cross-correlation after registration": 0.9}
    if DCIODVFY is not None:
        run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
        assert [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")] == []
    with pytest.raises(ValueError, match="not registration figures: dice"):
        write_registration_sr({"dice": 1.0}, fixed, None, tmp_path / "x.dcm", plugin_name="affine")


def test_figures_of_a_displacement_field(anatomical_t1: Path) -> None:
    from mitk.io.reader import load_image
    from mitk.tasks.register.dicom_sr import registration_figures
    from mitk.tasks.register.result import RegistrationResult

    image = load_image(anatomical_t1)
    world = np.moveaxis(np.einsum("ij,j...->i...", image.affine[:3, :3],
                                  np.indices(image.spatial_shape, dtype=float)), 0, -1)
    flips = np.zeros((*image.spatial_shape, 3))
    flips[..., 0] = -2.0 * world[..., 0]  # x ↦ -x: det(I + ∂u/∂x) = -1 everywhere
    for field, folded in ((np.zeros_like(flips), 0.0), (flips, 100.0)):
        result = RegistrationResult(warped=image, matrix=np.eye(4), displacement=field)
        figures = registration_figures(image, image, result)
        assert figures["folded_percent"] == pytest.approx(folded)
        assert figures["jacobian_min"] == pytest.approx(1.0 if folded == 0 else -1.0)
        assert figures["ncc_after"] == pytest.approx(1.0)  # warped is the fixed image itself
    result = RegistrationResult(warped=image, matrix=np.eye(4), displacement=flips,
                                metrics={"jacobian_min": 0.5, "folded_percent": 0.0, "similarity_affine": 0.1,
                                         "similarity_final": 0.3})
    figures = registration_figures(image, image, result)  # the plugin's own figures are taken as they are
    assert (figures["jacobian_min"], figures["folded_percent"]) == (0.5, 0.0)
    assert (figures["similarity_start"], figures["similarity_final"]) == (0.1, 0.3)
    assert figures["rotation_deg"] == pytest.approx(0.0, abs=1e-6) and figures["determinant"] == 1.0
