"""Writing an array on a source image's grid in the format its output name asks for: NIfTI (``.nii.gz``,
``.nii``), an ITK format (``.nrrd``, ``.mha`` …, through SimpleITK) or PNG (one-slice images only).

:func:`check_target` refuses a name mitk cannot write before any compute (JPEG for a mask is refused: lossy
compression changes label values); :func:`default_extension` gives an output the input's format family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from mitk.errors import UsageError
from mitk.image import Image
from mitk.io.itk import DETACHED, FORMAT_NAMES, WRITE_SUFFIXES, itk_suffix
from mitk.io.photo import is_photo

Kind = Literal["nifti", "itk", "png"]
WRITABLE = (".nii.gz", ".nii", ".png", *WRITE_SUFFIXES)


def output_kind(path: Path, what: str = "image") -> Kind:
    """Which writer ``path``'s name asks for; a one-line usage error for a name mitk cannot write."""
    name = path.name.lower()
    if name.endswith((".nii.gz", ".nii")):
        return "nifti"
    if name.endswith(".png"):
        return "png"
    if name.endswith((".jpg", ".jpeg")):
        hint = "a mask is never written as JPEG (lossy compression changes its values)" if what == "label map" \
            else "JPEG is lossy"
        raise UsageError(f"{hint}: name the output .png (or .nii.gz, .nrrd)", path)
    suffix = itk_suffix(path)
    if suffix in DETACHED:
        raise UsageError(f"{FORMAT_NAMES[suffix]} with a detached data file ({suffix}) is read but not written: "
                         f"name the output {DETACHED[suffix]} (the same format in one file)", path)
    if suffix in WRITE_SUFFIXES:
        return "itk"
    hint = " (DICOM SEG: mitk segment --format dicom-seg)" if name.endswith(".dcm") else ""
    raise UsageError(f"mitk writes NIfTI (.nii.gz, .nii), NRRD (.nrrd), MetaImage (.mha), PNG (.png), "
                     f"{', '.join(s for s in WRITE_SUFFIXES if s not in ('.nrrd', '.mha'))}, not "
                     f"{path.suffix or 'a file without a suffix'}{hint}", path)


def check_target(path: Path, what: str = "image") -> Path:
    """``path`` when mitk can write it (see :func:`output_kind`) with what is installed: an ITK format needs
    SimpleITK (the ``itk`` extra), named in a one-line error before any work."""
    if output_kind(path, what) == "itk":
        from mitk.io.itk import import_sitk

        import_sitk(path, "writing")
    return path


def default_extension(source: Path) -> str:
    """The extension of an output derived from ``source``: PNG for PNG and JPEG pictures, the same ITK format
    for an ITK file (``.nhdr`` → ``.nrrd``, ``.mhd`` → ``.mha``), NIfTI for everything else."""
    if is_photo(source):
        return ".png"
    suffix = itk_suffix(source)
    if suffix is not None:
        suffix = DETACHED.get(suffix, suffix)
        return suffix if suffix in WRITE_SUFFIXES else ".nii.gz"
    return ".nii.gz"


def write_image(array: np.ndarray, path: str | Path, like: Image, *, intent: str | None = None,
                description: str | None = None) -> Path:
    """Write ``array`` on ``like``'s grid in the format ``path`` names (a temporary keeps the target's suffix)."""
    path = Path(path)
    kind = output_kind(path, "label map" if intent == "label" else "image")
    if kind == "nifti":
        from mitk.io.nifti_plain import plain_nifti_possible, write_plain_nifti

        if plain_nifti_possible(array, like, intent):  # the same bytes as nibabel's, without importing it
            return write_plain_nifti(array, path, like.affine, description)
        from mitk.io.nifti import write_nifti

        return write_nifti(array, path, like=like, intent=intent, description=description)
    if kind == "png":
        from mitk.io.photo import write_png

        return write_png(array, path, like)
    from mitk.io.itk import write_itk

    return write_itk(array, path, like)
