"""Class-per-folder image data sets (torchvision's ``ImageFolder`` layout), as people keep classification data.

``DIR/train/<class>/*.png`` (also ``training/``), with an optional ``DIR/val/<class>/…`` (also ``valid/``,
``validation/``) as the validation list; or ``DIR/<class>/*.png`` with no split. A ``<class>`` folder's name is
its class; image files are read by their ending (PNG, JPEG, DICOM, NIfTI, NRRD, MetaImage) and DICOM series
folders inside a class folder count as one image each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mitk.errors import InputError

TRAINING_NAMES = ("train", "training")
VALIDATION_NAMES = ("val", "valid", "validation")
IMAGE_ENDINGS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".nii", ".nii.gz", ".nrrd", ".mha",
                 ".mhd")


def _subfolder(folder: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (folder / name).is_dir():
            return folder / name
    return None


def class_folder_cases(folder: Path) -> list[dict[str, Any]]:
    """``{"image", "label"}`` per image of each ``<class>`` subfolder of ``folder`` (sorted; hidden names left
    out)."""
    cases = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(class_dir.iterdir()):
            if path.name.startswith("."):
                continue
            if path.is_dir() or path.name.lower().endswith(IMAGE_ENDINGS):
                cases.append({"image": str(path), "label": class_dir.name})
    return cases


def is_image_folder(folder: Path) -> bool:
    """Whether ``folder`` looks like an ImageFolder data set (a ``train/`` folder, or only class folders)."""
    if not folder.is_dir():
        return False
    if _subfolder(folder, TRAINING_NAMES) is not None:
        return True
    children = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return bool(children) and all(p.is_dir() for p in children)


def read_image_folder(folder: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training, validation) cases of an ImageFolder data set; validation is empty without a ``val/`` folder."""
    training_dir = _subfolder(folder, TRAINING_NAMES)
    if training_dir is None:
        if not is_image_folder(folder):
            raise InputError("not a class-per-folder data set: expected train/<class>/ (and optionally "
                             "val/<class>/) or <class>/ folders of images", folder)
        return class_folder_cases(folder), []
    training = class_folder_cases(training_dir)
    validation_dir = _subfolder(folder, VALIDATION_NAMES)
    validation = class_folder_cases(validation_dir) if validation_dir is not None else []
    if not training:
        raise InputError("no images in train/<class>/ folders", training_dir)
    unknown = sorted({c["label"] for c in validation} - {c["label"] for c in training})
    if unknown:
        raise InputError(f"validation class folder(s) {unknown} have no training folder", validation_dir)
    return training, validation
