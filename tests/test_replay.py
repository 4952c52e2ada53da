"""``mitk replay``: a finished batch re-run from its records alone is identical; changed inputs are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import invoke
from report_batch import Batch, shared_batch


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Batch:
    return shared_batch(tmp_path_factory.getbasetemp())


def replay(*arguments: object) -> tuple[int, dict, str]:
    code, stdout, stderr = invoke(["replay", *map(str, arguments), "--json"])
    return code, (json.loads(stdout) if stdout.strip() else {}), stderr


@pytest.mark.parametrize("task", ["segment", "classify", "detect", "register"])
def test_every_case_of_a_finished_batch_is_identical(batch: Batch, task: str) -> None:
    code, document, stderr = replay(batch.manifests[task])
    assert code == 0, stderr
    compared = [case for case in document["cases"] if case["status"] != "not replayed"]
    assert compared and all(case["status"] == "identical" for case in compared), document
    assert all(case["files_compared"] >= 1 for case in compared), document
    if task == "segment":  # the damaged input failed in the recorded run: said, not counted against the run
        assert document["summary"]["not replayed"] == 1


def copy_batch(batch: Batch, folder: Path) -> Path:
    """The batch's outputs in ``folder``, their manifests naming the copies."""
    shutil.copytree(batch.out, folder)
    for path in folder.glob("*.jsonl"):
        path.write_text(path.read_text().replace(str(batch.out), str(folder)))
    return folder


def test_a_changed_output_is_different_with_a_numeric_summary(batch: Batch, tmp_path: Path) -> None:
    folder = copy_batch(batch, tmp_path / "out")
    path = folder / "lung1_image_seg.nii.gz"
    image = nib.load(path)
    labels = np.asanyarray(image.dataobj).copy()
    labels[:4, :4, :2] = 1 - labels[:4, :4, :2]
    nib.save(nib.Nifti1Image(labels, image.affine, image.header), path)
    code, document, _ = replay(folder / "segment.jsonl", "--case", "lung1_image.nii.gz")
    assert code == 1
    [case] = document["cases"]
    assert case["status"] == "different"
    assert any("largest difference 1, " in line and "% of voxels differ" in line for line in case["differences"])


def test_a_changed_input_is_refused(batch: Batch, tmp_path: Path) -> None:
    moved = tmp_path / "brain_moved.nii.gz"
    shutil.copy(batch.inputs["moving"], moved)
    manifest = tmp_path / "register.jsonl"
    manifest.write_text(batch.manifests["register"].read_text().replace(str(batch.inputs["moving"]), str(moved)))
    image = nib.load(moved)
    data = np.asanyarray(image.dataobj).copy()
    data[0, 0, 0] += 1
    nib.save(nib.Nifti1Image(data, image.affine, image.header), moved)
    code, document, _ = replay(manifest)
    assert code == 1
    [case] = document["cases"]
    assert case["status"] == "refused" and case["reason"] == f"{moved}: the input's sha256 no longer matches the record"


def test_changed_weights_are_refused(batch: Batch, tmp_path: Path) -> None:
    record = json.loads(batch.manifests["classify"].read_text().splitlines()[0])
    weights = Path(record["provenance"]["invocation"]["weights_path"])
    copy = tmp_path / weights.name
    copy.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    manifest = tmp_path / "classify.jsonl"
    manifest.write_text(batch.manifests["classify"].read_text().replace(str(weights), str(copy)))
    code, document, _ = replay(manifest)
    assert code == 1 and document["cases"][0]["reason"] == f"{copy}: the weights' sha256 no longer matches the record"


def test_a_case_no_record_names_is_a_usage_error(batch: Batch) -> None:
    code, _, stderr = replay(batch.manifests["segment"], "--case", "nobody.nii.gz")
    assert code == 2 and "no recorded case matches --case nobody.nii.gz" in stderr
