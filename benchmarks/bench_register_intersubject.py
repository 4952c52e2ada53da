"""Inter-subject registration, mitk against ANTs (antspyx), side by side in one run.

Pairs (fixed ← moving), each scored by the Dice of the moving image's brain mask carried onto the fixed grid
(linear interpolation, > 0.5) against the fixed image's reference brain mask:

- ``someones``: nibabel's ``someones_anatomy`` (a whole head; mask in ``tests/data/nibabel``, made by
  ``bench_register.py:skull_strip``) ← nilearn's MNI152 T1 at 2 mm (brain only);
- ``itk_kmeans_t1`` (when ``--data`` holds the extracted Debian ``insighttoolkit5-examples``): ITK's
  ``KmeansTest_T1UCharRaw`` (mask: ITK's own ``KmeansTest_T1RawSkullStrip``) ← the MNI152 T1 at 2 mm;
- ``itk_from_someones`` (with ``--data``): ITK's subject ← ``someones_anatomy``, two whole heads. The two
  reference masks are drawn differently (ITK's reaches out to the inner skull, taking in the CSF around the
  cortex; ``skull_strip`` follows the tissue's edge), so this pair is also scored beside the original Dice
  against ``skull_strip`` of the fixed image (``dice_skull_strip``: both masks made the same way) and by the
  Dice of the white matter (``dice_white_matter``: each image's voxels above Otsu's threshold inside its own
  ``skull_strip`` mask, the moving image's warped, linear), which no mask's edge decides;
- ``mni_from_someones``: the MNI152 T1 at 2 mm (mask: nilearn's MNI152 brain mask) ← ``someones_anatomy`` (issue
  26's direction: a subject onto the template).

Methods: the identity; mitk ``affine``, ``deformable`` and ``syn`` with their defaults; ANTs ``Affine`` and ``SyN``
(``random_seed=1``). Every method runs in a fresh process with one thread (``OMP_NUM_THREADS=1``,
``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1``), so its wall time (imports included) and peak resident memory are its
own.

Run: ``python benchmarks/bench_register_intersubject.py [--data DIR] [--methods ...] [--pairs ...]``; writes
``benchmarks/results/register_intersubject_ants.json`` (with ``--pairs``, the pairs' names appended to its name).
ANTs needs ``pip install antspyx`` (not one of mitk's extras: its metadata asks for scipy < 1.16 and would change
numpy; here it was installed with ``pip install --no-deps --target DIR antspyx statsmodels formulaic interface_meta
patsy webcolors`` and found through ``PYTHONPATH``, and ran with scipy 1.17); without it the ANTs methods are
skipped.
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
METHODS = ("identity", "mitk_affine", "mitk_deformable", "mitk_syn", "ants_affine", "ants_syn")
SOMEONES = (ROOT / "tests/data/nibabel/someones_anatomy.nii.gz",
            ROOT / "tests/data/nibabel/someones_anatomy_brain.nii.gz")


def pairs(data: Path | None, template: Path, template_mask: Path) -> dict[str, tuple[Path, Path, Path, Path]]:
    """Each pair as (fixed, fixed reference mask, moving, moving mask)."""
    found = {"someones": (*SOMEONES, template, template_mask)}
    if data is not None and data.is_dir():
        image = next(iter(sorted(data.rglob("KmeansTest_T1UCharRaw.nii.gz"))), None)
        mask = next(iter(sorted(data.rglob("KmeansTest_T1RawSkullStrip.nii.gz"))), None)
        if image is not None and mask is not None:
            found["itk_kmeans_t1"] = (image, mask, template, template_mask)
            found["itk_from_someones"] = (image, mask, *SOMEONES)
    found["mni_from_someones"] = (template, template_mask, *SOMEONES)
    return found


def same_method_scores(fixed: Any, moving: Any, carried: Any, warped: Any, moving_mask: Any) -> dict[str, float]:
    """Dice of the carried mask against ``skull_strip`` of the fixed image, and the white matter's Dice (see the
    module's docstring); ``warped`` is the moving image resampled on the fixed grid."""
    import numpy as np
    from bench_register import skull_strip
    from skimage.filters import threshold_otsu

    def dice(first: Any, second: Any) -> float:
        return round(float(2 * (first & second).sum() / (first.sum() + second.sum())), 4)

    brain, values, moving_values = skull_strip(fixed), np.asarray(fixed.array, float), np.asarray(moving.array, float)
    white = brain & (values > threshold_otsu(values[brain]))
    moved_white = carried & (np.asarray(warped) > threshold_otsu(moving_values[np.asarray(moving_mask) > 0]))
    return {"dice_skull_strip": dice(carried, brain), "dice_white_matter": dice(moved_white, white)}


