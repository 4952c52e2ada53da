"""Inter-subject registration, mitk against ANTs (antspyx), side by side in one run.

Each real subject T1 (a whole head: fixed) gets nilearn's MNI152 T1 at 2 mm (brain only: moving); the score is
the Dice of the MNI152 brain mask carried onto the subject (linear interpolation, > 0.5) against the subject's
reference brain mask. Pairs: nibabel's ``someones_anatomy`` (in ``tests/data/nibabel``, with the mask made by
``bench_register.py:skull_strip``) and, when ``--data`` holds the extracted Debian ``insighttoolkit5-examples``,
ITK's ``KmeansTest_T1UCharRaw`` with ITK's own ``KmeansTest_T1RawSkullStrip``.

Methods: the identity; mitk ``affine`` with its defaults and with the old default ``init=com``; mitk
``deformable`` (defaults); ANTs ``Affine`` and ``SyN`` (``random_seed=1``). Every method runs in a fresh process
with one thread (``OMP_NUM_THREADS=1``, ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1``), so its wall time and peak
resident memory are its own.

Run: ``python benchmarks/bench_register_intersubject.py [--data DIR] [--methods ...]``; writes
``benchmarks/results/register_intersubject_ants.json``. ANTs needs ``pip install antspyx`` (not one of mitk's
extras: its metadata asks for scipy < 1.16; it ran here with scipy 1.17); without it the ANTs methods are skipped.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("identity", "mitk_affine", "mitk_affine_init_com", "mitk_deformable", "ants_affine", "ants_syn")


def pairs(data: Path | None) -> dict[str, tuple[Path, Path]]:
    found = {"nibabel_someones_anatomy": (ROOT / "tests/data/nibabel/someones_anatomy.nii.gz",
                                          ROOT / "tests/data/nibabel/someones_anatomy_brain.nii.gz")}
    if data is not None and data.is_dir():
        image = next(iter(sorted(data.rglob("KmeansTest_T1UCharRaw.nii.gz"))), None)
        mask = next(iter(sorted(data.rglob("KmeansTest_T1RawSkullStrip.nii.gz"))), None)
        if image is not None and mask is not None:
            found["itk_kmeans_t1"] = (image, mask)
    return found


def run_method(method: str, subject: str, reference: str, template: str, template_mask: str) -> dict[str, Any]:
    """One method on one pair, in this (fresh) process: Dice, seconds, peak memory."""
    os.environ["OMP_NUM_THREADS"] = os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"
    sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]
    import nibabel as nib
    import numpy as np
    import torch

    torch.set_num_threads(1)
    reference_mask = np.asarray(nib.load(reference).dataobj) > 0
    started = time.perf_counter()
    if method.startswith("ants"):
        import ants

        fixed, moving = ants.image_read(subject), ants.image_read(template)
        kind = "Affine" if method == "ants_affine" else "SyN"
        outcome = ants.registration(fixed, moving, kind, random_seed=1)
        seconds = time.perf_counter() - started
        carried = ants.apply_transforms(fixed, ants.image_read(template_mask), outcome["fwdtransforms"],
                                        interpolator="linear").numpy() > 0.5
    else:
        from mitk_builtin._registration import (
            AffineRegistration,
            DeformableRegistration,
            affine_register,
            deformable_register,
        )

        from mitk.io.reader import load_image
        from mitk.runner.resample import warp

        fixed_image, moving_image = load_image(Path(subject)), load_image(Path(template))
        fixed_image.array = np.asarray(fixed_image.array, np.float32)
        moving_image.array = np.asarray(moving_image.array, np.float32)
        matrix, displacement = np.eye(4), None
        device = torch.device("cpu")
        if method == "mitk_deformable":
            matrix, displacement, _ = deformable_register(fixed_image, moving_image,
                                                          DeformableRegistration().default_config(), device)
        elif method != "identity":
            config = AffineRegistration().default_config()
            if method == "mitk_affine_init_com":
                config["init"] = "com"
            matrix, _ = affine_register(fixed_image, moving_image, config, device)
        seconds = time.perf_counter() - started
        mask = load_image(Path(template_mask))
        mask.array = (np.asarray(mask.array) > 0).astype(np.float32)
        carried = warp(mask, fixed_image, matrix, displacement) > 0.5
    dice = float(2 * (carried & reference_mask).sum() / (carried.sum() + reference_mask.sum()))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux → MiB
    return {"dice": round(dice, 4), "seconds": round(seconds, 1) if method != "identity" else None,
            "peak_mib": round(peak)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="folder holding the extracted insighttoolkit5-examples")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    arguments = parser.parse_args()
    import importlib.util

    from nilearn import datasets

    methods = list(arguments.methods)
    if importlib.util.find_spec("ants") is None:  # antspyx is not an extra: it pins scipy below mitk's
        print("antspyx is not installed (pip install antspyx): the ANTs methods are skipped", flush=True)
        methods = [method for method in methods if not method.startswith("ants")]

    document: dict[str, Any] = {"cpu_count": os.cpu_count(), "threads": 1, "load_average": os.getloadavg(),
                                "pairs": {}}
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as folder:
        template, template_mask = Path(folder) / "mni152_2mm.nii.gz", Path(folder) / "mni152_2mm_brain.nii.gz"
        datasets.load_mni152_template(resolution=2).to_filename(template)
        datasets.load_mni152_brain_mask(resolution=2).to_filename(template_mask)
        for name, (subject, reference) in pairs(arguments.data).items():
            results: dict[str, Any] = {}
            for method in methods:
                with context.Pool(1) as pool:
                    results[method] = pool.apply(run_method, (method, str(subject), str(reference), str(template),
                                                              str(template_mask)))
                print(name, method, json.dumps(results[method]), flush=True)
            document["pairs"][name] = results
    output = ROOT / "benchmarks/results/register_intersubject_ants.json"
    output.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
