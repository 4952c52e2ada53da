"""docs/reports.md: every command it shows runs, in order, on real images."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "reports.md"


def commands() -> list[list[str]]:
    return [shlex.split(line[2:]) for line in re.findall(r"^\$ mitk .*$", PAGE.read_text(), re.MULTILINE)]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = ROOT / "tests" / "data"
    shutil.copy(data / "brain1_image.nii.gz", tmp_path / "brain.nii.gz")
    shutil.copy(data / "brain1_label.nii.gz", tmp_path / "brain_label.nii.gz")
    shutil.copy(data / "lung1_image.nii.gz", tmp_path / "lung.nii.gz")
    image = nib.load(tmp_path / "brain.nii.gz")
    moved = np.roll(np.asanyarray(image.dataobj), 3, axis=0)
    nib.save(nib.Nifti1Image(moved, image.affine, image.header), tmp_path / "brain_moved.nii.gz")
    (tmp_path / "out").mkdir()
    from dicom_factory import series_from_nifti

    series_from_nifti(tmp_path / "brain.nii.gz", tmp_path / "mr_series", "axial")
    series_from_nifti(tmp_path / "brain_moved.nii.gz", tmp_path / "mr_moved_series", "axial", seed=1)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_page_shows_the_commands_it_promises() -> None:
    verbs = [command[1] for command in commands()]
    assert verbs == ["segment", "detect", "register", "evaluate", "report", "report", "replay", "replay", "segment",
                     "register"]
    assert (ROOT / "docs" / "images" / "report.png").stat().st_size > 10_000


def test_every_command_runs(workdir: Path, run_inprocess) -> None:
    for command in commands():
        code, _, err = run_inprocess(*command[1:])
        assert code == 0, f"{' '.join(command)}: {err}"
    page = (workdir / "report.html").read_text()
    assert "checkerboard" in page and "per_case.csv" in page and "1,070.06" in page
    assert len(list((workdir / "report_cases").glob("*.html"))) == 0  # the single-file report needs none
    assert len(list((workdir / "summary_cases").glob("case-*.html"))) == 3
    dicom = workdir / "out" / "dicom"
    assert {p.name for p in dicom.glob("*.dcm")} == {"mr_series_seg.dcm", "mr_series_seg_sr.dcm",
                                                      "mr_series_seg_rtstruct.dcm", "mr_moved_series_warped_sr.dcm"}
