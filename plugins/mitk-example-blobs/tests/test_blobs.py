"""Tests a plugin author would write: the detector finds planted blobs, and the hook registers it."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

try:
    import mitk_example_blobs
except ImportError:  # not installed: test the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import mitk_example_blobs

from mitk_example_blobs._detector import BlobDetector, find_blobs

from mitk.registry import missing_methods


def _anatomical() -> Path:
    """nibabel's real T1 (2 mm voxels), shipped with nibabel."""
    import nibabel

    return Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"


def _load(path: Path) -> Any:
    import nibabel

    return nibabel.load(path)


@pytest.fixture(scope="module")
def t1_with_blobs() -> tuple[np.ndarray, list[tuple[slice, slice, slice]]]:
    """nibabel's real T1 (2 mm voxels) with two bright cubes planted at known voxel positions."""
    volume = np.asanyarray(_load(_anatomical()).dataobj).astype(np.float32)
    cubes = [(slice(5, 9), slice(10, 14), slice(8, 12)), (slice(20, 23), slice(25, 30), slice(15, 18))]
    for cube in cubes:
        volume[cube] = 4 * volume.max()
    return volume, cubes


def test_find_blobs_boxes_the_planted_cubes(t1_with_blobs: tuple[np.ndarray, list[tuple[slice, slice, slice]]]) -> None:
    volume, cubes = t1_with_blobs
    boxes, scores = find_blobs(volume, (2.0, 2.0, 2.0), sigma_mm=1.0)
    assert len(boxes) == len(cubes)
    assert np.all((scores > 0) & (scores < 1))
    expected = sorted([s.start for s in cube] + [s.stop for s in cube] for cube in cubes)
    found = sorted(boxes.astype(int).tolist())
    for box, truth in zip(found, expected, strict=True):
        assert np.abs(np.array(box) - np.array(truth)).max() <= 1, (box, truth)


def test_find_blobs_ignores_plain_anatomy(t1_with_blobs: tuple[np.ndarray, list[tuple[slice, slice, slice]]]) -> None:
    plain = np.asanyarray(_load(_anatomical()).dataobj).astype(np.float32)
    boxes, _ = find_blobs(plain, (2.0, 2.0, 2.0))
    assert len(boxes) == 0


def test_hook_registers_a_detector_without_importing_it(mitk_plugins: Callable[..., Any]) -> None:
    registry = mitk_plugins(mitk_example_blobs)  # live for this test: registry, runners and CLI all see it
    entry = registry.get("blobs", "detect")
    assert entry.factory == "mitk_example_blobs._detector:BlobDetector"
    plugin = entry.load()
    assert isinstance(plugin, BlobDetector)
    assert not plugin.needs_weights and not plugin.trainable
    assert missing_methods(plugin) == []


def test_detect_command_boxes_the_planted_cubes(
        mitk_plugins: Callable[..., Any], t1_with_blobs: tuple[np.ndarray, list[tuple[slice, slice, slice]]],
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``mitk detect --plugin blobs``, run in-process, with the plugin live through the ``mitk_plugins`` fixture."""
    import nibabel

    from mitk.cli import main

    volume, cubes = t1_with_blobs
    path = tmp_path / "t1_with_blobs.nii.gz"
    nibabel.save(nibabel.Nifti1Image(volume, _load(_anatomical()).affine), path)
    mitk_plugins(mitk_example_blobs)
    with pytest.raises(SystemExit) as done:
        main(["detect", "--plugin", "blobs", str(path), "--json"])
    captured = capsys.readouterr()
    assert done.value.code == 0, captured.err
    (record,) = json.loads(captured.out)["cases"]
    found = sorted(np.rint(box["box_voxel"]).astype(int).tolist() for box in record["boxes"])
    expected = sorted([s.start for s in cube] + [s.stop for s in cube] for cube in cubes)
    assert len(found) == len(expected)
    for box, truth in zip(found, expected, strict=True):
        assert np.abs(np.array(box) - np.array(truth)).max() <= 1, (box, truth)
