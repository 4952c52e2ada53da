"""Registration against SimpleITK, in the same run on the same pairs (real anatomy, known transforms).

1. Affine: nilearn's MNI152 T1 at 1 mm against a copy moved by a known affine (10° about x and y, a 5 % scale,
   an 8 mm shift). mitk ``affine`` (defaults) vs SimpleITK's ``ImageRegistrationMethod`` (Mattes MI, 50 bins,
   1 % random sampling, gradient descent with physical-shift scales, 3-level pyramid, moments
   initialisation: the SimpleITK notebooks' recipe). Scored by the mean target registration error over the
   brain mask and wall time.
2. Deformable: the MNI152 T1 at 2 mm under a smooth known deformation (peak 8 mm). mitk ``deformable``
   (defaults) vs SimpleITK's B-spline registration (its ImageRegistrationMethodBSpline1 example: mesh 10³,
   correlation, L-BFGS-B, here on a 3-level pyramid).
   Scored by grey-matter Dice after warping the moving GM mask, folding voxels and wall time.

3. Inter-subject: the MNI152 T1 (1 mm, skull-stripped, moving) to a second real brain (fixed, a whole head),
   scored by the Dice of the warped MNI152 brain mask against the subject's reference brain mask: ITK's
   ``KmeansTest_T1UCharRaw`` with ITK's own skull strip ``KmeansTest_T1RawSkullStrip`` (Debian
   ``insighttoolkit5-examples``), and nibabel's ``someones_anatomy`` (Debian ``python-nibabel-doc``) with the
   mask of :func:`skull_strip`. mitk ``affine`` / ``deformable`` (defaults; with the MNI152 brain mask as
   moving mask; with a similarity first stage) and SimpleITK's two affine recipes. ``--data DIR`` (or
   ``MITK_REGISTRATION_DATA``) is searched for the files; without them this part is skipped.

Run: ``python benchmarks/bench_register.py [--only affine|deformable|intersubject] [--data DIR]``; writes
``benchmarks/results/register[_ONLY].json``. Both tools use their default thread counts on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]
FLIP = np.diag([-1.0, -1.0, 1.0])


def known_affine(centre: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    matrix = np.eye(4)
    matrix[:3, :3] = 1.05 * Rotation.from_euler("xy", [10.0, -10.0], degrees=True).as_matrix()
    shift = np.array([6.0, -4.0, 3.5])
    shift *= 8.0 / np.linalg.norm(shift)
    matrix[:3, 3] = centre - matrix[:3, :3] @ centre + shift
    return matrix


def sitk_image(array: np.ndarray, affine: np.ndarray) -> Any:
    """A SimpleITK image of an axis-aligned RAS grid (LPS origin and direction)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))).astype(np.float32))
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(v) for v in FLIP @ affine[:3, 3]))
    image.SetDirection(tuple(float(v) for v in (FLIP @ (affine[:3, :3] / spacing)).ravel()))
    return image


def affine_benchmark(repeats: int) -> dict[str, Any]:
    import torch
    from mitk_builtin._registration import AffineRegistration, affine_register
    from nilearn import datasets
    from scipy import ndimage

    from mitk.types import Image

    template = datasets.load_mni152_template(resolution=1)
    affine = np.asarray(template.affine, float)
    fixed = np.asarray(template.get_fdata(), np.float32)
    brain = np.asarray(datasets.load_mni152_brain_mask(resolution=1).get_fdata()) > 0.5
    centre = (affine @ np.append(np.argwhere(brain).mean(axis=0), 1.0))[:3]
    truth = known_affine(centre)
    sources = np.linalg.inv(affine) @ np.linalg.inv(truth) @ affine
    moving = ndimage.affine_transform(fixed, sources, order=3).astype(np.float32)
    points = np.c_[np.argwhere(brain), np.ones(int(brain.sum()))] @ affine.T

    def tre(matrix: np.ndarray) -> tuple[float, float]:
        error = np.linalg.norm((points @ (matrix - truth).T)[:, :3], axis=1)
        return float(error.mean()), float(error.max())

    results: dict[str, Any] = {"pair": "MNI152 T1 1 mm vs known affine (10° x, 10° y, 5 % scale, 8 mm)",
                               "unregistered_tre_mm": tre(np.eye(4))[0]}
    config = AffineRegistration().default_config()
    device = torch.device("cpu")
    mitk_runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        matrix, report = affine_register(Image(fixed, affine), Image(moving, affine), config, device)
        mitk_runs.append({"seconds": time.perf_counter() - started, "tre_mm": tre(matrix), "report": report})
        print("mitk affine:", json.dumps(mitk_runs[-1], default=str), flush=True)

    fixed_itk, moving_itk = sitk_image(fixed, affine), sitk_image(moving, affine)
    results["mitk"] = mitk_runs
    best_mitk = min(r["seconds"] for r in mitk_runs)
    for recipe in ("notebook", "accurate"):
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            transform, iterations = sitk_affine(fixed_itk, moving_itk, recipe)
            runs.append({"seconds": time.perf_counter() - started, "iterations": iterations,
                         "tre_mm": tre(sitk_matrix(transform, points))})
            print(f"SimpleITK affine ({recipe}):", json.dumps(runs[-1]), flush=True)
        results[f"simpleitk_{recipe}"] = runs
        results[f"time_ratio_mitk_over_simpleitk_{recipe}"] = best_mitk / min(r["seconds"] for r in runs)
    return results


