"""The example third-party plugin, installed the way a user installs it, found by ``mitk`` and run end to end.

``plugins/mitk-example-blobs`` is built with pip (hatchling, no network) into a private folder that goes on
``PYTHONPATH`` for subprocesses only: the test environment itself is not changed. Three bright spheres of
known size are planted at known world positions into a real T1 whose affine permutes and flips the axes, and
``mitk detect`` must report boxes in RAS millimetres around them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from helpers import install_plugin_project

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_PROJECT = ROOT / "plugins" / "mitk-example-blobs"

# Voxel axes point to P, S and L, with anisotropic voxels and an origin away from zero.
AFFINE = np.array([
    [0.0, 0.0, -2.5, 60.0],
    [-1.5, 0.0, 0.0, 40.0],
    [0.0, 2.0, 0.0, -30.0],
    [0.0, 0.0, 0.0, 1.0],
])
SPACING_RAS = np.abs(AFFINE[:3, :3]).sum(axis=1)  # voxel size along x, y, z
CENTRES = [(-10.0, 10.0, 0.0), (15.0, -5.0, 10.0), (5.0, 20.0, -12.0)]
RADII = [5.0, 4.0, 6.0]


def load(path: Path) -> Any:
    """``nibabel.load``, typed loosely (nibabel's stubs know only the base image class)."""
    return nib.load(path)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install --no-deps --no-build-isolation --target SITE plugins/mitk-example-blobs``."""
    target = install_plugin_project(PLUGIN_PROJECT, tmp_path_factory.mktemp("site"))
    assert (target / "mitk_example_blobs" / "_detector.py").exists()
    return target


def run_child(site: Path, code: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MITK_")}
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


CLI_AND_REPORT_HEAVY_MODULES = """
import json, sys
from mitk.cli import main
try:
    main(sys.argv[1:])
except SystemExit as done:
    code = done.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "monai"))
sys.stderr.write("HEAVY=" + json.dumps(heavy) + "\\n")
sys.exit(code)
"""


def heavy_modules(stderr: str) -> list[str]:
    line = [x for x in stderr.splitlines() if x.startswith("HEAVY=")][-1]
    return list(json.loads(line[len("HEAVY="):]))


def test_plugins_list_finds_the_installed_plugin_without_torch(site: Path, tmp_path: Path) -> None:
    result = run_child(site, CLI_AND_REPORT_HEAVY_MODULES, "plugins", "list", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [r for r in json.loads(result.stdout)["plugins"] if r["name"] == "blobs"]
    assert rows == [{
        "name": "blobs", "task": "detect", "version": "0.1.0", "distribution": "mitk-example-blobs",
        "status": "ok", "summary": rows[0]["summary"], "source": "blobs",
    }]
    assert heavy_modules(result.stderr) == []


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory, anatomical_t1: Path) -> tuple[Path, list[np.ndarray]]:
    """The real T1 on a P-S-L grid with three bright spheres; returns the file and each sphere's world box."""
    data = np.asarray(load(anatomical_t1).dataobj).astype(np.float32)
    data = np.ascontiguousarray(np.transpose(data, (1, 2, 0)))  # the anatomy now runs along new axes
    bright = 4.0 * float(data.max())
    indices = np.indices(data.shape).reshape(3, -1)
    world = (AFFINE[:3, :3] @ indices + AFFINE[:3, 3:]).T.reshape(*data.shape, 3)
    truths = []
    for centre, radius in zip(CENTRES, RADII, strict=True):
        inside = np.linalg.norm(world - np.array(centre), axis=-1) <= radius
        data[inside] = bright
        points = world[inside]  # voxel centres; a voxel reaches half its size beyond
        truths.append(np.concatenate([points.min(axis=0) - SPACING_RAS / 2, points.max(axis=0) + SPACING_RAS / 2]))
    path = tmp_path_factory.mktemp("planted") / "t1_with_spheres.nii.gz"
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    assert "".join(nib.aff2axcodes(load(path).affine)) == "PSL"
    return path, truths


def match(boxes: list[dict[str, Any]], centre: tuple[float, float, float]) -> dict[str, Any]:
    containing = [b for b in boxes if np.all(np.array(b["box_world_mm"][:3]) <= centre)
                  and np.all(np.array(centre) <= np.array(b["box_world_mm"][3:]))]
    assert len(containing) == 1, (centre, boxes)
    return containing[0]


def test_detect_finds_the_planted_spheres(site: Path, planted: tuple[Path, list[np.ndarray]],
                                          tmp_path: Path) -> None:
    path, truths = planted
    result = run_child(site, "from mitk.cli import main; main()", "detect", "--plugin", "blobs", str(path),
                       "--output-dir", str(tmp_path / "boxes"), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["plugin"] == "blobs" and document["plugin_version"] == "0.1.0"
    boxes = document["cases"][0]["boxes"]
    assert len(boxes) == len(CENTRES)
    for centre, truth in zip(CENTRES, truths, strict=True):
        box = match(boxes, centre)
        assert box["coordinate_system"] == "RAS" and box["name"] == "blob" and 0 < box["score"] < 1
        # Every face within one voxel (along that world axis) of the planted sphere's voxels.
        error = np.abs(np.array(box["box_world_mm"]) - truth)
        assert np.all(error <= np.tile(SPACING_RAS, 2) + 1e-3), (centre, box["box_world_mm"], truth)
    written = json.loads((tmp_path / "boxes" / "t1_with_spheres_boxes.json").read_text())
    assert written["boxes"] == boxes
