"""Anonymised series without StudyInstanceUID and FrameOfReferenceUID (TotalSegmentator's example CT is one): the
SEG and the SR are written with minted UIDs, a warning, a note in the record, and pass dciodvfy."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from dicom_factory import series_from_nifti

from mitk.io.dicom.uids import complete_uids

DCIODVFY = shutil.which("dciodvfy")


@pytest.fixture(scope="module")
def anonymised(anatomical_t1: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("anonymised") / "series"
    series = series_from_nifti(anatomical_t1, folder, "axial")
    for path in series.files:
        dataset = pydicom.dcmread(path)
        del dataset.StudyInstanceUID, dataset.FrameOfReferenceUID
        dataset.save_as(path)
    return folder


def dciodvfy_errors(path: Path) -> list[str]:
    assert DCIODVFY is not None
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def test_minted_uids_are_valid_stable_and_shared(anonymised: Path) -> None:
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(anonymised.iterdir())]
    completed, minted = complete_uids(headers)
    assert minted == ["StudyInstanceUID", "FrameOfReferenceUID"]
    assert len({h.StudyInstanceUID for h in completed}) == 1 and len({h.FrameOfReferenceUID for h in completed}) == 1
    assert complete_uids(headers)[0][0].StudyInstanceUID == completed[0].StudyInstanceUID  # the same every time
    assert "StudyInstanceUID" not in headers[0]  # the image's own headers are left alone
    assert complete_uids(completed) == (completed, [])


@pytest.mark.parametrize(("task", "options", "suffix"), [
    ("segment", ["--plugin", "threshold", "--format", "dicom-seg"], "_seg.dcm"),
    ("detect", ["--plugin", "blob", "--format", "dicom-sr"], "_boxes.dcm"),
    ("segment", ["--plugin", "threshold", "--format", "dicom-seg-sr"], "_seg_sr.dcm"),
])
def test_seg_and_sr_of_an_anonymised_series(anonymised: Path, mitk_cli, tmp_path: Path, task: str,
                                            options: list[str], suffix: str) -> None:
    manifest = tmp_path / "m.jsonl"
    run = mitk_cli(task, str(anonymised), *options, "--output-dir", str(tmp_path / "out"), "--manifest",
                   str(manifest))
    assert run.returncode == 0, run.stderr
    assert "has no StudyInstanceUID, FrameOfReferenceUID; minted" in run.stderr
    record = json.loads(manifest.read_text().splitlines()[0])
    assert record["provenance"]["minted_uids"][0]["keywords"] == ["StudyInstanceUID", "FrameOfReferenceUID"]
    [output] = (tmp_path / "out").glob(f"*{suffix}")
    dataset = pydicom.dcmread(output)
    assert dataset.StudyInstanceUID and pydicom.uid.UID(dataset.StudyInstanceUID).is_valid
    if DCIODVFY is not None:
        assert dciodvfy_errors(output) == []