def sitk_affine(fixed: Any, moving: Any, recipe: str) -> tuple[Any, int]:
    """SimpleITK's ImageRegistrationMethod, Mattes MI (50 bins), 3-level pyramid, moments initialisation.

    ``notebook``: the SimpleITK notebooks' recipe (1 % random sampling, gradient descent, learning rate 1).
    ``accurate``: 5 % sampling and regular-step gradient descent, the setting that reaches sub-millimetre
    error on this pair.
    """
    import SimpleITK as sitk

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(50)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetInterpolator(sitk.sitkLinear)
    if recipe == "notebook":
        method.SetMetricSamplingPercentage(0.01, 0)
        method.SetOptimizerAsGradientDescent(learningRate=1.0, numberOfIterations=200,
                                             convergenceMinimumValue=1e-6, convergenceWindowSize=10)
    else:
        method.SetMetricSamplingPercentage(0.05, 0)
        method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-4, numberOfIterations=200,
                                                        gradientMagnitudeTolerance=1e-8)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2, 1, 0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    initial = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3),
                                                sitk.CenteredTransformInitializerFilter.MOMENTS)
    method.SetInitialTransform(initial, inPlace=False)
    transform = method.Execute(fixed, moving)
    return transform, int(method.GetOptimizerIteration())


def sitk_matrix(transform: Any, points: np.ndarray) -> np.ndarray:
    """The RAS 4×4 matrix of a SimpleITK affine, fitted through four points (exact for an affine)."""
    corners = np.array([[0.0, 0.0, 0.0], [50.0, 0.0, 0.0], [0.0, 50.0, 0.0], [0.0, 0.0, 50.0]])
    mapped = np.array([FLIP @ np.asarray(transform.TransformPoint(tuple(FLIP @ c))) for c in corners])
    matrix = np.eye(4)
    matrix[:3, :3] = ((mapped[1:] - mapped[0]) / 50.0).T
    matrix[:3, 3] = mapped[0]
    return matrix


