"""What every typed result shares: where it came from, and writing it safely.

A task's result class (``mitk.tasks.<task>.result``) subclasses :class:`ResultFiles` (or :class:`RecordFiles`
for a JSON record) and writes through :func:`atomic_output`: a temporary file renamed when complete, never over
an existing file unless ``overwrite=True``, never over the input it was computed from. The CLI's batch jobs
write through the same functions, so ``result.save(path)`` and ``mitk <task>`` write the same bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mitk.errors import OutputExistsError, UsageError
from mitk.image import Image
from mitk.io.atomic import atomic_path

PathLike = str | os.PathLike[str]


def record_text(input_path: PathLike | None, details: dict[str, Any]) -> str:
    """The JSON file of a record result (classify, detect): the input, then the task's details, and in a batch the
    case's provenance (:mod:`mitk.provenance`)."""
    from mitk.provenance import PROVENANCE_KEY, current

    document = {"input": None if input_path is None else str(input_path), **details}
    provenance = current()
    if provenance is not None:
        document.setdefault(PROVENANCE_KEY, provenance)
    return json.dumps(document, indent=2)


def description(plugin: str | None, what: str) -> str:
    return f"mitk {plugin} {what}" if plugin else f"mitk {what}"


def nifti_target(path: PathLike) -> Path:
    """``path`` when it names a NIfTI file; a usage error otherwise (before anything is written)."""
    target = Path(path)
    if not target.name.lower().endswith((".nii.gz", ".nii")):
        raise UsageError("save() writes NIfTI: name the file .nii.gz or .nii (DICOM SEG: mitk segment "
                         "--format dicom-seg)", target)
    return target


@contextlib.contextmanager
def atomic_output(path: PathLike, overwrite: bool, inputs: tuple[Path, ...]) -> Iterator[Path]:
    """:func:`mitk.io.atomic.atomic_path`, with the refusal of an existing file worded for Python callers."""
    try:
        with atomic_path(path, overwrite=overwrite, inputs=inputs) as temporary:
            yield temporary
    except OutputExistsError as error:
        raise OutputExistsError("output exists already (pass overwrite=True to replace it)", error.path) from None


def write_atomic(path: PathLike, overwrite: bool, inputs: tuple[Path, ...], write: Callable[[Path], Any]) -> Path:
    """Write ``path`` through :func:`atomic_output` with ``write(temporary)``; returns ``path``."""
    target = Path(path)
    with atomic_output(target, overwrite, inputs) as temporary:
        write(temporary)
    return target


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
    placeholder = np.broadcast_to(np.zeros((), dtype=image.array.dtype), image.array.shape)
    return Image(array=placeholder, affine=image.affine, path=image.path, meta=dict(image.meta))


def describe_origin(result: ResultFiles, image: Image, plugin: str | None, inputs: tuple[Path, ...] = ()) -> None:
    """Record on ``result`` the grid of ``image``, the plugin's name, and the input files never to overwrite."""
    result.grid = grid_of(image)
    result.plugin = plugin
    result.inputs = tuple(dict.fromkeys([*([image.path] if image.path is not None else []), *inputs]))


class RecordFiles(ResultFiles):
    """``save`` of a result written as a JSON record (classification, detection)."""

    def record(self) -> dict[str, Any]:
        """The task's details, as the CLI's ``--json`` and record files give them."""
        raise NotImplementedError

    def save(self, path: PathLike, *, overwrite: bool = False) -> Path:
        """Write the JSON record ``mitk <task> --output-dir`` writes. Returns ``path``."""
        input_path = self.grid.path if self.grid is not None else None
        text = record_text(input_path, self.record())
        return write_atomic(path, overwrite, self.inputs, lambda temporary: temporary.write_text(text,
                                                                                                  encoding="utf-8"))
