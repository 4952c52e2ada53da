"""``mitk convert`` and ``mitk info`` on DICOM input, end to end in a subprocess, and privacy."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_factory import CANARY_STRINGS, load_nifti, orient_volume, series_from_nifti, write_series

from mitk.io.dicom import read_dicom


def assert_private(*texts: str | bytes) -> None:
    """No canary patient attribute in any of ``texts``."""
    for text in texts:
        data = text if isinstance(text, bytes) else text.encode()
        for canary in CANARY_STRINGS:
            assert canary.encode() not in data, f"{canary!r} leaked"


@pytest.fixture
def oblique_series(anatomical_t1, tmp_path):
    return series_from_nifti(anatomical_t1, tmp_path / "dicom", "oblique", modality="MR", order="shuffled",
                             shuffle_instance_numbers=True)


def test_convert_writes_exact_nifti_and_a_private_sidecar(oblique_series, tmp_path, mitk_cli):
    output = tmp_path / "out" / "t1.nii.gz"
    result = mitk_cli("convert", str(oblique_series.directory), str(output), "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["output"] == str(output) and document["sidecar"] == str(tmp_path / "out" / "t1.json")
    assert document["shape"] == [33, 41, 25] and document["resampled"] is None

    nifti = nib.load(output)
    assert int(nifti.header["sform_code"]) == 1 and int(nifti.header["qform_code"]) == 1
    reference = read_dicom(oblique_series.directory)
    np.testing.assert_allclose(nifti.affine, reference.affine, atol=1e-4)
    np.testing.assert_allclose(nifti.get_qform(), reference.affine, atol=1e-4)
    np.testing.assert_allclose(nifti.affine, oblique_series.expected_affine, atol=1e-4)
    assert np.array_equal(np.asarray(nifti.dataobj), oblique_series.expected_array)

    sidecar = json.loads((tmp_path / "out" / "t1.json").read_text())
    assert sidecar["Modality"] == "MR" and sidecar["RepetitionTime"] == 8.1 and sidecar["EchoTime"] == 3.7
    assert sidecar["slices"] == 25 and sidecar["orientation"] == reference.orientation
    assert not {"PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName",
                "StudyInstanceUID", "SeriesInstanceUID"} & set(sidecar)
    assert_private(result.stdout, result.stderr, (tmp_path / "out" / "t1.json").read_bytes(),
                   gzip.decompress(output.read_bytes()))
    assert oblique_series.series_uid not in (tmp_path / "out" / "t1.json").read_text()
    assert not list((tmp_path / "out").glob(".*partial*"))


def test_convert_never_overwrites_without_permission(oblique_series, tmp_path, run_inprocess):
    output, source = tmp_path / "t1.nii", str(oblique_series.directory)
    assert run_inprocess("convert", source, str(output))[0] == 0
    before = output.read_bytes()
    status, _, error = run_inprocess("convert", source, str(output))
    assert status == 1 and "exists already" in error and output.read_bytes() == before
    assert len(error.strip().splitlines()) == 1
    assert run_inprocess("convert", source, str(output), "--overwrite")[0] == 0
    status, _, error = run_inprocess("convert", str(output), str(output), "--overwrite")
    assert status == 2 and "over the input" in error
    status, _, error = run_inprocess("convert", source, str(tmp_path / "t1.txt"))  # .mha is written: formats.md
    assert status == 2 and ".nii" in error


def test_convert_asks_which_series_and_refuses_irregular_ones(anatomical_t1, tmp_path, mitk_cli, run_inprocess,
                                                             caplog):
    array, affine = orient_volume(*load_nifti(anatomical_t1), "axial")
    regular = write_series(array, affine, tmp_path / "dicom" / "a", modality="MR", description="T1 regular",
                           series_number=1)
    write_series(array, affine, tmp_path / "dicom" / "b", modality="CT", description="CT gap", drop=(5,),
                 series_number=2)
    folder = str(tmp_path / "dicom")
    status, _, _ = run_inprocess("convert", folder, str(tmp_path / "v.nii.gz"))
    assert status == 0 and "reading series 0, the only regular volume; also found 1: " in caplog.text
    write_series(array, affine, tmp_path / "dicom" / "c", modality="CT", description="CT regular", series_number=3)
    status, _, several = run_inprocess("convert", folder, str(tmp_path / "x.nii.gz"))
    assert status == 2
    assert "3 series found (2 regular volumes)" in several and " CT 24 slices" in several
    assert "CT gap" not in several  # free-text SeriesDescription stays out of messages
    assert len(several.strip().splitlines()) == 1 and not (tmp_path / "x.nii.gz").exists()

    assert run_inprocess("convert", folder, str(tmp_path / "a.nii.gz"), "--series", "0")[0] == 0
    assert np.array_equal(np.asarray(nib.load(tmp_path / "a.nii.gz").dataobj), regular.expected_array)

    status, _, refused = run_inprocess("convert", folder, str(tmp_path / "b.nii.gz"), "--series", "1")
    assert status == 1 and "not uniform" in refused and "--allow-resample" in refused
    assert not (tmp_path / "b.nii.gz").exists() and not (tmp_path / "b.json").exists()
    resampled = mitk_cli("convert", folder, str(tmp_path / "b.nii.gz"), "--series", "1", "--allow-resample",
                         "--json")
    assert resampled.returncode == 0, resampled.stderr
    assert "resampled 24 slices onto 25" in json.loads(resampled.stdout)["resampled"]
    assert "resampled" in resampled.stderr  # the logged warning
    assert nib.load(tmp_path / "b.nii.gz").shape == array.shape
    assert json.loads((tmp_path / "b.json").read_text())["resampled"]
    assert_private(caplog.text, several, refused, resampled.stdout, resampled.stderr)


def test_info_lists_series_without_patient_data(anatomical_t1, tmp_path, mitk_cli):
    series_from_nifti(anatomical_t1, tmp_path / "a", "axial", modality="MR", description="T1")
    series_from_nifti(anatomical_t1, tmp_path / "b", "coronal", modality="CT", description="CT")
    (tmp_path / "readme.txt").write_text("not DICOM")
    result = mitk_cli("info", str(tmp_path), "--json", "--include-descriptions")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert listing["skipped_files"] == 1 and len(listing["series"]) == 2
    assert {row["description"] for row in listing["series"]} == {"T1", "CT"}  # asked for
    assert all(row["volume"] and row["slices"] in (25, 41) for row in listing["series"])
    assert_private(result.stdout, result.stderr)

    one = mitk_cli("info", str(tmp_path), "--series", "1", "--json")
    assert one.returncode == 0, one.stderr
    document = json.loads(one.stdout)
    assert document["format"] == "dicom" and document["dicom"]["Modality"] in ("MR", "CT")
    assert_private(one.stdout, one.stderr)


def test_convert_zip_and_2d_colour(anatomical_t1, tmp_path, mitk_cli):
    written = series_from_nifti(anatomical_t1, tmp_path / "dicom", "sagittal", modality="MR")
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for file in written.files:
            handle.write(file, file.name)
    result = mitk_cli("convert", str(archive), str(tmp_path / "zip.nii.gz"))
    assert result.returncode == 0, result.stderr
    assert np.array_equal(np.asarray(nib.load(tmp_path / "zip.nii.gz").dataobj), written.expected_array)

    from pydicom import data as pydicom_data
    colour = Path(pydicom_data.__file__).parent / "test_files" / "SC_rgb_small_odd.dcm"
    result = mitk_cli("convert", str(colour), str(tmp_path / "rgb.nii.gz"), "--json")
    assert result.returncode == 0, result.stderr
    assert nib.load(tmp_path / "rgb.nii.gz").shape == (3, 3, 1, 3)


def test_errors_are_one_line_and_private(anatomical_t1, tmp_path, run_inprocess):
    written = series_from_nifti(anatomical_t1, tmp_path / "dicom", "axial", modality="CT")
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(written.files[3].read_bytes()[:-100])
    (tmp_path / "plain.txt").write_text("hello")
    for arguments, expected in (((str(truncated), str(tmp_path / "t.nii.gz")), (1, "truncated pixel data")),
                                ((str(tmp_path / "plain.txt"), str(tmp_path / "p.nii.gz")), (1, "not a NIfTI")),
                                ((str(tmp_path / "dicom"), str(tmp_path / "d.nii.gz"), "--series", "7"),
                                 (2, "no series with index 7"))):
        status, out, error = run_inprocess("convert", *arguments)
        assert (status, expected[1] in error) == (expected[0], True), error
        assert len(error.strip().splitlines()) == 1 and "Traceback" not in error
        assert_private(out, error)
