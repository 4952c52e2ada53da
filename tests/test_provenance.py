"""Provenance in every record: input and weights digests, plugin, versions, settings, runtime state."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from dicom_factory import series_from_nifti

from mitk.provenance import input_digest, sha256_file, weights_digest


def test_segment_records_carry_provenance(mitk_cli, brain_mr: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    run = mitk_cli("segment", str(brain_mr), "--plugin", "threshold", "--set", "bins=128", "--output-dir",
                   str(tmp_path / "out"), "--manifest", str(manifest), "--json")
    assert run.returncode == 0, run.stderr
    record = json.loads(manifest.read_text().splitlines()[0])
    provenance = record["provenance"]
    assert provenance["input_digest"] == {"kind": "file", "bytes": brain_mr.stat().st_size,
                                          "sha256": hashlib.sha256(brain_mr.read_bytes()).hexdigest()}
    assert provenance["plugin"] == "threshold" and provenance["plugin_package"] == "mitk"
    assert provenance["settings"]["bins"] == 128 and provenance["settings"]["largest_component"] is True
    assert provenance["invocation"]["overrides"] == {"bins": 128}
    assert set(provenance["versions"]) >= {"mitk", "torch", "monai", "numpy", "python"}
    # threshold runs without torch (a classical plugin): no torch threads or flags to report, only mitk's own
    assert provenance["device"] == "cpu" and provenance["threads"] is None
    assert "MITK_CPU_KERNELS" in provenance["deterministic"] and "algorithms" not in provenance["deterministic"]
    assert json.loads(run.stdout)["cases"][0]["provenance"] == provenance


def test_record_files_carry_provenance(mitk_cli, brain_mr: Path, tmp_path: Path) -> None:
    run = mitk_cli("detect", str(brain_mr), "--plugin", "blob", "--output-dir", str(tmp_path))
    assert run.returncode == 0, run.stderr
    document = json.loads(next(tmp_path.glob("*_boxes.json")).read_text())
    assert document["provenance"]["input_digest"]["sha256"] == sha256_file(brain_mr)
    assert document["provenance"]["task"] == "detect"


def test_dicom_digest_covers_pixels_and_geometry_not_identity(anatomical_t1: Path, tmp_path: Path) -> None:
    series = series_from_nifti(anatomical_t1, tmp_path / "a", "axial")
    renamed = tmp_path / "b"
    shutil.copytree(tmp_path / "a", renamed)
    for path in renamed.iterdir():
        dataset = pydicom.dcmread(path)
        dataset.PatientName, dataset.PatientID = "OTHER^NAME", "OTHER-ID"
        dataset.StudyInstanceUID = pydicom.uid.generate_uid()
        dataset.save_as(path)
    first, second = input_digest(tmp_path / "a"), input_digest(renamed)
    assert first["kind"] == "dicom" and first["instances"] == len(series.files)
    assert first["sha256"] == second["sha256"]
    moved = pydicom.dcmread(renamed / Path(series.files[0]).name)
    moved.ImagePositionPatient[2] = float(moved.ImagePositionPatient[2]) + 1.0
    moved.save_as(renamed / Path(series.files[0]).name)
    assert input_digest(renamed)["sha256"] != first["sha256"]


def test_weights_digest_of_a_folder_names_no_absolute_path(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a.bin").write_bytes(b"abc")
    digest = weights_digest(tmp_path / "m")
    assert digest is not None and digest["files"] == 1
    shutil.copytree(tmp_path / "m", tmp_path / "n")
    assert weights_digest(tmp_path / "n") == digest
    (tmp_path / "n" / "a.bin").write_bytes(b"abd")
    assert weights_digest(tmp_path / "n") != digest


def test_hashing_imports_neither_torch_nor_monai(brain_mr: Path) -> None:
    code = (f"import sys; from mitk.provenance import input_digest, runtime_state, library_versions; "
            f"input_digest({str(brain_mr)!r}); runtime_state(); library_versions(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'monai')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("size", [3 * (1 << 20) + 17])
def test_streamed_hash_equals_hashlib(tmp_path: Path, size: int) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