def run_method(method: str, subject: str, reference: str, template: str, template_mask: str,
               same_method: bool = False) -> dict[str, Any]:
    """One method on one pair (fixed ``subject`` ← moving ``template``), in this (fresh) process: Dice, seconds,
    peak memory; with ``same_method`` also :func:`same_method_scores`."""
    os.environ["OMP_NUM_THREADS"] = os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"
    sys.path[:0] = [str(ROOT), str(ROOT / "plugins"), str(ROOT / "benchmarks")]
    import nibabel as nib
    import numpy as np
    import torch

    torch.set_num_threads(1)
    reference_mask = np.asarray(nib.load(reference).dataobj) > 0
    extra: dict[str, Any] = {}
    started = time.perf_counter()
    if method.startswith("ants"):
        import ants

        fixed, moving = ants.image_read(subject), ants.image_read(template)
        kind = "Affine" if method == "ants_affine" else "SyN"
        outcome = ants.registration(fixed, moving, kind, random_seed=1)
        seconds = time.perf_counter() - started
        carried = ants.apply_transforms(fixed, ants.image_read(template_mask), outcome["fwdtransforms"],
                                        interpolator="linear").numpy() > 0.5
        warped = outcome["warpedmovout"].numpy()
    else:
        from mitk_builtin._registration import (
            AffineRegistration,
            DeformableRegistration,
            SyNRegistration,
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
        if method in ("mitk_deformable", "mitk_syn"):
            plugin = DeformableRegistration() if method == "mitk_deformable" else SyNRegistration()
            matrix, displacement, report = deformable_register(fixed_image, moving_image, plugin.default_config(),
                                                               device)
            extra = {key: report[key] for key in ("jacobian_min", "folded_percent", "field_scale",
                                                  "inverse_consistency_mm")}
        elif method != "identity":
            matrix, _ = affine_register(fixed_image, moving_image, AffineRegistration().default_config(), device)
        seconds = time.perf_counter() - started
        mask = load_image(Path(template_mask))
        mask.array = (np.asarray(mask.array) > 0).astype(np.float32)
        carried = warp(mask, fixed_image, matrix, displacement) > 0.5
        warped = warp(moving_image, fixed_image, matrix, displacement)
    if same_method:
        from mitk.io.reader import load_image as load

        extra.update(same_method_scores(load(Path(subject)), load(Path(template)), carried, warped,
                                        load(Path(template_mask)).array))
    dice = float(2 * (carried & reference_mask).sum() / (carried.sum() + reference_mask.sum()))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux → MiB
    return {"dice": round(dice, 4), "seconds": round(seconds, 1) if method != "identity" else None,
            "peak_mib": round(peak), **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="folder holding the extracted insighttoolkit5-examples")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--pairs", nargs="+", help="run only these pairs (the JSON then gets their names in its own)")
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
        for name, (subject, reference, moving, moving_mask) in pairs(arguments.data, template,
                                                                     template_mask).items():
            if arguments.pairs and name not in arguments.pairs:
                continue
            results: dict[str, Any] = {}
            for method in methods:
                with context.Pool(1) as pool:
                    results[method] = pool.apply(run_method, (method, str(subject), str(reference), str(moving),
                                                              str(moving_mask), name == "itk_from_someones"))
                print(name, method, json.dumps(results[method]), flush=True)
            document["pairs"][name] = results
    suffix = "".join(f"_{name}" for name in arguments.pairs or [])
    output = ROOT / f"benchmarks/results/register_intersubject_ants{suffix}.json"
    output.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
