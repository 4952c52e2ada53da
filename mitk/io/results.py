"""The typed results as files and library objects: one writer for the CLI's batch jobs and the Python API.

The result classes of :mod:`mitk.types` take their ``save``/``to_nifti``/``to_sitk``/``to_numpy`` methods from
the mixins here, and the CLI jobs write through the same functions (:func:`write_label_map`,
:func:`record_text`), so a file written by ``result.save(path)`` equals the one ``mitk segment`` writes, byte
for byte. Every ``save`` goes through :func:`mitk.io.atomic.atomic_path`: a temporary file renamed when
complete, never over an existing file unless ``overwrite=True``, never over the input it was computed from.

This module is imported by :mod:`mitk.types` and stays light: nibabel and SimpleITK load inside the methods.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import nibabel as nib

    from mitk.types import (
        ClassificationResult,
        DetectionResult,
        Image,
        RegistrationResult,
        SegmentationResult,
    )

PathLike = str | os.PathLike[str]


# ---------------------------------------------------------------------------------------------------
# The writers the CLI jobs and the API share
# ---------------------------------------------------------------------------------------------------


def write_label_map(result: SegmentationResult, path: Path, like: Image, plugin: str | None) -> None:
    """Write the label map as NIfTI on ``like``'s grid and header (``path`` is usually a temporary)."""
    from mitk.io.nifti import write_nifti

    write_nifti(result.label_map, path, like=like, intent="label", description=_description(plugin, "labels"))


def write_probabilities(result: SegmentationResult, path: Path, like: Image, plugin: str | None) -> None:
    """Write the per-label probabilities (float32, channel last) as NIfTI on ``like``'s grid."""
    from mitk.io.nifti import write_nifti

    if result.probabilities is None:
        from mitk.errors import UsageError

        raise UsageError("this result has no probabilities (run with probabilities=True)")
    write_nifti(result.probabilities.astype(np.float32), path, like=like,
                description=_description(plugin, "probabilities"))


def write_warped(result: RegistrationResult, path: Path, like: Image, plugin: str | None) -> None:
    """Write a registration's moving image on the fixed grid as NIfTI, with ``like``'s (the fixed image's) header."""
    from mitk.io.nifti import write_nifti

    write_nifti(result.warped.array, path, like=like, description=_description(plugin, "warped"))


def record_text(input_path: PathLike | None, details: dict[str, Any]) -> str:
    """The JSON file of a record result (classify, detect): the input, then the task's details."""
    return json.dumps({"input": None if input_path is None else str(input_path), **details}, indent=2)


def _description(plugin: str | None, what: str) -> str:
    return f"mitk {plugin} {what}" if plugin else f"mitk {what}"


def nifti_target(path: PathLike) -> Path:
    """``path`` when it names a NIfTI file; a usage error otherwise (before anything is written)."""
    target = Path(path)
    if not target.name.lower().endswith((".nii.gz", ".nii")):
        from mitk.errors import UsageError

        raise UsageError("save() writes NIfTI: name the file .nii.gz or .nii (DICOM SEG: mitk segment "
                         "--format dicom-seg)", target)
    return target


@contextlib.contextmanager
def atomic_output(path: PathLike, overwrite: bool, inputs: tuple[Path, ...]) -> Iterator[Path]:
    """:func:`mitk.io.atomic.atomic_path`, with the refusal of an existing file worded for Python callers."""
    from mitk.errors import OutputExistsError
    from mitk.io.atomic import atomic_path

    try:
        with atomic_path(path, overwrite=overwrite, inputs=inputs) as temporary:
            yield temporary
    except OutputExistsError as error:
        raise OutputExistsError("output exists already (pass overwrite=True to replace it)", error.path) from None


def _write_atomic(path: PathLike, overwrite: bool, inputs: tuple[Path, ...], write: Any) -> Path:
    target = Path(path)
    with atomic_output(target, overwrite, inputs) as temporary:
        write(temporary)
    return target


# ---------------------------------------------------------------------------------------------------
# Mixins of the result classes
# ---------------------------------------------------------------------------------------------------


class ResultFiles:
    """Where a result came from, set by the Python API when it returns one (see :func:`describe_origin`)."""

    grid: Image | None = None
    """The input's grid without its voxels (path, affine, shape, NIfTI header; the array is a zero-cost
    placeholder): what outputs reproduce, and the input a record names. A registration's: the moving image."""
    inputs: tuple[Path, ...] = ()
    """The files the result was computed from: :meth:`save` never writes over them."""
    plugin: str | None = None
    """The plugin that computed the result (written into NIfTI descriptions, as by the CLI)."""


def grid_of(image: Image) -> Image:
    """``image`` without its voxels: a read-only broadcast of one zero with its shape and dtype (no memory)."""
    from mitk.types import Image

    placeholder = np.broadcast_to(np.zeros((), dtype=image.array.dtype), image.array.shape)
    return Image(array=placeholder, affine=image.affine, path=image.path, meta=dict(image.meta))


def describe_origin(result: ResultFiles, image: Image, plugin: str | None, inputs: tuple[Path, ...] = ()) -> None:
    """Record on ``result`` the grid of ``image``, the plugin's name, and the input files never to overwrite."""
    result.grid = grid_of(image)
    result.plugin = plugin
    result.inputs = tuple(dict.fromkeys([*([image.path] if image.path is not None else []), *inputs]))


