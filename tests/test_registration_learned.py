"""``voxelmorph`` trained by ``mitk train register`` on real anatomy, then applied with ``--weights``.

Pairs: the MNI152 T1 (2 mm, averaged to 6 mm for a tiny network) as the fixed image, and copies under smooth
random deformations as moving images, with grey-matter label maps for the Dice term. A few epochs must lower
the training loss; the checkpoint must then register a pair through ``mitk register``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from helpers import invoke, load
from scipy import ndimage

TINY = ["--set", "spacing=[6,6,6]", "--set", "patch_size=[32,32,32]", "--set", "network.channels=[4,8,8,8]",
        "--set", "network.final_conv_channels=[8]", "--set", "network.integration_steps=3"]


@pytest.fixture(scope="module", autouse=True)
def one_thread(single_threaded_torch: None) -> None:
    """Tiny volumes: one torch thread is faster on a shared CPU."""


@pytest.fixture(scope="module")
def pairs(mni_t1_2mm: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from nilearn.datasets import load_mni152_gm_mask

    root = tmp_path_factory.mktemp("pairs")
    template = load(mni_t1_2mm)
    data = block_mean(np.asarray(template.get_fdata(), np.float32))
    grey = (block_mean(np.asarray(load_mni152_gm_mask(resolution=2).get_fdata(), np.float32)) > 0.5)
    grey = grey.astype(np.float32)
    affine = np.asarray(template.affine, float) @ np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] += np.asarray(template.affine, float)[:3, :3] @ np.ones(3)  # the centre of each 3³ block
    nib.save(nib.Nifti1Image(data, affine), root / "fixed.nii.gz")
    nib.save(nib.Nifti1Image(grey.astype(np.int16), affine), root / "fixed_gm.nii.gz")
    cases = []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        field = np.stack([ndimage.gaussian_filter(rng.standard_normal(data.shape), 3.0) for _ in range(3)], -1)
        field *= 10.0 / np.abs(field).max()
        sources = np.indices(data.shape) + np.moveaxis(field, -1, 0) / 6.0
        moving = ndimage.map_coordinates(data, sources, order=1).astype(np.float32)
        moving_gm = (ndimage.map_coordinates(grey, sources, order=1) > 0.5).astype(np.int16)
        nib.save(nib.Nifti1Image(moving, affine), root / f"moving{seed}.nii.gz")
        nib.save(nib.Nifti1Image(moving_gm, affine), root / f"moving{seed}_gm.nii.gz")
        cases.append({"fixed": "fixed.nii.gz", "moving": f"moving{seed}.nii.gz", "fixed_label": "fixed_gm.nii.gz",
                      "moving_label": f"moving{seed}_gm.nii.gz"})
    datalist = root / "pairs.json"
    datalist.write_text(json.dumps({"training": cases[:3], "validation": cases[3:],
                                    "labels": {"0": "background", "1": "grey matter"}}))
    return {"root": root, "datalist": datalist}


def block_mean(volume: np.ndarray) -> np.ndarray:
    """Average 3 × 3 × 3 blocks (2 mm → 6 mm), dropping incomplete edge blocks."""
    i, j, k = (n // 3 for n in volume.shape)
    return volume[: 3 * i, : 3 * j, : 3 * k].reshape(i, 3, j, 3, k, 3).mean(axis=(1, 3, 5))


def test_training_lowers_the_loss_and_the_checkpoint_registers(pairs: dict[str, Any], tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, _, stderr = invoke(["train", "register", "--plugin", "voxelmorph", "--data", str(pairs["datalist"]),
                                   "-d", str(run), "--epochs", "4", "--batch-size", "1", "--lr", "0.01",
                                   "--device", "cpu", *TINY, "--json"])
    assert code == 0, stderr
    history = json.loads((run / "log.json").read_text())["epochs"]
    losses = [row["loss"] for row in history]
    assert losses[-1] < losses[0], losses
    assert {"val_loss", "val_similarity", "val_regulariser", "val_mean_dice"} <= set(history[0])
    assert (run / "best.safetensors").is_file()

    root = pairs["root"]
    out = tmp_path / "warped.nii.gz"
    code, _, stderr = invoke(["register", str(root / "fixed.nii.gz"), str(root / "moving3.nii.gz"),
                                   "--plugin", "voxelmorph", "--weights", str(run / "best.safetensors"),
                                   "-o", str(out), "--transform", str(tmp_path / "field.nii.gz"), "--json",
                                   "--device", "cpu"])
    assert code == 0, stderr
    warped = load(out)
    assert warped.shape == load(root / "fixed.nii.gz").shape
    assert np.array_equal(warped.affine, load(root / "fixed.nii.gz").affine)
    field = load(tmp_path / "field.nii.gz")
    assert field.shape[3:] == (1, 3) and np.isfinite(np.asarray(field.dataobj)).all()


def test_a_datalist_without_moving_images_is_one_line(tmp_path: Path) -> None:
    datalist = tmp_path / "pairs.json"
    datalist.write_text(json.dumps({"training": [{"fixed": "a.nii.gz"}]}))
    code, _, stderr = invoke(["train", "register", "--plugin", "voxelmorph", "--data", str(datalist),
                              "-d", str(tmp_path / "run"), "--epochs", "1"])
    assert code != 0 and "moving" in stderr and len(stderr.strip().splitlines()) == 1