def deformable_benchmark(repeats: int) -> dict[str, Any]:
    import SimpleITK as sitk
    import torch
    from mitk_builtin._registration import DeformableRegistration, deformable_register
    from nilearn import datasets
    from scipy import ndimage

    from mitk.tasks.register.evaluation import jacobian_statistics
    from mitk.tasks.register.runner import total_displacement, warp
    from mitk.types import Image

    template = datasets.load_mni152_template(resolution=2)
    affine = np.asarray(template.affine, float)
    fixed = np.asarray(template.get_fdata(), np.float32)
    grey = (np.asarray(datasets.load_mni152_gm_mask(resolution=2).get_fdata()) > 0.5).astype(np.float32)
    rng = np.random.default_rng(7)
    field = np.stack([ndimage.gaussian_filter(rng.standard_normal(fixed.shape), 6.0) for _ in range(3)], axis=-1)
    field *= 8.0 / np.abs(field).max()
    sources = np.indices(fixed.shape) + np.moveaxis(field, -1, 0) / 2.0
    moving = ndimage.map_coordinates(fixed, sources, order=1).astype(np.float32)
    moving_grey = (ndimage.map_coordinates(grey, sources, order=1) > 0.5).astype(np.float32)
    reference = grey > 0.5

    def dice(mask: np.ndarray) -> float:
        return float(2 * (mask & reference).sum() / (mask.sum() + reference.sum()))

    results: dict[str, Any] = {"pair": "MNI152 T1 2 mm vs smooth known deformation (peak 8 mm)",
                               "unregistered_gm_dice": dice(moving_grey > 0.5)}
    fixed_image, moving_image = Image(fixed, affine), Image(moving, affine)
    config = DeformableRegistration().default_config()
    mitk_runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        matrix, displacement, report = deformable_register(fixed_image, moving_image, config, torch.device("cpu"))
        seconds = time.perf_counter() - started
        warped = warp(Image(moving_grey, affine), fixed_image, matrix, displacement) > 0.5
        jacobian = jacobian_statistics(total_displacement(matrix, displacement, fixed_image), affine)
        mitk_runs.append({"seconds": seconds, "gm_dice": dice(warped), "folding_voxels": jacobian["folding_voxels"],
                          "jacobian_min": jacobian["min"], "iterations": report["iterations"]})
        print("mitk deformable:", json.dumps(mitk_runs[-1]), flush=True)

    fixed_itk, moving_itk = sitk_image(fixed, affine), sitk_image(moving, affine)
    grey_itk = sitk_image(moving_grey, affine)
    sitk_runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        initial = sitk.BSplineTransformInitializer(fixed_itk, [10, 10, 10])
        method = sitk.ImageRegistrationMethod()  # SimpleITK's ImageRegistrationMethodBSpline1 example
        method.SetMetricAsCorrelation()
        method.SetInterpolator(sitk.sitkLinear)
        method.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=100,
                                    maximumNumberOfCorrections=5, maximumNumberOfFunctionEvaluations=1000,
                                    costFunctionConvergenceFactor=1e7)
        method.SetShrinkFactorsPerLevel([4, 2, 1])
        method.SetSmoothingSigmasPerLevel([2, 1, 0])
        method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        method.SetInitialTransform(initial, True)
        transform = method.Execute(fixed_itk, moving_itk)
        seconds = time.perf_counter() - started
        warped_itk = sitk.Resample(grey_itk, fixed_itk, transform, sitk.sitkLinear, 0.0)
        warped = np.transpose(sitk.GetArrayFromImage(warped_itk), (2, 1, 0)) > 0.5
        to_field = sitk.TransformToDisplacementFieldFilter()
        to_field.SetReferenceImage(fixed_itk)
        itk_field = np.transpose(sitk.GetArrayFromImage(to_field.Execute(transform)), (2, 1, 0, 3))
        jacobian = jacobian_statistics(itk_field * np.array([-1.0, -1.0, 1.0]), affine)
        sitk_runs.append({"seconds": seconds, "gm_dice": dice(warped), "folding_voxels": jacobian["folding_voxels"],
                          "jacobian_min": jacobian["min"]})
    results["mitk"], results["simpleitk"] = mitk_runs, sitk_runs
    best = min(r["seconds"] for r in mitk_runs), min(r["seconds"] for r in sitk_runs)
    results["time_ratio_mitk_over_simpleitk"] = best[0] / best[1]
    return results


SUBJECTS = {
    "itk_kmeans_t1": ("KmeansTest_T1UCharRaw.nii.gz", "KmeansTest_T1RawSkullStrip.nii.gz"),
    "nibabel_someones_anatomy": ("someones_anatomy.nii.gz", None),
}
"""Second brains found offline: the file and its reference brain mask (None: made by :func:`skull_strip`)."""


def find(folder: Path, name: str) -> Path | None:
    return next(iter(sorted(folder.rglob(name))), None) if folder.is_dir() else None