class SegmentationFiles(ResultFiles):
    """``save``, ``to_nifti``, ``to_sitk`` and ``to_numpy`` of :class:`~mitk.types.SegmentationResult`."""

    def _grid(self: SegmentationResult) -> Image:  # type: ignore[misc]
        from mitk.types import Image

        grid = self.grid
        if grid is not None and tuple(grid.spatial_shape) == tuple(self.label_map.shape[:3]):
            return grid
        return Image(array=self.label_map, affine=self.affine)

    def to_numpy(self: SegmentationResult) -> np.ndarray:  # type: ignore[misc]
        """The label map, ``(I, J, K)`` integers on the input's voxel grid."""
        return self.label_map

    def to_nifti(self: SegmentationResult) -> nib.Nifti1Image:  # type: ignore[misc]
        """The label map as the nibabel image :meth:`save` writes (the input's header, intent ``label``)."""
        from mitk.io.nifti import nifti_image

        return nifti_image(self.label_map, self._grid(), intent="label",
                           description=_description(self.plugin, "labels"))

    def to_sitk(self: SegmentationResult) -> Any:  # type: ignore[misc]
        """The label map as a ``SimpleITK.Image`` with the input's origin, spacing and direction (LPS)."""
        from mitk.io.memory import to_sitk

        return to_sitk(self.label_map, self.affine)

    def save(self: SegmentationResult, path: PathLike, *, overwrite: bool = False,  # type: ignore[misc]
             probabilities: PathLike | None = None) -> Path:
        """Write the label map as NIfTI (``.nii.gz``/``.nii``), as ``mitk segment`` does; with
        ``probabilities=PATH`` also the probability maps (both files, or neither). Returns ``path``."""
        like, target = self._grid(), nifti_target(path)
        if probabilities is not None:
            nifti_target(probabilities)
        with contextlib.ExitStack() as outputs:  # the label map is entered first, so committed last
            label_file = outputs.enter_context(atomic_output(target, overwrite, self.inputs))
            write_label_map(self, label_file, like, self.plugin)
            if probabilities is not None:
                prob_file = outputs.enter_context(atomic_output(probabilities, overwrite, self.inputs))
                write_probabilities(self, prob_file, like, self.plugin)
        return target


class RecordFiles(ResultFiles):
    """``save`` of a result written as a JSON record (classification, detection)."""

    def record(self) -> dict[str, Any]:
        """The task's details, as the CLI's ``--json`` and record files give them."""
        raise NotImplementedError

    def save(self, path: PathLike, *, overwrite: bool = False) -> Path:
        """Write the JSON record ``mitk <task> --output-dir`` writes. Returns ``path``."""
        input_path = self.grid.path if self.grid is not None else None
        text = record_text(input_path, self.record())
        return _write_atomic(path, overwrite, self.inputs, lambda temporary: temporary.write_text(text,
                                                                                                  encoding="utf-8"))


class ClassificationFiles(RecordFiles):
    def record(self: ClassificationResult) -> dict[str, Any]:  # type: ignore[misc]
        """``{"predicted": name, "probabilities": {name: p}}``."""
        return self.to_dict()

    def to_numpy(self: ClassificationResult) -> np.ndarray:  # type: ignore[misc]
        """The probabilities, one per class, in the order of ``class_names``."""
        return np.asarray(self.probabilities, dtype=np.float64)


class DetectionFiles(RecordFiles):
    def record(self: DetectionResult) -> dict[str, Any]:  # type: ignore[misc]
        """``{"coordinate_system", "convention", "boxes": [{label, name, score, box_voxel, box_world_mm,
        centre_world_mm, size_mm, …}, …]}``."""
        from mitk.types import BOX_CONVENTION

        return {"coordinate_system": self.coordinate_system, "convention": BOX_CONVENTION, "boxes": self.to_dicts()}

    def to_numpy(self: DetectionResult) -> np.ndarray:  # type: ignore[misc]
        """The boxes, ``(N, 6)`` voxel indices ``(i0, j0, k0, i1, j1, k1)``; world mm: ``boxes_world``."""
        return np.asarray(self.boxes_voxel, dtype=np.float64).reshape(-1, 6)


class RegistrationFiles(ResultFiles):
    """``save``, ``to_nifti``, ``to_sitk`` and ``to_numpy`` of :class:`~mitk.types.RegistrationResult`."""

    def to_numpy(self: RegistrationResult) -> np.ndarray:  # type: ignore[misc]
        """The moving image resampled on the fixed grid."""
        return np.asarray(self.warped.array)

    def to_nifti(self: RegistrationResult) -> nib.Nifti1Image:  # type: ignore[misc]
        """The warped image as the nibabel image :meth:`save` writes (the fixed image's header)."""
        from mitk.io.nifti import nifti_image

        return nifti_image(self.warped.array, self.warped, description=_description(self.plugin, "warped"))

    def to_sitk(self: RegistrationResult) -> Any:  # type: ignore[misc]
        """The warped image as a ``SimpleITK.Image`` on the fixed grid (LPS)."""
        from mitk.io.memory import to_sitk

        return to_sitk(self.warped.array, self.warped.affine)

    def save(self: RegistrationResult, path: PathLike, *, overwrite: bool = False,  # type: ignore[misc]
             transform: PathLike | None = None) -> Path:
        """Write the warped image as NIfTI on the fixed grid, as ``mitk register`` does; with
        ``transform=PATH`` (``.json``, or ``.tfm`` for ITK) also the matrix (both files, or neither)."""
        if transform is not None and self.matrix is None:
            from mitk.errors import PluginError

            raise PluginError(f"plugin {self.plugin!r} gave a displacement field only; transform= needs a matrix")
        target = nifti_target(path)
        inputs = self.inputs
        with contextlib.ExitStack() as outputs:
            warped = outputs.enter_context(atomic_output(target, overwrite, inputs))
            write_warped(self, warped, like=self.warped, plugin=self.plugin)  # the fixed grid and header
            if transform is not None:
                from mitk.runner.register import write_transform

                temporary = outputs.enter_context(atomic_output(transform, overwrite, inputs))
                write_transform(self, temporary)
        return target
