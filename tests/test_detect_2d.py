"""2-D detection: `mitk sample detect --dims 2` (discs in real MNI152 slices), `mitk train detect` making a 2-D
RetinaNet from one-slice images, `mitk detect` on 2-D NIfTI and PNG with boxes in pixels and mm (SimpleITK as the
geometry oracle), and a 2-D model refusing a volume (and a 3-D model a slice) in one line."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import invoke

TINY = ["--set", "sampling.patch_size=[32,32,32]", "--set", "backbone.block_inplanes=[8,8,16,16]",
        "--set", "backbone.fpn_channels=8"]
EVERY_BOX = ["--set", "selector.score_thresh=0.0", "--set", "selector.detections_per_img=20"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("detect2d")
    sample, run = root / "sample", root / "run"
    code, _, stderr = invoke(["sample", "detect", "-d", str(sample), "--dims", "2", "--cases", "6", "--size", "64",
                              "--seed", "3"])
    assert code == 0, stderr
    code, _, stderr = invoke(["train", "detect", "--plugin", "retinanet", "--data", str(sample), "-d", str(run),
                              "--epochs", "1", *TINY])
    assert code == 0, stderr
    return sample, run


def _itk_world(path: Path, index: list[float]) -> np.ndarray:
    """SimpleITK's world point (RAS) of a continuous voxel index of the image at ``path``."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    lps = image.TransformContinuousIndexToPhysicalPoint([float(v) for v in index[: image.GetDimension()]])
    return np.array([-lps[0], -lps[1], *lps[2:]])


def test_sample_2d_plants_discs_with_pixel_boxes(trained: tuple[Path, Path]) -> None:
    sample, _ = trained
    dataset = json.loads((sample / "dataset.json").read_text())
    assert dataset["box_coordinates"] == "voxel" and dataset["mitk_sample"]["dims"] == 2
    record = json.loads((sample / "boxesTr" / "case_000_boxes.json").read_text())
    image = nib.load(sample / "imagesTr" / "case_000.nii.gz")
    array = np.asarray(image.dataobj)[:, :, 0].astype(float)
    assert image.shape == (64, 64, 1) and record["boxes"]
    for lesion in record["boxes"]:
        box = np.asarray(lesion["box_voxel"])
        assert box[2] == 0 and box[5] == 1 and np.all(box[:2] >= 0) and np.all(box[3:5] <= 64)
        centre = (box[:3] + box[3:]) / 2 - 0.5
        # the disc's centre is the lesion centre: SimpleITK's physical point of that pixel
        assert np.allclose(_itk_world(sample / "imagesTr" / "case_000.nii.gz", centre.tolist())[:2],
                           lesion["centre_world_mm"][:2], atol=1e-3)
        i, j = np.rint(centre[:2]).astype(int)
        inside, ring = array[i, j], np.median(array[max(i - 6, 0): i + 7, max(j - 6, 0): j + 7])
        assert (inside > ring) if lesion["label"] == 1 else (inside < ring)


def test_training_on_slices_makes_a_2d_model_that_detects_in_pixels_and_mm(trained: tuple[Path, Path],
                                                                           tmp_path: Path) -> None:
    from PIL import Image as Picture

    from mitk.checkpoint import load_checkpoint

    sample, run = trained
    checkpoint = load_checkpoint(run / "best.safetensors")
    assert checkpoint.config["spatial_dims"] == 2 and len(checkpoint.config["anchors"]["base_shapes"]) == 2
    scan = sample / "imagesTs" / "case_005.nii.gz"
    code, stdout, stderr = invoke(["detect", str(scan), "--weights", str(run / "best.safetensors"), "--json",
                                   *EVERY_BOX])
    assert code == 0, stderr
    [case] = json.loads(stdout)["cases"]
    assert case["boxes"] and case["spacing_source"] == "file header"
    for box in case["boxes"]:
        voxel = np.asarray(box["box_voxel"])
        assert np.allclose(voxel[[2, 5]], [0, 1]) and np.all(voxel[:2] >= -0.5) and np.all(voxel[3:5] <= 64.5)
        assert np.allclose(_itk_world(scan, box["centre_voxel"]), box["centre_world_mm"], atol=1e-3)
    # the same slice as an 8-bit PNG: pixels, and mm at the assumed 1 mm spacing (columns → −x, rows → −y)
    plane = np.asarray(nib.load(scan).dataobj)[:, :, 0].astype(float)
    picture = tmp_path / "slice.png"
    Picture.fromarray((255 * plane / plane.max()).astype(np.uint8).T).save(picture)
    code, stdout, stderr = invoke(["detect", str(picture), "--weights", str(run / "best.safetensors"), "--json",
                                   *EVERY_BOX])
    assert code == 0, stderr
    [case] = json.loads(stdout)["cases"]
    assert case["boxes"] and case["spacing_source"] == "unknown (1 mm assumed)"
    for box in case["boxes"]:
        i, j, _ = box["centre_voxel"]
        assert np.allclose(box["centre_world_mm"], [-i, -j, 0.0], atol=1e-3)
        voxel = np.asarray(box["box_voxel"])
        assert np.allclose(box["size_mm"][:2], voxel[3:5] - voxel[:2], atol=1e-3)


def test_a_2d_model_refuses_a_volume_and_a_3d_model_a_slice(trained: tuple[Path, Path], tmp_path: Path) -> None:
    import torch

    from mitk.checkpoint import save_checkpoint
    from mitk.plugin_manager import get_registry

    sample, run = trained
    volume = tmp_path / "volume.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((24, 24, 24)).astype(np.float32), np.eye(4)), volume)
    code, _, stderr = invoke(["detect", str(volume), "--weights", str(run / "best.safetensors")])
    assert code != 0 and "is a 3-D volume but the model takes 2-D inputs" in stderr
    assert "Traceback" not in stderr and str(volume) in stderr
    # a 3-D model (no recorded expectations: the plugin itself refuses) on a one-slice image
    plugin = get_registry().get("retinanet", "detect").load()
    config = plugin.resolve_config({"backbone": {"block_inplanes": [8, 8, 16, 16], "fpn_channels": 8}})
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "model3d.safetensors", plugin.network(config).state_dict(), task="detect",
                              plugin="retinanet", plugin_version=None, config=config)
    scan = sample / "imagesTs" / "case_005.nii.gz"
    code, _, stderr = invoke(["detect", str(scan), "--weights", str(weights)])
    assert code != 0 and "but this model is 3-D (spatial_dims=3)" in stderr and str(scan) in stderr
    assert "Traceback" not in stderr and len([line for line in stderr.splitlines() if "spatial_dims" in line]) == 1


def test_the_too_small_warning_looks_in_plane_and_names_a_2d_spacing(trained: tuple[Path, Path]) -> None:
    from mitk.tasks.detect.recipe import box_statistics, read_box_datalist, size_warnings

    sample, _ = trained
    datalist = read_box_datalist(sample, seed=0, validation_fraction=0.2)
    stats = box_statistics(datalist.training)
    fine = {"spatial_dims": 2, "spacing": [1.0, 1.0, 50.0], "box_statistics": stats}  # the third value is unused
    assert not any("lesions are small" in w for w in size_warnings(datalist, fine))
    [small] = [w for w in size_warnings(datalist, {**fine, "spacing": [20.0, 20.0, 1.0]}) if "lesions are small" in w]
    suggested = [float(v) for v in small.split("spacing=[")[1].split("]")[0].split(",")]
    assert suggested == pytest.approx([v / 3 for v in stats["p5_mm"][:2]], abs=0.011)
