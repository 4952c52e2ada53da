"""``mitk deidentify``: PS3.15's Basic Profile on real DICOM files, consistent UIDs, options and refusals."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from helpers import invoke
from pydicom.data import get_testdata_file

pytest.importorskip("dicomanonymizer")

SERIES = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests" / "98892001" / "CT5N"  # 5 real CT slices
CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
SECONDARY_CAPTURE = Path(get_testdata_file("SC_rgb.dcm"))


def outputs(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.dcm"))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def identifying_values(path: Path) -> list[str]:
    dataset = pydicom.dcmread(path)
    values = [str(dataset.get(keyword, "")) for keyword in ("PatientName", "PatientID", "StudyInstanceUID",
                                                            "SeriesInstanceUID", "SOPInstanceUID",
                                                            "InstitutionName", "AccessionNumber",
                                                            "FrameOfReferenceUID")]
    return [value for value in values if len(value) >= 3]


def test_a_real_series_is_deidentified_with_consistent_uids(tmp_path: Path) -> None:
    series = tmp_path / "in"
    shutil.copytree(SERIES, series)
    before = {path.name: digest(path) for path in series.iterdir()}
    code, _, err = invoke(["deidentify", str(series), str(CT_SMALL), "-o", str(tmp_path / "out"),
                           "--key", str(tmp_path / "key.bin")])
    assert code == 0, err
    written = outputs(tmp_path / "out")
    assert len(written) == 6
    # The five slices of one series stay one study and one series; CT_small is another study.
    assert len({path.parent for path in written}) == 2
    originals = [*sorted(series.iterdir()), CT_SMALL]
    secrets = {value for path in originals for value in identifying_values(path)}
    for path in written:
        data = path.read_bytes()
        assert not [value for value in secrets if value.encode() in data], path
        dataset = pydicom.dcmread(path)
        assert dataset.PatientIdentityRemoved == "YES"
        assert dataset.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert dataset.file_meta.MediaStorageSOPInstanceUID == dataset.SOPInstanceUID
        assert dataset.PatientID.startswith("ANON") and dataset.PatientName == dataset.PatientID
        assert not [element for element in dataset if element.tag.is_private]
        assert path.stem == dataset.SOPInstanceUID and path.parent.name == dataset.SeriesInstanceUID
    # Pixels are untouched, inputs are untouched.
    source = {pydicom.dcmread(path).InstanceNumber: pydicom.dcmread(path).PixelData for path in originals[:5]}
    for path in written:
        dataset = pydicom.dcmread(path)
        if dataset.get("InstanceNumber") in source and path.parent == written[0].parent:
            assert dataset.PixelData == source[dataset.InstanceNumber]
    assert before == {path.name: digest(path) for path in series.iterdir()}
    report = json.loads(next((tmp_path / "out").glob("deidentify-report-*.json")).read_text())
    assert report["files"]["written"] == 6 and "Table E.1-1" in report["profile"]
    assert report["attributes"]["PatientName"] == {"replaced": 6}
    text = json.dumps(report)
    assert not [value for value in secrets if value in text]


def test_the_same_key_maps_the_same_way_and_another_key_does_not(tmp_path: Path) -> None:
    key = tmp_path / "key.bin"
    names = []
    for run in ("a", "b"):
        code, _, err = invoke(["-q", "deidentify", str(SERIES), "-o", str(tmp_path / run), "--key", str(key)])
        assert code == 0, err
        names.append([path.relative_to(tmp_path / run) for path in outputs(tmp_path / run)])
    assert names[0] == names[1]
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    code, _, err = invoke(["deidentify", str(SERIES), "-o", str(tmp_path / "c"), "--key", str(tmp_path / "k2")])
    assert code == 0, err
    assert not set(names[0]) & {path.relative_to(tmp_path / "c") for path in outputs(tmp_path / "c")}


def test_retained_dates_are_shifted_by_one_amount_per_patient(tmp_path: Path) -> None:
    code, _, err = invoke(["deidentify", str(SERIES), "-o", str(tmp_path / "out"), "--retain-dates"])
    assert code == 0, err
    originals = {pydicom.dcmread(path).InstanceNumber: pydicom.dcmread(path) for path in SERIES.iterdir()}
    shifts = set()
    for path in outputs(tmp_path / "out"):
        moved = pydicom.dcmread(path)
        original = originals[moved.InstanceNumber]
        for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
            if original.get(keyword):
                days = (pydicom.valuerep.DA(moved.get(keyword)) - pydicom.valuerep.DA(original.get(keyword))).days
                shifts.add(days)
        assert moved.LongitudinalTemporalInformationModified == "MODIFIED"
        assert moved.get("StudyTime") == original.get("StudyTime")
    assert len(shifts) == 1 and -3650 <= shifts.pop() <= -365
    code, _, err = invoke(["deidentify", str(SERIES), "-o", str(tmp_path / "basic")])
    assert code == 0, err
    for path in outputs(tmp_path / "basic"):
        assert pydicom.dcmread(path).get("StudyDate") != next(iter(originals.values())).StudyDate


def test_descriptors_are_cleaned_of_the_patients_values(tmp_path: Path) -> None:
    dataset = pydicom.dcmread(CT_SMALL)
    name = str(dataset.PatientName).split("^")[0]
    dataset.SeriesDescription = f"Chest {name} {dataset.PatientID} 2004-01-19 contrast"
    source = tmp_path / "in.dcm"
    dataset.save_as(source)
    code, _, err = invoke(["deidentify", str(source), "-o", str(tmp_path / "clean"), "--clean-descriptors"])
    assert code == 0, err
    cleaned = pydicom.dcmread(outputs(tmp_path / "clean")[0])
    assert cleaned.SeriesDescription == "Chest contrast"
    codes = [item.CodeValue for item in cleaned.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113105"]
    code, _, err = invoke(["deidentify", str(source), "-o", str(tmp_path / "basic")])
    assert "SeriesDescription" not in pydicom.dcmread(outputs(tmp_path / "basic")[0])


def test_images_that_may_show_text_are_refused_and_the_batch_goes_on(tmp_path: Path) -> None:
    flagged = pydicom.dcmread(CT_SMALL)
    flagged.BurnedInAnnotation = "YES"
    flagged.save_as(tmp_path / "flagged.dcm")
    code, _, err = invoke(["deidentify", str(tmp_path / "flagged.dcm"), str(SECONDARY_CAPTURE), str(SERIES),
                           "-o", str(tmp_path / "out")])
    assert code == 3
    lines = [line for line in err.splitlines() if line.startswith("mitk: refused")]
    assert len(lines) == 2 and "flagged.dcm" in lines[0] and "BurnedInAnnotation" in lines[0]
    assert "secondary capture" in lines[1]
    assert len(outputs(tmp_path / "out")) == 5
    code, _, err = invoke(["deidentify", str(tmp_path / "flagged.dcm"), "-o", str(tmp_path / "allowed"),
                           "--allow-burned-in"])
    assert code == 0, err


def test_nothing_is_overwritten_and_bad_files_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    shutil.copytree(SERIES, folder)
    (folder / "notes.txt").write_text("not DICOM")
    key = ["--key", str(tmp_path / "key.bin")]
    assert invoke(["deidentify", str(folder), "-o", str(tmp_path / "out"), *key])[0] == 0
    stamps = {path: path.stat().st_mtime_ns for path in outputs(tmp_path / "out")}
    code, _, err = invoke(["deidentify", str(folder), "-o", str(tmp_path / "out"), *key])
    assert code == 1 and "output exists already" in err
    assert stamps == {path: path.stat().st_mtime_ns for path in outputs(tmp_path / "out")}
    code, _, err = invoke(["deidentify", str(folder / "notes.txt"), str(SERIES), "-o", str(tmp_path / "b")])
    assert code == 3 and "notes.txt" in err and "Traceback" not in err
    code, _, err = invoke(["deidentify", str(folder), "-o", str(folder / "out")])
    assert code == 2 and "inside an input folder" in err
    code, _, err = invoke(["deidentify", str(folder), "-o", str(tmp_path / "c"),
                           "--key", str(tmp_path / "c" / "key.bin")])
    assert code == 2 and "key file must not be inside" in err


def test_the_output_passes_dciodvfy_as_the_input_does(tmp_path: Path) -> None:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian dicom3tools) is not installed")

    def errors(path: Path) -> set[str]:
        done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        return {line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")}

    assert invoke(["deidentify", str(SERIES), str(CT_SMALL), "-o", str(tmp_path / "out"),
                   "--retain-dates", "--clean-descriptors"])[0] == 0
    allowed = errors(CT_SMALL) | errors(next(SERIES.iterdir()))
    for path in outputs(tmp_path / "out"):
        assert errors(path) <= allowed, path


def test_deidentify_imports_neither_torch_nor_monai(tmp_path: Path) -> None:
    from test_startup import imported_heavy_modules

    assert imported_heavy_modules(tmp_path, "-q", "deidentify", str(CT_SMALL), "-o", str(tmp_path / "o")) == []


def test_a_plain_install_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dicomanonymizer", None)
    code, _, err = invoke(["deidentify", str(CT_SMALL), "-o", str(tmp_path / "out")])
    assert code == 2 and 'mitk[dicom]' in err


def test_the_page_commands_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``$ mitk`` line of docs/deidentify.md runs on a real CT series."""
    import re
    import shlex

    page = (Path(__file__).resolve().parents[1] / "docs" / "deidentify.md").read_text()
    lines = re.findall(r"^\$ mitk (.*)$", page, re.MULTILINE)
    assert len(lines) == 2
    shutil.copytree(SERIES, tmp_path / "ct_series")
    monkeypatch.chdir(tmp_path)
    for line in lines:
        code, _, err = invoke(shlex.split(line))
        assert code == 0, f"{line}: {err}"
    assert len(outputs(tmp_path / "shared")) == len(outputs(tmp_path / "shared_clean")) == 5
    assert sorted(path.name for path in outputs(tmp_path / "shared")) == \
        sorted(path.name for path in outputs(tmp_path / "shared_clean"))


def test_a_folder_without_dicom_is_refused_and_writes_no_report(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("not DICOM")
    code, _, err = invoke(["deidentify", str(tmp_path / "in"), "-o", str(tmp_path / "out")])
    assert code == 2 and "no DICOM file found" in err
    assert not list((tmp_path / "out").glob("*"))
