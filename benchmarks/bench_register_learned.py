"""The learned ``voxelmorph`` plugin's accuracy, beside the classical ``deformable``, on real anatomy.

Pairs: nilearn's MNI152 T1 (2 mm, averaged to 4 mm) as the fixed image; moving images are the template under
random smooth deformations (Gaussian-smoothed noise, σ 12 mm, peak 10 mm), with the grey-matter mask carried
along. ``mitk train register --plugin voxelmorph`` trains on the training deformations (seeds 0…N−1, LNCC +
bending energy + Dice on the grey-matter labels); the held-out deformations (seeds 1000…) are registered by
the checkpoint and by ``deformable`` (defaults), and scored by the grey-matter Dice of the warped moving mask
against the template's, before and after, with the folding voxels of each field.

Run: ``python benchmarks/bench_register_learned.py [--epochs 30] [--train 16] [--test 4]``; writes
``benchmarks/results/register_learned.json``. One torch thread (``--threads``), CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]


def block_mean(volume: np.ndarray, factor: int = 2) -> np.ndarray:
    i, j, k = (n // factor for n in volume.shape)
    return volume[: factor * i, : factor * j, : factor * k].reshape(i, factor, j, factor, k, factor).mean(
        axis=(1, 3, 5))


def deformed(data: np.ndarray, grey: np.ndarray, seed: int, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """The template and its GM mask under a random smooth deformation (σ 12 mm, peak 10 mm)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    field = np.stack([ndimage.gaussian_filter(rng.standard_normal(data.shape), 12.0 / spacing) for _ in range(3)],
                     axis=-1)
    field *= 10.0 / np.abs(field).max()
    sources = np.indices(data.shape) + np.moveaxis(field, -1, 0) / spacing
    moving = ndimage.map_coordinates(data, sources, order=1).astype(np.float32)
    moving_grey = (ndimage.map_coordinates(grey, sources, order=1) > 0.5).astype(np.int16)
    return moving, moving_grey


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--train", type=int, default=16)
    parser.add_argument("--test", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    arguments = parser.parse_args()

    import nibabel as nib
    import torch
    from nilearn import datasets

    import mitk
    from mitk.cli import main as mitk_main
    from mitk.tasks.register.evaluation import jacobian_statistics
    from mitk.tasks.register.runner import total_displacement, warp
    from mitk.types import Image

    torch.set_num_threads(arguments.threads)
    template = datasets.load_mni152_template(resolution=2)
    data = block_mean(np.asarray(template.get_fdata(), np.float32))
    grey = (block_mean(np.asarray(datasets.load_mni152_gm_mask(resolution=2).get_fdata(), np.float32)) > 0.5)
    grey = grey.astype(np.float32)
    affine = np.asarray(template.affine, float) @ np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] += np.asarray(template.affine, float)[:3, :3] @ np.full(3, 0.5)  # the centre of each 2³ block
    spacing = 4.0
    reference = grey > 0.5
    network = ["--set", "spacing=[4,4,4]", "--set", "patch_size=[48,64,48]"]

    def dice(mask: np.ndarray) -> float:
        return float(2 * (mask & reference).sum() / (mask.sum() + reference.sum()))

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        nib.save(nib.Nifti1Image(data, affine), root / "fixed.nii.gz")
        nib.save(nib.Nifti1Image(grey.astype(np.int16), affine), root / "fixed_gm.nii.gz")
        cases, tests = [], []
        for seed in [*range(arguments.train), *range(1000, 1000 + arguments.test)]:
            moving, moving_grey = deformed(data, grey, seed, spacing)
            nib.save(nib.Nifti1Image(moving, affine), root / f"moving{seed}.nii.gz")
            nib.save(nib.Nifti1Image(moving_grey, affine), root / f"moving{seed}_gm.nii.gz")
            case = {"fixed": "fixed.nii.gz", "moving": f"moving{seed}.nii.gz", "fixed_label": "fixed_gm.nii.gz",
                    "moving_label": f"moving{seed}_gm.nii.gz"}
            (tests if seed >= 1000 else cases).append(case)
        validation = cases[-max(1, len(cases) // 8):]
        (root / "pairs.json").write_text(json.dumps({"training": cases[: len(cases) - len(validation)],
                                                     "validation": validation,
                                                     "labels": {"0": "background", "1": "grey matter"}}))
        started = time.perf_counter()
        try:
            mitk_main(["--quiet", "train", "register", "--plugin", "voxelmorph", "--data", str(root / "pairs.json"),
                       "-d", str(root / "run"), "--epochs", str(arguments.epochs), "--batch-size", "1",
                       "--device", "cpu", *network])
        except SystemExit as done:
            if done.code:
                raise
        training_seconds = time.perf_counter() - started
        history = json.loads((root / "run" / "log.json").read_text())["epochs"]
        print(f"trained {arguments.epochs} epochs in {training_seconds:.0f} s", flush=True)

        fixed_image = Image(data, affine)
        learned = mitk.load("voxelmorph", weights=root / "run" / "best.safetensors", device="cpu")
        classical = mitk.load("deformable", device="cpu")
        rows = []
        for case in tests:
            moving_image = Image(np.asarray(nib.load(root / case["moving"]).dataobj, np.float32), affine)
            moving_grey = Image(np.asarray(nib.load(root / case["moving_label"]).dataobj, np.float32), affine)
            row: dict[str, Any] = {"moving": case["moving"], "unregistered": dice(moving_grey.array > 0.5)}
            for name, model in (("voxelmorph", learned), ("deformable", classical)):
                begun = time.perf_counter()
                result = model.register(fixed_image, moving_image)
                seconds = time.perf_counter() - begun
                warped = warp(moving_grey, fixed_image, result.matrix, result.displacement) > 0.5
                jacobian = jacobian_statistics(total_displacement(result.matrix, result.displacement, fixed_image),
                                               affine)
                row[name] = {"gm_dice": dice(warped), "seconds": seconds,
                             "folding_voxels": jacobian["folding_voxels"]}
            rows.append(row)
            print(json.dumps(row), flush=True)

    def mean(key: str) -> float:
        return float(np.mean([row[key]["gm_dice"] if isinstance(row[key], dict) else row[key] for row in rows]))

    document = {
        "pairs": f"MNI152 T1 4 mm vs random smooth deformations (σ 12 mm, peak 10 mm); {arguments.train} training "
                 f"(of which {len(validation)} validation), {arguments.test} held out",
        "epochs": arguments.epochs, "threads": arguments.threads, "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(), "training_seconds": training_seconds,
        "loss_first_last": [history[0]["loss"], history[-1]["loss"]],
        "mean_gm_dice": {"unregistered": mean("unregistered"), "voxelmorph": mean("voxelmorph"),
                         "deformable": mean("deformable")},
        "cases": rows,
    }
    print(json.dumps(document["mean_gm_dice"]), flush=True)
    out = ROOT / "benchmarks" / "results" / "register_learned.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(document, indent=1, default=str))


if __name__ == "__main__":
    main()
