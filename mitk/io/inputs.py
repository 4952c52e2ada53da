"""Expanding command-line inputs (files, directories, globs) into cases, and naming their outputs."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mitk.errors import UsageError
from mitk.io.atomic import split_suffix

NIFTI_PATTERNS = ("*.nii", "*.nii.gz")
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".jpg", ".jpeg")
"""Files a folder input stands for (NIfTI, NRRD, MetaImage, PNG and JPEG); a folder with none is one DICOM input."""


@dataclass(frozen=True)
class Case:
    """One input of a batch: an image file (NIfTI, NRRD, MetaImage, PNG …), a DICOM file, or a DICOM folder or
    zip."""

    path: Path

    @property
    def stem(self) -> str:
        """Base name for outputs: the file name without its image suffix (a folder's name as it is)."""
        return self.path.name if self.path.is_dir() else split_suffix(self.path)[0]


def nifti_files(directory: Path, derived: Sequence[str] = ()) -> list[Path]:
    """Image files (:data:`IMAGE_SUFFIXES`) below ``directory``, without outputs written beside their inputs
    earlier: with ``derived`` (the suffixes of image outputs, :func:`mitk.taskspecs.derived_suffixes`),
    ``a_seg.nii.gz`` beside ``a.nii.gz`` (or ``a_seg.png`` beside ``a.jpg``) is left out."""
    found: set[Path] = set()
    for path in directory.rglob("*"):
        if path.name.lower().endswith(IMAGE_SUFFIXES) and not path.name.startswith(".") and path.is_file():
            found.add(path)
    return sorted(p for p in found if not _is_derived(p, found, derived))


def _is_derived(path: Path, siblings: set[Path], derived: Sequence[str]) -> bool:
    stem, suffix = split_suffix(path)
    for marker in derived:
        if stem.endswith(marker):
            original = stem[: -len(marker)]
            if any(path.with_name(original + ext) in siblings for ext in (suffix, *IMAGE_SUFFIXES)):
                return True
    return False


def expand_inputs(arguments: Sequence[str], derived: Sequence[str] = ()) -> list[Case]:
    """Turn arguments into cases, in order, without duplicates (``derived``: see :func:`nifti_files`).

    A directory holding image files (NIfTI, NRRD, MetaImage, PNG, JPEG) stands for those files; any other
    directory is one DICOM input.
    An argument that does not exist but contains ``*``, ``?`` or ``[`` is expanded as a glob. Paths that
    do not exist (or are symlink loops) are kept, so that the batch reports them as failed cases.
    """
    cases: list[Case] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        try:
            key = path.resolve()
        except (OSError, RuntimeError):  # a symlink loop: kept, and reported as one failed case
            key = Path(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            cases.append(Case(path))

    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            nifti = nifti_files(path, derived)
            if nifti:
                for file in nifti:
                    add(file)
            else:
                add(path)
        elif not path.exists() and any(ch in argument for ch in "*?["):
            matches = sorted(glob.glob(argument, recursive=True))
            if not matches:
                raise UsageError(f"no files match {argument!r}")
            for match in matches:
                add(Path(match))
        else:
            add(path)
    return cases


def output_for(case: Case, output_dir: Path, suffix: str, extension: str = ".nii.gz") -> Path:
    """Predictable output name: ``DIR/<input stem><suffix><extension>``, e.g. ``DIR/ct_seg.nii.gz``."""
    return output_dir / f"{case.stem}{suffix}{extension}"