def ball(radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """A ball structuring element of ``radius_mm`` on a grid of ``spacing``."""
    half = np.maximum(1, np.floor(radius_mm / spacing)).astype(int)
    axes = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    return np.asarray(sum((a * s / radius_mm) ** 2 for a, s in zip(axes, spacing, strict=True)) <= 1.0)


def skull_strip(image: Any) -> np.ndarray:
    """A reference brain mask for a T1 head without one (an intensity + morphology strip, not an expert
    segmentation): tissue brighter than Otsu's threshold; opened with an 8 mm ball to cut the brain from scalp
    and skull; the largest component; dilated back (8 mm) within the tissue; closed with a 6 mm ball to take in
    sulcal CSF; holes filled in 3-D and in every axial, coronal and sagittal slice (ventricles)."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    data = np.asarray(image.array, float)
    spacing = np.sqrt((image.affine[:3, :3] ** 2).sum(axis=0))
    tissue = data > threshold_otsu(data)
    core = ndimage.binary_erosion(tissue, ball(8.0, spacing))
    labels, count = ndimage.label(core)
    if count == 0:
        raise RuntimeError("skull strip found no brain")
    largest = labels == 1 + int(np.argmax(ndimage.sum(core, labels, range(1, count + 1))))
    brain = ndimage.binary_dilation(largest, ball(8.0, spacing)) & tissue
    brain = ndimage.binary_closing(np.pad(brain, 4), ball(6.0, spacing))[4:-4, 4:-4, 4:-4]
    brain = ndimage.binary_fill_holes(brain)
    for axis in range(3):
        for index in range(brain.shape[axis]):
            where: list[Any] = [slice(None)] * 3
            where[axis] = index
            brain[tuple(where)] = ndimage.binary_fill_holes(brain[tuple(where)])
    return np.asarray(brain)


def intersubject_benchmark(data_folder: Path, preview: Path | None) -> dict[str, Any]:
    """MNI152 (1 mm, moving) registered to a second real brain (fixed), scored by the Dice of the warped MNI
    brain mask against the subject's reference brain mask, on the subject's grid."""
    import torch
    from mitk_builtin._registration import (
        AffineRegistration,
        DeformableRegistration,
        affine_register,
        deformable_register,
    )
    from nilearn import datasets

    from mitk.io.reader import load_image, require_volume
    from mitk.tasks.register.runner import warp
    from mitk.types import Image

    template = datasets.load_mni152_template(resolution=1)
    mni_affine = np.asarray(template.affine, float)
    mni = Image(np.asarray(template.get_fdata(), np.float32), mni_affine)
    mni_brain = Image((np.asarray(datasets.load_mni152_brain_mask(resolution=1).get_fdata()) > 0.5).astype(
        np.float32), mni_affine)
    device = torch.device("cpu")
    results: dict[str, Any] = {}
    for name, (file_name, mask_name) in SUBJECTS.items():
        path = find(data_folder, file_name)
        if path is None:
            print(f"inter-subject: {file_name} not found under {data_folder}; skipped", flush=True)
            continue
        subject = require_volume(load_image(path))
        subject.array = np.asarray(subject.array, np.float32)
        mask_path = find(data_folder, mask_name) if mask_name else None
        if mask_name and mask_path is None:
            print(f"inter-subject: {mask_name} not found; skipped {name}", flush=True)
            continue
        reference = (np.asarray(require_volume(load_image(mask_path)).array) > 0 if mask_path is not None
                     else skull_strip(subject))

        def dice(matrix: np.ndarray | None, displacement: np.ndarray | None = None,
                 reference: np.ndarray = reference, subject: Image = subject) -> float:
            warped = warp(mni_brain, subject, matrix, displacement) > 0.5
            return float(2 * (warped & reference).sum() / (warped.sum() + reference.sum()))

        entry: dict[str, Any] = {"file": file_name, "shape": list(subject.spatial_shape),
                                 "reference_mask": mask_name or "skull_strip() (Otsu, 8 mm opening, largest "
                                                                "component, 6 mm closing, hole filling)",
                                 "reference_voxels": int(reference.sum()),
                                 "identity_dice": dice(np.eye(4))}
        runs: dict[str, Any] = {}
        affine_config = AffineRegistration().default_config()
        similarity_config = {**affine_config, "transform": "similarity"}
        for label, config, masks in (("mitk_affine", affine_config, {}),
                                     ("mitk_affine_moving_mask", affine_config, {"moving_mask": mni_brain}),
                                     ("mitk_similarity_moving_mask", similarity_config, {"moving_mask": mni_brain})):
            started = time.perf_counter()
            matrix, report = affine_register(subject, mni, config, device, **masks)
            runs[label] = {"seconds": time.perf_counter() - started, "dice": dice(matrix),
                           "counted_share": report.get("counted_share")}
            print(name, label, json.dumps(runs[label]), flush=True)
        deformable_config = DeformableRegistration().default_config()
        for label, config, masks in (
                ("mitk_deformable", deformable_config, {}),
                ("mitk_deformable_moving_mask", deformable_config, {"moving_mask": mni_brain}),
                ("mitk_deformable_similarity_moving_mask", {**deformable_config, "affine": similarity_config},
                 {"moving_mask": mni_brain})):
            started = time.perf_counter()
            matrix, displacement, _ = deformable_register(subject, mni, config, device, **masks)
            runs[label] = {"seconds": time.perf_counter() - started, "dice": dice(matrix, displacement)}
            print(name, label, json.dumps(runs[label]), flush=True)
            if preview is not None:
                write_preview(preview / f"intersubject_{name}_{label}.png", subject, reference,
                              warp(mni_brain, subject, matrix, displacement) > 0.5)
        fixed_itk, moving_itk = sitk_image(subject.array, subject.affine), sitk_image(mni.array, mni_affine)
        for recipe in ("notebook", "accurate"):
            started = time.perf_counter()
            try:
                transform, _ = sitk_affine(fixed_itk, moving_itk, recipe)
            except RuntimeError as error:
                runs[f"simpleitk_{recipe}"] = {"error": str(error).splitlines()[-1]}
                continue
            seconds = time.perf_counter() - started
            points = np.zeros((1, 4))
            runs[f"simpleitk_{recipe}"] = {"seconds": seconds, "dice": dice(sitk_matrix(transform, points))}
            print(name, f"simpleitk_{recipe}", json.dumps(runs[f"simpleitk_{recipe}"]), flush=True)
        entry["runs"] = runs
        results[name] = entry
    return results


def write_preview(path: Path, subject: Any, reference: np.ndarray, warped: np.ndarray) -> None:
    """Three orthogonal mid-slices of the subject: reference mask (red), warped MNI mask (cyan)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.asarray(subject.array, float)
    centre = [int(c) for c in np.rint(np.argwhere(reference).mean(axis=0))]
    figure, axes = plt.subplots(1, 3, figsize=(12, 4))
    for axis, ax in enumerate(axes):
        index = [slice(None)] * 3
        index[axis] = centre[axis]  # type: ignore[call-overload]
        ax.imshow(data[tuple(index)].T, cmap="gray", origin="lower")
        ax.contour(reference[tuple(index)].T, [0.5], colors="r", linewidths=0.8)
        ax.contour(warped[tuple(index)].T, [0.5], colors="c", linewidths=0.8)
        ax.set_axis_off()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", choices=("affine", "deformable", "intersubject"))
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("MITK_REGISTRATION_DATA", "")),
                        help="folder searched for the second brains (the extracted Debian packages "
                             "insighttoolkit5-examples and python-nibabel-doc); absent: the inter-subject "
                             "benchmark is skipped")
    parser.add_argument("--preview", type=Path, help="folder for PNGs of the inter-subject masks")
    arguments = parser.parse_args()
    import torch

    document: dict[str, Any] = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                                "load_average": os.getloadavg()}
    if arguments.only in (None, "affine"):
        document["affine"] = affine_benchmark(arguments.repeats)
        print(json.dumps(document["affine"], indent=1, default=str), flush=True)
    if arguments.only in (None, "deformable"):
        document["deformable"] = deformable_benchmark(arguments.repeats)
        print(json.dumps(document["deformable"], indent=1, default=str), flush=True)
    if arguments.only in (None, "intersubject"):
        if arguments.data.is_dir() and str(arguments.data) not in ("", "."):
            document["intersubject"] = intersubject_benchmark(arguments.data, arguments.preview)
            print(json.dumps(document["intersubject"], indent=1, default=str), flush=True)
        else:
            print("inter-subject: no --data folder (or MITK_REGISTRATION_DATA); skipped", flush=True)
    document["load_average_after"] = os.getloadavg()
    out = ROOT / "benchmarks" / "results" / f"register{'_' + arguments.only if arguments.only else ''}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(document, indent=1, default=str))


if __name__ == "__main__":
    main()
