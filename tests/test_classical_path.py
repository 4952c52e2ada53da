"""Classical plugins run without torch or MONAI, and their NumPy path gives the network path's labels exactly."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import invoke
from test_startup import imported_heavy_modules

from mitk.io.reader import load_image
from mitk.runner.model import load_model


def heavy_modules(tmp_path: Path, *args: str) -> list[str]:
    """The torch/MONAI modules a command imports (the probe of tests/test_startup.py)."""
    return imported_heavy_modules(tmp_path, *args)


def test_threshold_segmentation_imports_neither_torch_nor_monai(tmp_path: Path, lung_ct: Path) -> None:
    assert heavy_modules(tmp_path, "segment", str(lung_ct), "--plugin", "threshold", "-d", str(tmp_path / "a"),
                         "--stats") == []
    assert (tmp_path / "a" / "lung1_image_seg.nii.gz").is_file()


def test_the_check_sees_torch_when_a_call_needs_it(tmp_path: Path, lung_ct: Path) -> None:
    """--probabilities takes the network path (only it has probabilities): the probe sees torch there."""
    assert "torch" in heavy_modules(tmp_path, "segment", str(lung_ct), "--plugin", "threshold", "-d",
                                    str(tmp_path / "b"), "--probabilities")


def network_labels(model, image):  # type: ignore[no-untyped-def]
    import torch

    from mitk.tasks.segment.runner import SegmentationRunner

    network = model.plugin.network(model.config).eval()
    return SegmentationRunner(dataclasses.replace(model, network=network, device=torch.device("cpu")))(image)


@pytest.mark.parametrize("settings", [{}, {"threshold": 300}, {"largest_component": False},
                                      {"threshold": -500, "largest_component": False}, {"bins": 64}],
                         ids=["otsu", "fixed", "otsu-all", "fixed-all", "otsu-64"])
def test_the_numpy_path_gives_the_network_paths_labels(settings: dict[str, object], lung_ct: Path,
                                                       brain_mr: Path, anatomical_t1: Path,
                                                       tmp_path: Path) -> None:
    from mitk.tasks.segment.runner import SegmentationRunner

    model = load_model("segment", "threshold", None, overrides=dict(settings))
    assert model.network is None and model.device == "cpu"
    lps = tmp_path / "lps_float64.nii.gz"  # another axis order and a float64 image
    source = nib.load(lung_ct)
    nib.save(nib.Nifti1Image(np.asarray(source.dataobj, dtype=np.float64)[::-1, :, ::-1] * 0.37,
                             source.affine @ np.diag([-1, 1, -1, 1]) + np.array(
                                 [[0, 0, 0, source.affine[0, 0] * 127], [0] * 4,
                                  [0, 0, 0, source.affine[2, 2] * 47], [0] * 4])), lps)
    for path in (lung_ct, brain_mr, anatomical_t1, lps):
        image = load_image(path)
        fast = SegmentationRunner(model)(image)
        slow = network_labels(model, image)
        assert fast.label_map.dtype == slow.label_map.dtype
        assert np.array_equal(fast.label_map, slow.label_map), path.name
        assert fast.label_map.any()
        assert fast.statistics(image) == slow.statistics(image)


def test_segment_array_must_fit_the_grid(lung_ct: Path, mitk_plugins) -> None:  # type: ignore[no-untyped-def]
    """A classical plugin that returns the wrong shape fails that case with a one-line error naming it."""
    from helpers import use_segmenter
    from mitk_builtin._threshold import ThresholdSegmenter

    class Broken(ThresholdSegmenter):
        def segment_array(self, image, config):  # type: ignore[no-untyped-def]
            return np.zeros((3, 3, 3), np.uint8)

    use_segmenter(mitk_plugins, "broken", Broken)
    target = lung_ct.parent.parent / "never_written.nii.gz"
    code, _, err = invoke(["segment", str(lung_ct), "--plugin", "broken", "-o", str(target)])
    assert code == 1 and "returned a label map of shape (3, 3, 3)" in err
    assert not target.exists()


def test_blob_detection_imports_neither_torch_nor_monai(tmp_path: Path, lung_ct: Path) -> None:
    assert heavy_modules(tmp_path, "detect", str(lung_ct), "--plugin", "blob", "-d", str(tmp_path / "d"),
                         "--csv") == []
    assert (tmp_path / "d" / "lung1_image_boxes.json").is_file()


@pytest.mark.parametrize("settings", [{}, {"spacing": None}, {"spacing": [2.0, 2.0, 5.0]},
                                      {"polarity": "both", "threshold": 0.05}],
                         ids=["auto", "native-grid", "blocks", "both-polarities"])
def test_blob_numpy_path_gives_the_tensor_paths_boxes(settings: dict[str, object], lung_ct: Path,
                                                      brain_mr: Path, anatomical_t1: Path) -> None:
    from mitk.tasks.detect.runner import DetectionRunner

    model = load_model("detect", "blob", None, overrides=dict(settings))
    assert model.network is None and model.device == "cpu"
    found = 0
    for path in (lung_ct, brain_mr, anatomical_t1):
        image = load_image(path)
        fast = DetectionRunner(model)
        assert fast.classical
        slow = DetectionRunner(model)
        slow.classical, slow.preprocess = False, model.plugin.inference_transforms(model.config)
        a, b = fast(image), slow(image)
        assert np.array_equal(a.boxes_voxel, b.boxes_voxel), path.name
        assert np.array_equal(a.scores, b.scores) and np.array_equal(a.labels, b.labels)
        found += len(a.scores)
    assert found > 0


@pytest.mark.parametrize("command", ["convert", "info", "boxes", "manifest"])
def test_io_commands_import_neither_torch_nor_monai(command: str, tmp_path: Path, lung_ct: Path,
                                                    lung_ct_label: Path) -> None:
    if command == "manifest":  # the manifest of a classical batch, then `mitk manifest merge` over it
        assert heavy_modules(tmp_path, "segment", str(lung_ct), "--plugin", "threshold", "-d",
                             str(tmp_path / "seg"), "--manifest", str(tmp_path / "m.jsonl")) == []
    args = {"convert": ["convert", str(lung_ct), str(tmp_path / "ct.nii.gz")],
            "info": ["info", str(lung_ct), "--json"],
            "boxes": ["boxes", str(lung_ct_label), "-o", str(tmp_path / "boxes")],
            "manifest": ["manifest", "merge", str(tmp_path / "m.jsonl"), "-o", str(tmp_path / "all.jsonl")]}
    assert heavy_modules(tmp_path, *args[command]) == []


def test_numpy_labelling_equals_scipy(lung_ct: Path, brain_mr: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The NumPy 6-connected labelling of small masks gives scipy.ndimage.label's array and count exactly
    (scikit-image's ``measure.label`` of a boolean mask, which MONAI's largest-component transform uses)."""
    import mitk_builtin._labelling as labelling
    from scipy import ndimage

    rng = np.random.default_rng(0)
    masks = [rng.random(tuple(rng.integers(1, 12, rng.integers(1, 4)))) < rng.random() for _ in range(150)]
    masks += [np.zeros((4, 5, 6), bool), np.ones((4, 5, 6), bool), rng.random((64, 64, 64)) < 0.3]
    for path, cuts in ((lung_ct, (-500, 0, 300)), (brain_mr, (100, 400))):
        array = np.asarray(nib.load(path).dataobj)
        masks += [array > cut for cut in cuts] + [(array > cuts[0])[:, :, 10]]  # 3-D and a 2-D slice
    counts = []
    for mask in masks:
        ours, count = labelling.label(mask)
        theirs, expected = ndimage.label(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1))
        assert count == expected and ours.dtype == theirs.dtype and np.array_equal(ours, theirs), mask.shape
        counts.append(count)
    assert max(counts[-7:]) > 100  # the real masks have many structures
    monkeypatch.setattr(labelling, "NUMPY_LIMIT", 100)  # a larger mask goes to scipy: the same answer
    assert np.array_equal(labelling.label(masks[-1])[0], ndimage.label(masks[-1])[0])


