"""``mitk detect DIR --format dicom-sr``: a TID 1500 Comprehensive 3D SR that validates and reads back.

Checked by three independent tools when installed: dicom3tools' ``dciodvfy`` (IOD), DCMTK's ``dsrdump``
(SR tree) and dcmqi's ``tid1500reader`` (the TID 1500 template, which ``dciodvfy`` does not check).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_factory import write_series
from helpers import invoke, load

from mitk.tasks.detect.dicom_sr import box_faces_lps

DCIODVFY, DSRDUMP = shutil.which("dciodvfy"), shutil.which("dsrdump")


def tid1500reader() -> str | None:
    found = shutil.which("tid1500reader")
    if found:
        return found
    try:
        import dcmqi  # PyPI dcmqi ships the binaries
    except ImportError:
        return None
    candidate = Path(dcmqi.__file__).parent / "bin" / "tid1500reader"
    return str(candidate) if candidate.is_file() else None


@pytest.fixture(scope="module")
def lesion_series(anatomical_t1: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """nibabel's real T1 (scaled by 1/4) as an axial DICOM series, a bright sphere planted at a known voxel."""
    image = load(anatomical_t1)
    volume = np.asarray(image.dataobj, dtype=np.float32) / 4  # room in int16 for a lesion brighter than anatomy
    centre = np.array([16.0, 20.0, 12.0])
    grid = np.indices(volume.shape, dtype=np.float32)
    volume[np.sqrt(sum(((grid[a] - centre[a]) * 2.0) ** 2 for a in range(3))) <= 6.0] = 2.5 * volume.max()
    series = write_series(np.rint(volume).astype(np.int16), np.asarray(image.affine), tmp_path_factory.mktemp("sr"),
                          modality="MR", attributes={"PatientName": "Canary^Patient", "PatientID": "CANARY-ID-7"})
    return series.directory, (image.affine[:3, :3] @ centre + image.affine[:3, 3])


@pytest.fixture(scope="module")
def report(lesion_series: tuple[Path, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    directory, _ = lesion_series
    out = tmp_path_factory.mktemp("sr_out")
    code, stdout, stderr = invoke(["detect", str(directory), "--plugin", "blob", "--format", "dicom-sr", "-d", str(out),
                                   "--set", "threshold=0.6", "--json"])
    assert code == 0, stderr
    [record] = json.loads(stdout)["cases"]
    return Path(record["output"]), stdout + stderr


def test_sr_holds_one_finding_per_box_in_the_source_frame(report: tuple[Path, str],
                                                          lesion_series: tuple[Path, np.ndarray]) -> None:
    path, _ = report
    _, centre_ras = lesion_series
    sr = pydicom.dcmread(path)
    source = pydicom.dcmread(next(p for p in sorted(lesion_series[0].iterdir()) if p.is_file()))
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    referenced = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
    document = json.loads(path.with_suffix(".json").read_text())
    assert len(document["boxes"]) >= 1
    import highdicom as hd

    parsed = hd.sr.srread(path)
    groups = parsed.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == len(document["boxes"])
    surface = groups[0].roi
    assert surface.frame_of_reference_uid == source.FrameOfReferenceUID
    points = np.concatenate([np.asarray(face) for face in surface.graphic_data])
    centre_lps = centre_ras * np.array([-1, -1, 1])
    assert np.linalg.norm(points.mean(axis=0) - centre_lps) < 2.0  # the top box: the planted lesion, ±1 voxel
    [score] = groups[0].get_measurements()
    assert score.value == pytest.approx(document["boxes"][0]["score"], abs=1e-5)
    assert groups[0].finding_type.meaning == "Lesion"  # "bright lesion" coded as SNOMED CT Lesion


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (dicom3tools) is not installed")
def test_sr_is_valid_per_dciodvfy(report: tuple[Path, str]) -> None:
    path, _ = report
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60, check=False)
    errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
    assert errors == [], run.stdout + run.stderr


@pytest.mark.skipif(DSRDUMP is None, reason="dsrdump (DCMTK) is not installed")
def test_sr_reads_back_in_dsrdump(report: tuple[Path, str]) -> None:
    path, _ = report
    run = subprocess.run([DSRDUMP, str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0 and "error" not in (run.stdout + run.stderr).lower(), run.stdout + run.stderr
    assert "Imaging Measurement Report" in run.stdout and "Probability" in run.stdout


@pytest.mark.skipif(tid1500reader() is None, reason="dcmqi's tid1500reader is not installed (pip install dcmqi)")
def test_sr_parses_in_dcmqi_tid1500reader(report: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = report
    output = tmp_path / "measurements.json"
    run = subprocess.run([str(tid1500reader()), "--inputDICOM", str(path), "--outputMetadata", str(output)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    parsed = json.loads(output.read_text())
    assert len(parsed["Measurements"]) >= 1


def test_deidentified_sr_and_logs_hold_no_identifier(lesion_series: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    directory, _ = lesion_series
    code, stdout, stderr = invoke(["detect", str(directory), "--plugin", "blob", "--format", "dicom-sr", "-d",
                                   str(tmp_path), "--deidentify", "--set", "threshold=0.6"])
    assert code == 0, stderr
    [path] = tmp_path.glob("*_boxes.dcm")
    raw = path.read_bytes()
    assert b"Canary" not in raw and b"CANARY-ID-7" not in raw
    assert "Canary" not in stdout + stderr and "CANARY" not in stdout + stderr


def test_box_faces_by_hand() -> None:
    """A one-voxel box at the origin of a 2 mm RAS grid: faces at ±1 mm, x and y negated for LPS."""
    faces = box_faces_lps(np.array([0, 0, 0, 1, 1, 1], float), np.diag([2.0, 2.0, 2.0, 1.0]))
    assert len(faces) == 6 and all(face.shape == (5, 3) and np.allclose(face[0], face[-1]) for face in faces)
    points = np.concatenate(faces)
    assert np.allclose(points.min(axis=0), [-1, -1, -1]) and np.allclose(points.max(axis=0), [1, 1, 1])
    assert np.allclose(faces[0][:, 0], 1.0)  # the i-start face: RAS x = -1, so LPS x = +1
    assert np.allclose(faces[4][:, 2], -1.0)  # the k-start face lies in the plane z = -1


def test_sr_of_a_nifti_input_is_refused_in_one_line(anatomical_t1: Path, tmp_path: Path) -> None:
    code, _, stderr = invoke(["detect", str(anatomical_t1), "--plugin", "blob", "--format", "dicom-sr", "-d",
                              str(tmp_path)])
    assert code != 0 and "needs a DICOM input" in stderr and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []  # no partial files
