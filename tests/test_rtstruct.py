"""RTSTRUCT from a label map (rt-utils): on a real CT series written with non-square pixels, the contours lie in
the series' frame of reference and, filled back independently (skimage, even-odd per slice), give each label
with Dice >= 0.95; dciodvfy finds no error; an anonymised series gets minted UIDs with a warning."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_factory import load_nifti, orient_volume, write_series
from helpers import invoke
from test_dicom_seg import image_from_series

from mitk.image import ras_to_lps
from mitk.tasks.segment.result import SegmentationResult
from mitk.tasks.segment.rtstruct import write_rtstruct

pytest.importorskip("rt_utils")
DCIODVFY = shutil.which("dciodvfy")
SLICES = slice(26, 40)  # the lesion's slices and some around them, to keep the test fast


@pytest.fixture(scope="module")
def ct(lung_ct: Path, lung_ct_label: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    array, affine = load_nifti(lung_ct)
    lesion, _ = load_nifti(lung_ct_label)
    oriented, oriented_affine = orient_volume(array[:, :, SLICES], affine @ np.diag([1, 1, 1, 1]), "axial")
    oriented_affine = oriented_affine.copy()
    oriented_affine[:3, 3] += oriented_affine[:3, 2] * SLICES.start
    oriented_affine[:3, 1] *= 1.4  # non-square pixels: rows 0.80 mm apart, columns 0.57 mm
    lesion_map, _ = orient_volume(lesion[:, :, SLICES], affine, "axial")
    labels = np.where(oriented > -400, 1, 0).astype(np.uint8)  # body: the lungs are holes in it
    labels[lesion_map > 0] = 2
    series = write_series(oriented, oriented_affine, tmp_path_factory.mktemp("rt") / "series")
    return {"series": series, "labels": labels}


def filled(structure: pydicom.Dataset, number: int, image_affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """ROI ``number`` rasterised on the image grid, independently of rt-utils: each contour's points (LPS) mapped
    to voxels, the polygon and its vertices filled, contours of one slice combined by the even-odd rule."""
    from skimage.draw import polygon

    to_voxels = np.linalg.inv(ras_to_lps(image_affine))
    mask = np.zeros(shape, bool)
    [roi] = [r for r in structure.ROIContourSequence if int(r.ReferencedROINumber) == number]
    for contour in roi.ContourSequence:
        points = np.asarray(contour.ContourData, float).reshape(-1, 3)
        voxels = (to_voxels @ np.c_[points, np.ones(len(points))].T).T[:, :3]
        k = np.rint(voxels[:, 2])
        assert np.abs(voxels[:, 2] - k).max() < 1e-3 and len(set(k)) == 1  # on one source slice
        assert np.abs(voxels[:, :2] - np.rint(voxels[:, :2])).max() < 1e-3  # through pixel centres
        inside = np.zeros(shape[:2], bool)
        i, j = polygon(voxels[:, 0], voxels[:, 1], shape[:2])
        inside[i, j] = True
        inside[np.rint(voxels[:, 0]).astype(int), np.rint(voxels[:, 1]).astype(int)] = True
        mask[:, :, int(k[0])] ^= inside
    return mask


def test_rtstruct_contours_fill_back_to_the_labels(ct: dict[str, object], tmp_path: Path) -> None:
    image = image_from_series(ct["series"])
    labels = ct["labels"]
    assert isinstance(labels, np.ndarray)
    label_names = {0: "background", 1: "body", 2: "lesion", 3: "nodule"}
    result = SegmentationResult(label_map=labels, affine=image.affine, labels=label_names)
    path = write_rtstruct(result, image, tmp_path / "rt.dcm", plugin_name="threshold")
    structure = pydicom.dcmread(path)
    names = {int(r.ROINumber): r.ROIName for r in structure.StructureSetROISequence}
    assert names == {1: "body", 2: "lesion", 3: "nodule"}  # a label absent from the case keeps its ROI
    assert "ContourSequence" not in structure.ROIContourSequence[2]
    headers = image.meta["dicom"].headers
    assert {str(r.FrameOfReferenceUID) for r in structure.ReferencedFrameOfReferenceSequence} == {
        str(headers[0].FrameOfReferenceUID)}
    for number, value in ((1, 1), (2, 2)):
        expected = labels == value
        got = filled(structure, number, image.affine, labels.shape)
        dice = 2 * (got & expected).sum() / (got.sum() + expected.sum())
        assert dice >= 0.95, (names[number], dice)
    if DCIODVFY is not None:
        run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
        assert [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")] == []


def test_segment_rtstruct_on_an_anonymised_series(ct: dict[str, object], tmp_path: Path,
                                                    lung_ct: Path) -> None:
    series = ct["series"]
    folder = tmp_path / "anonymised"
    folder.mkdir()
    for file in series.files:  # type: ignore[attr-defined]
        dataset = pydicom.dcmread(file)
        del dataset.StudyInstanceUID, dataset.FrameOfReferenceUID
        dataset.save_as(folder / Path(file).name)
    out = tmp_path / "out"
    code, _, stderr = invoke(["segment", str(folder), "--plugin", "threshold", "--set", "threshold=-400",
                              "--rtstruct", "-d", str(out), "--manifest", str(tmp_path / "m.jsonl")])
    assert code == 0, stderr
    assert "minted for the RTSTRUCT" in stderr
    [record] = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert {"for": "RTSTRUCT", "keywords": ["StudyInstanceUID", "FrameOfReferenceUID"]} in \
        record["provenance"]["minted_uids"]
    structure = pydicom.dcmread(record["rtstruct"])
    assert structure.Modality == "RTSTRUCT" and len(structure.ROIContourSequence[0].ContourSequence) > 0
    if DCIODVFY is not None:
        run = subprocess.run([DCIODVFY, record["rtstruct"]], capture_output=True, text=True, timeout=60)
        assert [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")] == []
    code, stdout, stderr = invoke(["replay", str(tmp_path / "m.jsonl")])  # UIDs and dates aside, the same file
    assert code == 0 and "1 identical, 0 different" in stdout + stderr, stdout + stderr
    code, _, stderr = invoke(["segment", str(lung_ct), "--plugin", "threshold", "--rtstruct", "-d",
                              str(tmp_path / "nifti")])
    assert code == 1 and "--rtstruct needs a DICOM input" in stderr


def test_without_rt_utils_the_extra_is_named(monkeypatch: pytest.MonkeyPatch, lung_ct: Path, tmp_path: Path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "rt_utils", None)  # not installed: import fails
    code, _, stderr = invoke(["segment", str(lung_ct), "--plugin", "threshold", "--rtstruct", "-d", str(tmp_path)])
    assert code == 2 and 'install it with: pip install "mitk[rtstruct]"' in stderr and "--rtstruct" in stderr
    assert list(tmp_path.iterdir()) == []
