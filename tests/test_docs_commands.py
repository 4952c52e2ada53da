"""Every shell command shown in docs/*.md runs, as written, in order, in an empty folder (tests/docs_pages.py).

Each page is one test: its own earlier commands make the data later ones use (``mitk sample …``); ``stage`` puts in
place only the files a user is assumed to have (real images from tests/data, pydicom's and scikit-image's files).
A command is left out only with a reason written here (``skip``), or when the test named in ``ELSEWHERE`` reads the
page itself, or when it sits in a ``<!-- docs-test: X -->`` block that another test reads.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from docs_pages import ROOT, PageRun, check_page, page_commands

DATA = ROOT / "tests" / "data"
DOCS = ROOT / "docs"

ELSEWHERE = {
    "formats.md": "test_formats_docs.py",
    "reports.md": "test_reports_docs.py",
    "deidentify.md": "test_deidentify.py",
    "pretrained-models.md": "test_bundle_docs.py",
    "serve.md": "test_serve.py",
}
"""Pages whose every command a test runs by reading the page itself (the test file names the page)."""

NOT_HERE = {
    "pip install": "installs packages (no network in tests); the extras are installed by CI's `.[test]`",
    "torchrun": "several processes; tests/test_distributed_training.py runs 2-rank CPU training",
}
"""Command starts that are never run here, on any page, and why."""


def copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)


def dicom_file(name: str) -> Path:
    import pydicom.data

    return Path(pydicom.data.get_testdata_file(name))


def save_picture(array: np.ndarray, target: Path) -> None:
    from PIL import Image as Picture

    Picture.fromarray(array).save(target)


def stage_classification(folder: Path) -> None:
    import nibabel as nib
    import skimage.data

    copy(dicom_file("RG1_UNCR.dcm"), folder / "chest.dcm")
    copy(dicom_file("RG3_UNCR.dcm"), folder / "knee" / "knee.dcm")
    copy(dicom_file("RG1_UNCI.dcm"), folder / "xr.dcm")
    save_picture(skimage.data.retina()[::8, ::8], folder / "fundus.jpg")
    save_picture(skimage.data.camera()[::4, ::4], folder / "photo.png")
    volume = nib.load(DATA / "lung1_image.nii.gz")
    middle = volume.shape[2] // 2
    nib.Nifti1Image(np.asarray(volume.dataobj)[:, :, middle:middle + 1], volume.affine).to_filename(
        folder / "ct_slice.nii.gz")


def stage_detection(folder: Path) -> None:
    from dicom_factory import series_from_nifti

    copy(DATA / "brain1_image.nii.gz", folder / "scan.nii.gz")
    for case in ("brain1", "lung1"):
        copy(DATA / f"{case}_image.nii.gz", folder / "scans" / f"{case}.nii.gz")
    (folder / "tests").mkdir()
    (folder / "tests" / "data").symlink_to(DATA, target_is_directory=True)
    series_from_nifti(DATA / "brain1_image.nii.gz", folder / "dicom_series", modality="MR")


PAGES: dict[str, PageRun] = {
    "classification.md": PageRun(
        stage=stage_classification,
        before={"mitk classify chest.dcm": ("mkdir scans", "cp sample/images/case_05*.nii.gz scans/"),
                "mitk evaluate classify --pred scans.csv --ref labels.csv": ("cp sample/test.csv labels.csv",)},
        files=("run/best.safetensors", "preds.csv", "scans.json", "confusion.png", "scores.csv", "scans_confusion.png",
               "out/case_050_class.json", "out/case_050_gradcam.png", "out/xr_class.json", "out/xr_gradcam.png"),
        printed=("sample classify (2-D; cerebellum, ventricles, vertex): 40 training, 10 validation, 10 test cases"
                 " → sample/train.csv, sample/test.csv",)),
    "detection.md": PageRun(
        stage=stage_detection,
        files=("boxes/brain1_boxes.json", "boxes/brain1_boxes.csv", "boxes/brain1_preview.png",
               "run/best.safetensors", "froc.png")),
}


def covered_blocks(page: Path) -> set[str]:
    """Labels of the page's ``<!-- docs-test: X -->`` blocks that another test module names (and so reads)."""
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("test_*.py")
                        if p.name != Path(__file__).name)
    labels = {c.block for c in page_commands(page) if c.block is not None}
    return {label for label in labels if f'"{label}"' in sources or f"<!-- {label}:start -->" in sources}


def shown_pages() -> list[str]:
    return sorted(p.name for p in DOCS.glob("*.md") if page_commands(p))


@pytest.mark.parametrize("name", sorted(PAGES))
def test_the_page_runs_as_written(name: str, tmp_path: Path) -> None:
    check_page(DOCS / name, PAGES[name], tmp_path, covered_blocks(DOCS / name), NOT_HERE)


def test_every_page_with_commands_is_run() -> None:
    """A page that shows commands has an entry here, or a test that reads it (named in ELSEWHERE)."""
    missing = [name for name in shown_pages() if name not in PAGES and name not in ELSEWHERE]
    assert not missing, f"docs pages whose commands no test runs: {missing}"
    for name, module in ELSEWHERE.items():
        assert name in (ROOT / "tests" / module).read_text(encoding="utf-8"), f"{module} does not read {name}"
