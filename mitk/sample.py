"""Small, real-anatomy training sets made offline: segmentation (Medical Segmentation Decathlon form) and
classification (slices by level, volumes with and without a lesion).

Every case is nilearn's MNI152 T1 template (2 mm, skull-stripped, shipped inside the package) seen
through its own random affine — rotation up to 15°, scaling ±10 % per axis, translation — on a coarse
grid stored in a random axis order, with a smooth multiplicative bias field, a gamma contrast change and
Rician noise. The label map goes through the same transform: each class's mask (brain; or grey and
white matter) is interpolated linearly and the most likely class kept, so image and label agree.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mitk.errors import OutputExistsError, UsageError
from mitk.extras import require_module
from mitk.image import Image
from mitk.io.atomic import atomic_path, write_text_atomic

TASK_LABELS: dict[str, dict[int, str]] = {
    "brain": {0: "background", 1: "brain"},
    "tissue": {0: "background", 1: "grey matter", 2: "white matter"},
}
FIELD_OF_VIEW_MM = 216.0
"""Side of the cubic field of view; ``--size`` voxels span it (48 voxels: 4.5 mm)."""
MAX_ROTATION_DEG = 15.0
MAX_SCALE = 0.10
MAX_TRANSLATION_MM = 6.0


@dataclass
class Atlas:
    """The template image and per-class probability maps (background first) on its grid."""

    image: np.ndarray
    classes: np.ndarray
    affine: np.ndarray
    centre: np.ndarray
    """World (RAS mm) centre of the brain mask: cases are framed around it."""


@functools.lru_cache(maxsize=2)
def load_atlas(task: str) -> Atlas:
    """Read the MNI152 template and the task's masks from nilearn's package data (no network; cached)."""
    if task not in TASK_LABELS:
        raise UsageError(f"unknown sample task {task!r}; choose from {', '.join(TASK_LABELS)}")
    require_module("nilearn", "mitk sample")
    from nilearn import datasets

    template = datasets.load_mni152_template(resolution=2)
    image = np.asarray(template.get_fdata(dtype=np.float32))
    brain = np.asarray(datasets.load_mni152_brain_mask(resolution=2).get_fdata(dtype=np.float32))
    if task == "brain":
        foreground = [brain]
    else:
        grey = np.asarray(datasets.load_mni152_gm_template(resolution=2).get_fdata(dtype=np.float32))
        white = np.asarray(datasets.load_mni152_wm_template(resolution=2).get_fdata(dtype=np.float32))
        foreground = [np.clip(grey, 0, 1) * brain, np.clip(white, 0, 1) * brain]
    background = np.clip(1.0 - np.sum(foreground, axis=0), 0.0, 1.0)
    classes = np.stack([background, *foreground]).astype(np.float32)
    affine = np.asarray(template.affine, dtype=np.float64)
    centre_voxel = np.argwhere(brain > 0.5).mean(axis=0)
    centre = (affine @ np.append(centre_voxel, 1.0))[:3]
    return Atlas(image=image, classes=classes, affine=affine, centre=centre)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = math.radians(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


def random_geometry(atlas: Atlas, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A case grid (RAS-ordered affine) and the matrix taking case world points to template world points."""
    spacing = FIELD_OF_VIEW_MM / size * rng.uniform(0.95, 1.05, size=3)
    scanner_centre = rng.uniform(-40.0, 40.0, size=3)  # where the head sits in this case's world
    grid = np.diag([*spacing, 1.0])
    grid[:3, 3] = scanner_centre - spacing * (size - 1) / 2.0
    linear = _rotation(rng) @ np.diag(rng.uniform(1 - MAX_SCALE, 1 + MAX_SCALE, size=3))
    template_from_case = np.eye(4)
    template_from_case[:3, :3] = linear
    shift = rng.uniform(-MAX_TRANSLATION_MM, MAX_TRANSLATION_MM, size=3)
    template_from_case[:3, 3] = atlas.centre + shift - linear @ scanner_centre
    return grid, template_from_case


def _resample(volume: np.ndarray, voxel_from_voxel: np.ndarray, size: int) -> np.ndarray:
    from scipy.ndimage import affine_transform

    return affine_transform(volume, voxel_from_voxel[:3, :3], offset=voxel_from_voxel[:3, 3],
                            output_shape=(size, size, size), order=1, mode="constant", cval=0.0)


