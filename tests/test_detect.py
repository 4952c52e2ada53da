"""``mitk detect`` end to end: boxes found on a reoriented, resampled grid come back to the input's voxels.

A bright cube of known position is planted into a real T1 stored with permuted, flipped and oblique axes.
The test detector reorients to RAS and resamples to 1.5 mm before thresholding, so the runner must map its
boxes back through both; SimpleITK gives the world extent independently.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from helpers import invoke, load

from mitk import hookimpl
from mitk.tasks import DetectionPlugin, Transform
from mitk.types import DetectionResult

PLUGIN = "bright-cube"
CUBE = (slice(14, 20), slice(9, 16), slice(10, 15))
"""The planted cube in the stored volume's voxel indices (end exclusive)."""
CUBE_BOX = np.array([s.start for s in CUBE] + [s.stop for s in CUBE], dtype=float)


class BrightCubeDetector(DetectionPlugin):
    """Boxes the voxels above ``threshold`` after reorienting to RAS and resampling to ``spacing``."""

    needs_weights = False
    trainable = False

    def default_config(self) -> dict[str, Any]:
        return {"spacing": [1.5, 1.5, 1.5], "threshold": 0.0, "labels": {3: "cube"}}

    def inference_transforms(self, config: dict[str, Any]) -> Transform:
        from monai.transforms import Compose, Orientationd, Spacingd

        return Compose([
            Orientationd(keys="image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
            Spacingd(keys="image", pixdim=tuple(config["spacing"]), mode="bilinear"),
        ])

    def detect(self, image: Any, model: Any, config: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        affine = np.asarray(image.affine, float)
        assert np.allclose(np.linalg.norm(affine[:3, :3], axis=0), config["spacing"])  # the runner preprocessed
        assert nib.aff2axcodes(affine) == ("R", "A", "S")
        found = np.argwhere(np.asarray(image[0]) > float(config["threshold"]))
        if len(found) == 0:
            return np.zeros((0, 6)), np.zeros(0), np.zeros(0, int)
        box = np.concatenate([found.min(axis=0), found.max(axis=0) + 1]).astype(float)
        return box[None], np.array([0.875]), np.array([3])


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, cy, cz = np.cos(np.radians([ax, ay, az]))
    sx, sy, sz = np.sin(np.radians([ax, ay, az]))
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


@pytest.fixture(scope="module")
def oblique_t1(anatomical_t1: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """The T1 with axes permuted (k, i, j), the first stored axis flipped, the whole grid rotated; a cube planted."""
    t1 = load(anatomical_t1)
    data = np.asarray(t1.dataobj, dtype=np.float32)
    affine = np.asarray(t1.affine, float)
    permuted = np.transpose(data, (2, 0, 1))[::-1]  # stored axis 0 = reversed k, 1 = i, 2 = j
    columns = np.stack([-affine[:, 2], affine[:, 0], affine[:, 1], affine[:, 3]], axis=1)
    columns[:, 3] += affine[:, 2] * (data.shape[2] - 1)
    oblique = columns.copy()
    oblique[:3] = rotation(12.0, -8.0, 20.0) @ columns[:3]
    assert nib.aff2axcodes(oblique) not in (("R", "A", "S"), nib.aff2axcodes(affine))
    bright = 4.0 * float(data.max())
    planted = np.ascontiguousarray(permuted)
    planted[CUBE] = bright
    image = nib.Nifti1Image(planted, oblique)
    image.set_qform(oblique, code=1)
    image.set_sform(oblique, code=1)
    path = tmp_path_factory.mktemp("detect") / "oblique_t1.nii.gz"
    nib.save(image, path)
    return path, bright


@pytest.fixture
def detector(mitk_plugins: Callable[..., Any]) -> None:
    class Plugin:
        @staticmethod
        @hookimpl
        def mitk_register_plugins(register: Any) -> None:
            register(PLUGIN, task="detect", factory=BrightCubeDetector)

    mitk_plugins(Plugin())


def sitk_extent(path: Path, box: np.ndarray) -> np.ndarray:
    """World extent (x0, y0, z0, x1, y1, z1), LPS, of a voxel box: its 8 outer corners through SimpleITK."""
    image = sitk.ReadImage(str(path))
    lo, hi = box[:3] - 0.5, box[3:] - 0.5
    corners = np.array([image.TransformContinuousIndexToPhysicalPoint((float(a), float(b), float(c)))
                        for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    return np.concatenate([corners.min(axis=0), corners.max(axis=0)])


def lps_to_ras_extent(extent: np.ndarray) -> np.ndarray:
    """Negate x and y; their min and max swap."""
    x0, y0, z0, x1, y1, z1 = extent
    return np.array([-x1, -y1, z0, -x0, -y0, z1])


@pytest.mark.usefixtures("detector")
@pytest.mark.parametrize("spacing", ["[1.5,1.5,1.5]", "[2.5,1.1,3.0]"])
def test_boxes_come_back_to_the_input_grid(oblique_t1: tuple[Path, float], spacing: str, tmp_path: Path) -> None:
    path, bright = oblique_t1
    out = tmp_path / "out"
    code, stdout, stderr = invoke(["detect", "--plugin", PLUGIN, str(path), "--set", f"threshold={bright / 2}",
                                   "--set", f"spacing={spacing}", "-d", str(out), "--json"])
    assert code == 0, stderr
    [record] = json.loads(stdout)["cases"]
    [box] = record["boxes"]
    assert (box["label"], box["name"], box["score"], box["coordinate_system"]) == (3, "cube", 0.875, "RAS")
    voxel = np.asarray(box["box_voxel"])
    # The box holds the planted cube (within a voxel) and no more than a voxel around it.
    assert np.all(voxel[:3] <= CUBE_BOX[:3] + 1) and np.all(voxel[3:] >= CUBE_BOX[3:] - 1), voxel
    assert np.allclose(voxel, CUBE_BOX, atol=1.0), voxel

    # World millimetres: SimpleITK's voxel → LPS mapping of the reported box, converted to RAS here.
    assert np.allclose(box["box_world_mm"], lps_to_ras_extent(sitk_extent(path, voxel)), atol=1e-3)
    # ... and the true cube's extent, up to a voxel (2 mm) on each face.
    assert np.allclose(box["box_world_mm"], lps_to_ras_extent(sitk_extent(path, CUBE_BOX)), atol=2.0 * np.sqrt(3))

    written = json.loads((out / "oblique_t1_boxes.json").read_text())
    assert written["input"] == str(path) and written["boxes"] == record["boxes"]


@pytest.mark.usefixtures("detector")
def test_no_detection_gives_an_empty_list(oblique_t1: tuple[Path, float]) -> None:
    path, bright = oblique_t1
    code, stdout, stderr = invoke(["detect", "--plugin", PLUGIN, str(path), "--set", f"threshold={2 * bright}",
                                   "--json"])
    assert code == 0, stderr
    assert json.loads(stdout)["cases"][0]["boxes"] == []


def test_boxes_world_in_lps(oblique_t1: tuple[Path, float]) -> None:
    path, _ = oblique_t1
    affine = load(path).affine
    boxes = np.array([CUBE_BOX, [0.0, 3.0, 1.0, 5.0, 4.0, 9.0]])
    common: dict[str, Any] = {"boxes_voxel": boxes, "affine": affine, "scores": np.ones(2),
                              "labels": np.ones(2, int), "label_names": {1: "cube"}}
    ras = DetectionResult(**common).boxes_world
    lps = DetectionResult(**common, coordinate_system="LPS").boxes_world
    for n, box in enumerate(boxes):
        assert np.allclose(lps[n], sitk_extent(path, box), atol=1e-6)
        assert np.allclose(ras[n], lps_to_ras_extent(sitk_extent(path, box)), atol=1e-6)
    assert np.all(lps[:, :3] < lps[:, 3:]) and np.all(ras[:, :3] < ras[:, 3:])
    assert DetectionResult(**common, coordinate_system="LPS").to_dicts()[0]["coordinate_system"] == "LPS"
