"""``mitk report``: one self-contained HTML file over a finished batch, whatever state its records are in."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from helpers import invoke
from report_batch import Batch, shared_batch
from test_startup import imported_heavy_modules


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Batch:
    return shared_batch(tmp_path_factory.getbasetemp())


def report(*arguments: object) -> tuple[int, dict, str]:
    code, stdout, stderr = invoke(["report", *map(str, arguments), "--json"])
    return code, (json.loads(stdout) if stdout.strip() else {}), stderr


def test_one_self_contained_file_for_every_task(batch: Batch, tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    code, document, stderr = report(batch.out, "-o", target, "--evaluation", batch.evaluation)
    assert code == 0, stderr
    assert document["cases"] == 5 and document["records"] == 6 and document["failed"] == 1
    page = target.read_text()
    assert not re.search(r'(src|href)="(https?:|//)', page) and "<link" not in page  # nothing from a network
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) >= 12 and all(uri.startswith("data:image/png;base64,") for uri in images)
    assert "corrupt or truncated gzip data" in page  # the failed case, with its one-line reason
    assert "1,070.06" in page  # brain1's threshold volume in mL (the record says 1070.0601)
    assert "Grad-CAM" in page and "checkerboard" in page and "fixed edges on warped" in page
    assert "box 1, axial slice through its centre" in page and "centre (RAS, mm)" in page
    assert "similarity_final" in page and "per_case.csv" in page and "summary.csv" in page
    sha = json.loads(batch.manifests["segment"].read_text().splitlines()[0])["provenance"]["input_digest"]["sha256"]
    assert sha in page and "plugin_package_version" in page and "deterministic" in page
    assert list(tmp_path.iterdir()) == [target]  # no temporary files left


def test_never_overwrites_without_overwrite(batch: Batch, tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("keep me")
    code, _, stderr = report(batch.manifests["segment"], "-o", target)
    assert code == 1 and "output exists already" in stderr and target.read_text() == "keep me"
    code, _, stderr = report(batch.manifests["segment"], "-o", target, "--overwrite")
    assert code == 0, stderr
    assert target.read_text().startswith("<!DOCTYPE html>")
    code, _, stderr = report(batch.manifests["segment"], "-o", batch.manifests["segment"])
    assert code == 2 and "would replace its own input" in stderr


def test_bad_records_are_said_per_case_and_the_report_still_renders(batch: Batch, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    shutil.copytree(batch.out, folder)
    for path in folder.glob("*.jsonl"):  # the copy's records name the copy's outputs
        path.write_text(path.read_text().replace(str(batch.out), str(folder)))
    manifest = folder / "segment.jsonl"
    lines = manifest.read_text().splitlines()
    record = json.loads(lines[0])
    other = dict(record, provenance={**record["provenance"], "settings": {**record["provenance"]["settings"],
                                                                          "bins": 64}})
    manifest.write_text("\n".join([*lines, json.dumps(other), lines[1][: len(lines[1]) // 2]]) + "\n")
    (folder / "brain_slice_class.json").write_text("{not json")
    (folder / "lung1_image_seg.nii.gz").unlink()
    shutil.copy(batch.out / "brain1_image_seg.nii.gz", folder / "stray_seg.nii.gz")
    target = tmp_path / "report.html"
    code, document, stderr = report(folder, "-o", target)
    assert code == 0, stderr
    page = target.read_text()
    assert "line 5 of segment.jsonl is not a JSON record" in page
    assert "outputs of 2 different segment runs are mixed here" in page
    assert "brain_slice_class.json: the record cannot be read" in page
    assert "the label map is not where the record says" in page
    assert "no record names this output" in page
    assert "2 records of this input for segment" in page
    assert document["warnings"] >= 6


def test_per_case_files_for_large_batches(batch: Batch, tmp_path: Path) -> None:
    target = tmp_path / "summary.html"
    code, document, stderr = report(batch.out, "-o", target, "--per-case")
    assert code == 0, stderr
    files = sorted((tmp_path / "summary_cases").glob("case-*.html"))
    assert len(files) == document["cases"] == document["case_files"] == 5
    summary = target.read_text()
    assert all(f'href=\'summary_cases/{path.name}\'' in summary for path in files)
    assert "thumbnail of case 1" in summary and "checkerboard" not in summary  # detail lives in the case files
    assert any("checkerboard" in path.read_text() for path in files)
    code, _, stderr = report(batch.out, "-o", target, "--per-case")
    assert code == 1 and "exists already" in stderr


def test_report_imports_neither_torch_nor_monai(batch: Batch, tmp_path: Path) -> None:
    assert imported_heavy_modules(tmp_path, "report", str(batch.out), "-o", str(tmp_path / "r.html")) == []
    assert (tmp_path / "r.html").stat().st_size > 10_000


def test_a_missing_source_is_one_line(tmp_path: Path) -> None:
    code, _, stderr = report(tmp_path / "nowhere", "-o", tmp_path / "r.html")
    assert code == 1 and stderr.strip().endswith("no such file or folder") and "Traceback" not in stderr
