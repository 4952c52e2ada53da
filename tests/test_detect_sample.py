"""``mitk sample detect``: lesions of known centre and radius planted into real anatomy under random affines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import invoke


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sample_detect")
    code, stdout, stderr = invoke(["sample", "detect", "-d", str(folder), "--cases", "3", "--seed", "4", "--json"])
    assert code == 0, stderr
    assert json.loads(stdout)["boxes"] >= 3
    return folder


def test_sample_boxes_are_where_the_lesions_are(sample: Path) -> None:
    document = json.loads((sample / "dataset.json").read_text())
    assert (document["box_mode"], document["box_coordinates"], document["coordinate_system"]) == \
        ("xyzxyz", "world", "RAS")
    for split in ("training", "validation", "test"):
        for entry in document[split]:
            image = sitk.ReadImage(str(sample / entry["image"]))
            array = sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(float)  # (i, j, k)
            background = float(np.percentile(array, 90))
            name = Path(entry["image"]).name.replace(".nii.gz", "_boxes.json")
            reference = json.loads((sample / ("boxesTs" if split == "test" else "boxesTr") / name).read_text())
            assert [b["box_world_mm"] for b in reference["boxes"]] == entry["box"]
            for lesion in reference["boxes"]:
                # The centre voxel (SimpleITK's physical → index, from LPS) holds the planted intensity.
                centre_lps = np.array(lesion["centre_world_mm"]) * np.array([-1, -1, 1])
                index = image.TransformPhysicalPointToIndex(tuple(centre_lps))
                value = array[tuple(index)]
                assert value > 1.4 * background if lesion["label"] == 1 else value < 0.5 * background
                x0, y0, z0, x1, y1, z1 = lesion["box_world_mm"]
                assert np.allclose([x1 - x0, y1 - y0, z1 - z0], 2 * lesion["radius_mm"], atol=1e-3)


def test_sample_is_reproducible(sample: Path, tmp_path: Path) -> None:
    code, _, stderr = invoke(["sample", "detect", "-d", str(tmp_path), "--cases", "3", "--seed", "4"])
    assert code == 0, stderr
    assert (tmp_path / "dataset.json").read_bytes() == (sample / "dataset.json").read_bytes()
    assert (tmp_path / "imagesTs" / "case_002.nii.gz").read_bytes() == \
        (sample / "imagesTs" / "case_002.nii.gz").read_bytes()


def test_blob_and_evaluate_on_the_sample(sample: Path) -> None:
    """End to end: blob finds the planted lesions; ``mitk evaluate detect`` scores them against the sample."""
    predictions = sample / "pred"
    code, _, stderr = invoke(["detect", "--plugin", "blob", str(sample / "imagesTr"), "-d", str(predictions),
                              "--set", "polarity=both", "--set", "threshold=0.3"])
    assert code == 0, stderr
    code, stdout, stderr = invoke(["evaluate", "detect", "--pred", str(predictions), "--ref",
                                   str(sample / "boxesTr"), "--json"])
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["scans"] == 2 and result["AR_0.1"] > 0.6 and result["froc"]["sensitivity"]["8.0"] > 0.6


@pytest.mark.parametrize("name", ["brain1", "lung1"])
def test_real_lesion_boxes_match_their_labels(name: str, tmp_path: Path) -> None:
    """``--real``: the tumour (MR) and lung nodule (CT) of tests/data, re-stored in a random axis order; the
    union of their boxes is the world extent of the label's voxels by SimpleITK."""
    data = Path(__file__).parent / "data"
    code, _, stderr = invoke(["sample", "detect", "-d", str(tmp_path), "--cases", "3", "--real", str(data)])
    assert code == 0, stderr
    index = sorted(p.name for p in data.glob("*_image.nii.gz")).index(f"{name}_image.nii.gz")
    reference = json.loads((tmp_path / "boxesTr" / f"real_{index:03d}_boxes.json").read_text())
    assert reference["source"] == f"{name}_image.nii.gz" and reference["boxes"]
    boxes = np.array([b["box_world_mm"] for b in reference["boxes"]])
    label = sitk.ReadImage(str(data / f"{name}_label.nii.gz"))
    voxels = np.argwhere(sitk.GetArrayFromImage(label).transpose(2, 1, 0) > 0)
    half = np.array(label.GetSpacing()) / 2
    lps = np.array([label.TransformIndexToPhysicalPoint([int(v) for v in voxel]) for voxel in voxels[::7]]
                   + [label.TransformIndexToPhysicalPoint([int(v) for v in voxels.min(axis=0)]),
                      label.TransformIndexToPhysicalPoint([int(v) for v in voxels.max(axis=0)])])
    ras = lps * np.array([-1, -1, 1])
    expected = np.concatenate([ras.min(axis=0) - half, ras.max(axis=0) + half])
    assert np.allclose(np.concatenate([boxes[:, :3].min(axis=0), boxes[:, 3:].max(axis=0)]), expected, atol=1e-3)
    document = json.loads((tmp_path / "dataset.json").read_text())
    entry = next(e for e in document["training"] if e["image"].endswith(f"real_{index:03d}.nii.gz"))
    assert entry["box"] == boxes.tolist() and set(entry["label"]) == {1}
    restored = sitk.ReadImage(str(tmp_path / entry["image"]))  # same world, other axis order: same centre
    centre = np.array(restored.TransformContinuousIndexToPhysicalPoint(
        [(n - 1) / 2 for n in restored.GetSize()]))
    original = sitk.ReadImage(str(data / f"{name}_image.nii.gz"))
    assert np.allclose(centre, original.TransformContinuousIndexToPhysicalPoint(
        [(n - 1) / 2 for n in original.GetSize()]), atol=1e-3)