def _bias_field(size: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field: exp of a random second-order polynomial, within about ±30 %."""
    axis = np.linspace(-1.0, 1.0, size)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    terms = [x, y, z, x * y, x * z, y * z, x * x, y * y, z * z]
    log_field = sum(c * t for c, t in zip(rng.normal(0.0, 0.08, size=len(terms)), terms, strict=True))
    return np.exp(np.asarray(log_field, dtype=np.float64))


def make_case(atlas: Atlas, size: int, rng: np.random.Generator) -> tuple[Image, np.ndarray, np.ndarray]:
    """One case: the image (int16, random stored axis order), its label map on the same grid (uint8), and
    the 4×4 matrix from this case's world to the template's world (RAS mm)."""
    from nibabel.orientations import apply_orientation, inv_ornt_aff

    grid, template_from_case = random_geometry(atlas, size, rng)
    voxel_map = np.linalg.solve(atlas.affine, template_from_case @ grid)
    intensity = np.clip(_resample(atlas.image, voxel_map, size), 0.0, None)
    probabilities = np.stack([_resample(c, voxel_map, size) for c in atlas.classes[1:]])
    background = 1.0 - probabilities.sum(axis=0)
    labels = np.argmax(np.concatenate([background[None], probabilities]), axis=0).astype(np.uint8)

    intensity = intensity / max(float(intensity.max()), 1e-6)
    intensity = intensity ** math.exp(rng.uniform(-0.3, 0.3))  # contrast (gamma)
    intensity = intensity * _bias_field(size, rng) * rng.uniform(600.0, 1200.0)
    sigma = rng.uniform(0.02, 0.04) * float(np.percentile(intensity[labels > 0], 90)) if labels.any() else 10.0
    real = intensity + rng.normal(0.0, sigma, intensity.shape)
    imaginary = rng.normal(0.0, sigma, intensity.shape)
    intensity = np.sqrt(real * real + imaginary * imaginary)  # Rician magnitude noise

    # Store the axes in a random order and direction, so the affine (not the array) carries the anatomy.
    orientation = np.column_stack([rng.permutation(3), rng.choice([-1, 1], size=3)]).astype(float)
    affine = grid @ inv_ornt_aff(orientation, (size, size, size))
    stored = np.clip(np.rint(apply_orientation(intensity, orientation)), 0, np.iinfo(np.int16).max)
    image = Image(array=np.ascontiguousarray(stored.astype(np.int16)), affine=affine)
    label_map = np.ascontiguousarray(apply_orientation(labels, orientation).astype(np.uint8))
    return image, label_map, template_from_case


def check_sample_options(size: int, seed: int) -> None:
    """The options every sample shares: a side length mitk's tiny networks train on, a seed."""
    if not 16 <= size <= 256:
        raise UsageError(f"--size must be between 16 and 256 voxels, not {size}")
    if seed < 0:
        raise UsageError(f"--seed must be >= 0, not {seed}")


def sample_target(path: Path, overwrite: bool) -> Path:
    """``path``, refused when a sample exists there already and ``overwrite`` is not given."""
    if path.exists() and not overwrite:
        raise OutputExistsError("a sample exists already (use --overwrite to replace it)", path)
    return path


def split_counts(cases: int) -> tuple[int, int, int]:
    """(training, validation, test): about one sixth each for validation and test, at least one each."""
    if cases < 3:
        raise UsageError(f"--cases must be at least 3 (training, validation and test), not {cases}")
    held_out = max(1, round(cases / 6))
    return cases - 2 * held_out, held_out, held_out


def make_segmentation_sample(output_dir: str | Path, cases: int = 12, size: int = 48, seed: int = 0,
                             task: str = "brain", overwrite: bool = False) -> Path:
    """Write ``imagesTr``/``labelsTr`` (training and validation), ``imagesTs``/``labelsTs`` (test) and
    ``dataset.json``; return the path of ``dataset.json``. The same seed gives byte-identical files."""
    from mitk.io.nifti import write_nifti

    check_sample_options(size, seed)
    n_training, n_validation, n_test = split_counts(cases)
    output_dir = Path(output_dir)
    dataset_path = sample_target(output_dir / "dataset.json", overwrite)
    atlas = load_atlas(task)
    labels = TASK_LABELS[task]
    lists: dict[str, list[dict[str, str]]] = {"training": [], "validation": [], "test": []}
    transforms: dict[str, list[list[float]]] = {}
    for index in range(cases):
        name = f"case_{index:03d}"
        split = "training" if index < n_training else "validation" if index < n_training + n_validation else "test"
        folder = "Ts" if split == "test" else "Tr"
        rng = np.random.default_rng([seed, index])  # each case depends only on (seed, index)
        image, label_map, template_from_case = make_case(atlas, size, rng)
        entry = {"image": f"./images{folder}/{name}.nii.gz", "label": f"./labels{folder}/{name}.nii.gz"}
        with atomic_path(output_dir / entry["image"], overwrite=overwrite) as temporary:
            write_nifti(image.array, temporary, like=image, description="mitk sample MNI152 T1")
        with atomic_path(output_dir / entry["label"], overwrite=overwrite) as temporary:
            write_nifti(label_map, temporary, like=image, intent="label", description=f"mitk sample {task} labels")
        lists[split].append(entry)
        transforms[name] = np.round(template_from_case, 10).tolist()
    document: dict[str, Any] = {
        "name": f"mitk-sample-{task}",
        "description": f"{task} segmentation on the MNI152 T1 template under random affines (mitk sample)",
        "reference": "MNI152 template shipped with nilearn",
        "tensorImageSize": "3D",
        "modality": {"0": "MRI"},
        "labels": {str(value): name for value, name in labels.items()},
        "numTraining": n_training + n_validation,
        "numTest": n_test,
        **lists,
        "mitk_sample": {"task": task, "seed": seed, "size": size,
                        "template_from_case": transforms,
                        "template_from_case_note": "4x4 maps each case's world (RAS mm) to MNI152 world"},
    }
    write_text_atomic(dataset_path, json.dumps(document, indent=2) + "\n", overwrite=overwrite)
    return dataset_path


# -------------------------------------------------------------------------------------------------
# Classification samples
# -------------------------------------------------------------------------------------------------

SLICE_LEVELS: dict[str, tuple[float, float]] = {
    "cerebellum": (-38.0, -22.0),
    "ventricles": (8.0, 22.0),
    "vertex": (48.0, 60.0),
}
"""Axial levels (MNI z in mm) of the 2-D sample's classes: the posterior fossa with the cerebellum and the
temporal lobes; the bodies of the lateral ventricles; the high convexity near the vertex."""
LESION_CLASSES = ("normal", "lesion")
MAX_TILT_DEG = 8.0
MAX_IN_PLANE_DEG = 20.0


def _bias_field_2d(size: int, rng: np.random.Generator) -> np.ndarray:
    axis = np.linspace(-1.0, 1.0, size)
    x, y = np.meshgrid(axis, axis, indexing="ij")
    terms = [x, y, x * y, x * x, y * y]
    log_field = sum(c * t for c, t in zip(rng.normal(0.0, 0.08, size=len(terms)), terms, strict=True))
    return np.exp(np.asarray(log_field, dtype=np.float64))


def _mr_appearance(intensity: np.ndarray, bias: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gamma contrast, a smooth bias field, a scanner scale and Rician noise, as :func:`make_case` does."""
    intensity = np.clip(intensity, 0.0, None) / max(float(intensity.max()), 1e-6)
    intensity = intensity ** math.exp(rng.uniform(-0.3, 0.3)) * bias * rng.uniform(600.0, 1200.0)
    sigma = rng.uniform(0.02, 0.04) * max(float(np.percentile(intensity, 95)), 1.0)
    real = intensity + rng.normal(0.0, sigma, intensity.shape)
    imaginary = rng.normal(0.0, sigma, intensity.shape)
    return np.sqrt(real * real + imaginary * imaginary)


def make_slice_case(atlas: Atlas, level: str, size: int, rng: np.random.Generator) -> Image:
    """An axial 2-D slice ``(size, size, 1)`` of the template at a random height within ``level``, tilted,
    turned in-plane, scaled and shifted at random, with MR-like contrast, bias and noise."""
    from scipy.ndimage import affine_transform

    low, high = SLICE_LEVELS[level]
    spacing = FIELD_OF_VIEW_MM / size * rng.uniform(0.9, 1.1)
    tilt_axis = np.append(rng.normal(size=2), 0.0)
    tilt_axis /= np.linalg.norm(tilt_axis)
    tilt = math.radians(rng.uniform(-MAX_TILT_DEG, MAX_TILT_DEG))
    cross = np.array([[0, -tilt_axis[2], tilt_axis[1]], [tilt_axis[2], 0, -tilt_axis[0]],
                      [-tilt_axis[1], tilt_axis[0], 0]])
    turn = math.radians(rng.uniform(-MAX_IN_PLANE_DEG, MAX_IN_PLANE_DEG))
    in_plane = np.array([[math.cos(turn), -math.sin(turn), 0], [math.sin(turn), math.cos(turn), 0], [0, 0, 1]])
    rotation = (np.eye(3) + math.sin(tilt) * cross + (1 - math.cos(tilt)) * cross @ cross) @ in_plane
    centre = np.array([atlas.centre[0] + rng.uniform(-8, 8), atlas.centre[1] + rng.uniform(-8, 8),
                       rng.uniform(low, high)])
    slice_to_world = np.eye(4)
    slice_to_world[:3, :3] = rotation @ np.diag([spacing, spacing, spacing])
    slice_to_world[:3, 3] = centre - slice_to_world[:3, :3] @ np.array([(size - 1) / 2, (size - 1) / 2, 0.0])
    voxel_map = np.linalg.solve(atlas.affine, slice_to_world)
    plane = affine_transform(atlas.image, voxel_map[:3, :3], offset=voxel_map[:3, 3], output_shape=(size, size, 1),
                             order=1, mode="constant", cval=0.0)[:, :, 0]
    intensity = _mr_appearance(plane, _bias_field_2d(size, rng), rng)
    stored = np.clip(np.rint(intensity), 0, np.iinfo(np.int16).max).astype(np.int16)[:, :, None]
    return Image(array=np.ascontiguousarray(stored), affine=slice_to_world)


def plant_lesion(image: Image, brain: np.ndarray, rng: np.random.Generator) -> tuple[Image, list[float]]:
    """Brighten a soft-edged sphere (radius 6–10 mm, +50–90 %) centred in the brain; return the image and the
    lesion centre in world mm."""
    from mitk.image import voxel_spacing

    spacing = np.asarray(voxel_spacing(image.affine))
    radius = rng.uniform(6.0, 10.0)
    inside = np.argwhere(brain > 0)
    margin = np.ceil(radius / spacing).astype(int)
    shape = np.asarray(brain.shape)
    eligible = inside[np.all((inside >= margin) & (inside < shape - margin), axis=1)]
    centre = eligible[rng.integers(len(eligible))] if len(eligible) else shape // 2
    grid = np.indices(brain.shape, dtype=np.float64)
    distance = np.sqrt(sum(((grid[a] - centre[a]) * spacing[a]) ** 2 for a in range(3)))
    weight = np.clip((radius - distance) / 2.0 + 0.5, 0.0, 1.0)
    brightened = image.array.astype(np.float64) * (1.0 + rng.uniform(0.5, 0.9) * weight)
    array = np.clip(np.rint(brightened), 0, np.iinfo(np.int16).max).astype(np.int16)
    world = (image.affine @ np.append(centre.astype(float), 1.0))[:3]
    return Image(array=array, affine=image.affine), [round(float(v), 3) for v in world]


def make_classification_sample(output_dir: str | Path, cases: int = 60, size: int = 64, seed: int = 0,
                               dims: int = 2, overwrite: bool = False) -> dict[str, Any]:
    """Write a labelled classification set from the MNI152 T1 template and return its summary.

    ``dims=2``: axial slices labelled by level (:data:`SLICE_LEVELS`). ``dims=3``: volumes under random
    affines, half of them with a planted lesion (``normal`` / ``lesion``). Files go to ``images/``;
    ``train.csv`` (``image,label,split``: training and validation) and ``test.csv`` (``image,label``) name
    them relative to ``output_dir``. The same seed gives byte-identical files.
    """
    import csv
    import io

    from mitk.io.nifti import write_nifti

    if dims not in (2, 3):
        raise UsageError(f"--dims must be 2 or 3, not {dims}")
    check_sample_options(size, seed)
    classes = list(SLICE_LEVELS) if dims == 2 else list(LESION_CLASSES)
    if cases < 3 * len(classes):
        raise UsageError(f"--cases must be at least {3 * len(classes)} (training, validation and test of "
                         f"every class), not {cases}")
    output_dir = Path(output_dir)
    train_csv, test_csv = output_dir / "train.csv", output_dir / "test.csv"
    for path in (train_csv, test_csv):
        sample_target(path, overwrite)
    atlas = load_atlas("brain")
    n_training, n_validation, _ = split_counts(cases)
    rows: list[dict[str, str]] = []
    for index in range(cases):
        label = classes[index % len(classes)]
        split = "training" if index < n_training else "validation" if index < n_training + n_validation else "test"
        rng = np.random.default_rng([seed, dims, index])
        if dims == 2:
            image = make_slice_case(atlas, label, size, rng)
            description = f"mitk sample MNI152 T1 axial slice ({label})"
        else:
            image, brain, _ = make_case(atlas, size, rng)
            if label == "lesion":
                image, _ = plant_lesion(image, brain, rng)
            description = f"mitk sample MNI152 T1 ({label})"
        name = f"images/case_{index:03d}.nii.gz"
        with atomic_path(output_dir / name, overwrite=overwrite) as temporary:
            write_nifti(image.array, temporary, like=image, description=description)
        rows.append({"image": name, "label": label, "split": split})

    def table(selected: list[dict[str, str]], columns: list[str]) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(selected)
        return buffer.getvalue()

    write_text_atomic(train_csv, table([r for r in rows if r["split"] != "test"], ["image", "label", "split"]),
                      overwrite=overwrite)
    write_text_atomic(test_csv, table([r for r in rows if r["split"] == "test"], ["image", "label"]),
                      overwrite=overwrite)
    counts = {split: sum(r["split"] == split for r in rows) for split in ("training", "validation", "test")}
    return {"train_csv": str(train_csv), "test_csv": str(test_csv), "classes": classes, "dims": dims,
            "size": size, "seed": seed, **counts}


DETECTION_LABELS = {1: "bright lesion", 2: "dark lesion"}


LESION_RADIUS_MM = (6.0, 12.0)


def plant_lesions(image: Image, inside: np.ndarray, rng: np.random.Generator, count: int, planar: bool = False
                  ) -> tuple[Image, list[dict[str, Any]]]:
    """Plant ``count`` spheres (bright or dark, random radius) inside the mask ``inside``; return the new image
    and one record per lesion: its world centre and radius, its label, and its box in world mm (RAS, the
    sphere's axis-aligned extent) and in the image's voxel indices. ``planar`` (a one-slice image): the sphere
    is centred in the slice, and the box is the disc's, one slice deep (its world box encloses that)."""
    from scipy import ndimage

    from mitk.image import map_box_extents

    spacing = np.asarray(image.spacing)
    depth = ndimage.distance_transform_edt(inside, sampling=spacing)  # mm to the mask's edge
    grid = np.indices(image.spatial_shape, dtype=np.float64).reshape(3, -1)
    world = (image.affine[:3, :3] @ grid + image.affine[:3, 3:4]).T.reshape(*image.spatial_shape, 3)
    array = image.array.astype(np.float64)
    tissue = float(np.percentile(array[inside], 90)) if inside.any() else float(array.max())
    taken = np.zeros(image.spatial_shape, dtype=bool)
    lesions: list[dict[str, Any]] = []
    for _ in range(count):
        radius = float(rng.uniform(*LESION_RADIUS_MM))
        candidates = np.argwhere((depth >= radius + spacing.max()) & ~taken)
        if len(candidates) == 0:
            break
        voxel = candidates[rng.integers(len(candidates))] + rng.uniform(-0.5, 0.5, size=3)
        voxel[2] = 0.0 if planar else voxel[2]
        centre = image.affine[:3, :3] @ voxel + image.affine[:3, 3]
        label = 1 if rng.random() < 0.7 else 2
        sphere = np.linalg.norm(world - centre, axis=-1) <= radius
        array[sphere] = tissue * (rng.uniform(1.6, 2.0) if label == 1 else rng.uniform(0.05, 0.2))
        taken |= np.linalg.norm(world - centre, axis=-1) <= 3 * radius  # keep lesions apart
        inverse = np.linalg.inv(image.affine)
        box_world = np.concatenate([centre - radius, centre + radius])
        extent = map_box_extents(box_world + np.array([0.5] * 6), inverse)  # world extent → voxel extent
        if planar:  # the disc in the slice: radius / pixel spacing along each in-plane axis
            reach = np.array([radius / spacing[0], radius / spacing[1], 0.5])
            extent = np.concatenate([voxel - reach, voxel + reach])
            box_world = map_box_extents(extent + 0.5, image.affine)[0]
        lesions.append({"label": label, "name": DETECTION_LABELS[label],
                        "centre_world_mm": np.round(centre, 4).tolist(), "radius_mm": round(radius, 4),
                        "box_world_mm": np.round(box_world, 4).tolist(),
                        "box_voxel": np.round(extent + 0.5, 4).tolist(), "coordinate_system": "RAS"})
    stored = np.clip(np.rint(array), 0, np.iinfo(np.int16).max).astype(np.int16)
    return Image(array=stored, affine=image.affine), lesions


def label_boxes(label: Image, names: dict[int, str] | None = None) -> list[dict[str, Any]]:
    """One box per connected component (26-connected) of each non-zero label value: its voxel box and its world
    extent (RAS mm), as :func:`mitk.evaluation.lesions.lesion_boxes` finds them."""
    from mitk.evaluation.lesions import lesion_boxes

    return [{"label": r["label"], "name": (names or {}).get(r["label"], "lesion"), "box_voxel": r["box_voxel"],
             "box_world_mm": r["box_world_mm"], "coordinate_system": "RAS"} for r in lesion_boxes(label)]


def _restored(image: Image, orientation: np.ndarray) -> Image:
    """``image`` stored in another axis order and direction (exact: no resampling), its affine to match."""
    from nibabel.orientations import apply_orientation, inv_ornt_aff

    array = np.ascontiguousarray(apply_orientation(np.asarray(image.array), orientation))
    return Image(array=array, affine=image.affine @ inv_ornt_aff(orientation, image.spatial_shape))


def real_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """``<case>_image.nii.gz`` files of ``folder`` with their ``<case>_label.nii.gz``."""
    pairs = []
    for image in sorted(folder.glob("*_image.nii.gz")):
        label = image.with_name(image.name.replace("_image.nii.gz", "_label.nii.gz"))
        if label.is_file():
            pairs.append((image, label))
    return pairs


def brain_in_slice(image: Image) -> np.ndarray:
    """The brain of a sample slice: pixels above a quarter of its 99th percentile, holes filled."""
    from scipy import ndimage

    plane = image.array[:, :, 0].astype(float)
    mask = ndimage.binary_fill_holes(plane > 0.25 * np.percentile(plane, 99))
    return np.asarray(ndimage.binary_opening(mask, iterations=2))[:, :, None]


def make_detection_sample(output_dir: str | Path, cases: int = 12, size: int = 48, seed: int = 0,
                          overwrite: bool = False, real: str | Path | None = None, dims: int = 3) -> Path:
    """A detection set: the MNI152 T1 under random affines (as the segmentation sample) with 1–3 bright or dark
    spheres of known centre and radius planted in the brain. Writes ``imagesTr``/``imagesTs``, one reference
    ``<case>_boxes.json`` per case in ``boxesTr``/``boxesTs`` (the format ``mitk evaluate detect`` reads) and
    ``dataset.json``: a box datalist (MONAI box mode ``xyzxyz``, world RAS mm). With ``real``, a folder of
    ``<case>_image.nii.gz`` / ``<case>_label.nii.gz`` pairs (real lesions: a brain tumour, a lung nodule), each
    pair is added to the training list, stored in a random axis order and direction, with one box per
    connected lesion component. ``dims=2``: axial slices of the template (as the 2-D classification sample)
    with discs, boxes in pixel indices (``box_coordinates: voxel``, one slice deep); ``real`` is then not
    used. Returns ``dataset.json``."""
    from mitk.io.nifti import write_nifti
    from mitk.io.reader import load_image

    check_sample_options(size, seed)
    if dims not in (2, 3):
        raise UsageError(f"--dims must be 2 or 3, not {dims}")
    n_training, n_validation, _ = split_counts(cases)
    output_dir = Path(output_dir)
    dataset_path = sample_target(output_dir / "dataset.json", overwrite)
    atlas = load_atlas("brain")
    lists: dict[str, list[dict[str, Any]]] = {"training": [], "validation": [], "test": []}
    for index in range(cases):
        name = f"case_{index:03d}"
        split = "training" if index < n_training else "validation" if index < n_training + n_validation else "test"
        folder = "Ts" if split == "test" else "Tr"
        if dims == 2:
            rng = np.random.default_rng([seed, index, 2])
            image = make_slice_case(atlas, str(rng.choice(list(SLICE_LEVELS))), size, rng)
            image, lesions = plant_lesions(image, brain_in_slice(image), rng, int(rng.integers(1, 4)), planar=True)
        else:
            rng = np.random.default_rng([seed, index, 7])  # each case depends only on (seed, index)
            image, brain, _ = make_case(atlas, size, rng)
            image, lesions = plant_lesions(image, brain > 0, rng, int(rng.integers(1, 4)))
        image_path = f"./images{folder}/{name}.nii.gz"
        entry: dict[str, Any] = {"image": image_path,
                 "box": [lesion["box_voxel" if dims == 2 else "box_world_mm"] for lesion in lesions],
                 "label": [lesion["label"] for lesion in lesions]}
        with atomic_path(output_dir / image_path, overwrite=overwrite) as temporary:
            write_nifti(image.array, temporary, like=image, description="mitk sample MNI152 T1 with lesions")
        write_text_atomic(output_dir / f"boxes{folder}" / f"{name}_boxes.json",
                          json.dumps({"input": image_path, "coordinate_system": "RAS", "boxes": lesions},
                                     indent=2) + "\n", overwrite=overwrite)
        lists[split].append(entry)
    for index, (image_file, label_file) in enumerate(real_pairs(Path(real)) if real is not None and dims == 3
                                                     else []):
        rng = np.random.default_rng([seed, 1000 + index])
        orientation = np.column_stack([rng.permutation(3), rng.choice([-1, 1], size=3)]).astype(float)
        image, label = (_restored(load_image(path), orientation) for path in (image_file, label_file))
        name = f"real_{index:03d}"
        lesions = label_boxes(label, {1: "lesion"})
        image_path = f"./imagesTr/{name}.nii.gz"
        with atomic_path(output_dir / image_path, overwrite=overwrite) as temporary:
            write_nifti(image.array, temporary, like=image, description=f"mitk sample real lesion {image_file.name}")
        write_text_atomic(output_dir / "boxesTr" / f"{name}_boxes.json",
                          json.dumps({"input": image_path, "source": image_file.name, "coordinate_system": "RAS",
                                      "boxes": lesions}, indent=2) + "\n", overwrite=overwrite)
        lists["training"].append({"image": image_path, "box": [r["box_world_mm"] for r in lesions],
                                  "label": [1 for _ in lesions]})
    document: dict[str, Any] = {
        "name": "mitk-sample-detect",
        "description": "bright and dark spheres planted in the MNI152 T1 under random affines (mitk sample)",
        "reference": "MNI152 template shipped with nilearn",
        "box_mode": "xyzxyz",
        "box_coordinates": "voxel" if dims == 2 else "world",
        "coordinate_system": "RAS",
        "labels": {str(value): name for value, name in DETECTION_LABELS.items()},
        **lists,
        "mitk_sample": {"task": "detect", "seed": seed, "size": size, "dims": dims},
    }
    write_text_atomic(dataset_path, json.dumps(document, indent=2) + "\n", overwrite=overwrite)
    return dataset_path