LEAN_PROBE = """
import json, sys
from mitk.cli import main
try:
    main(sys.argv[2:])
except SystemExit:
    pass
json.dump(sorted(m for m in ("pydicom", "scipy.ndimage", "skimage", "rich.console", "mitk.cli.train")
                 if m in sys.modules), open(sys.argv[1], "w"))
"""


def test_a_small_threshold_call_imports_only_what_it_uses(tmp_path: Path, anatomical_t1: Path) -> None:
    """`mitk -q segment` of a small volume with `threshold`: no pydicom (nibabel asks for it), no scipy.ndimage
    or scikit-image (the labelling is NumPy's below 2M voxels), no rich (nothing printed), no other command."""
    import subprocess
    import sys

    report = tmp_path / "modules.json"
    done = subprocess.run([sys.executable, "-c", LEAN_PROBE, str(report), "-q", "segment", str(anatomical_t1),
                           "--plugin", "threshold", "-d", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=120)
    assert report.exists(), done.stderr
    assert (tmp_path / "out" / "anatomical_seg.nii.gz").is_file()
    assert json.loads(report.read_text()) == []


def test_evaluate_register_imports_neither_torch_nor_monai(tmp_path: Path, lung_ct_label: Path) -> None:
    assert heavy_modules(tmp_path, "evaluate", "register", "--warped-labels", str(lung_ct_label),
                         "--fixed-labels", str(lung_ct_label), "--json") == []
