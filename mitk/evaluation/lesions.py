"""Reference boxes from label maps: one box per connected lesion of each label value.

Connectivity is full: 26 neighbours in 3-D, 8 in 2-D (a 2-D map stored with a singleton third axis gets the
same components). A box is written in the two forms ``mitk evaluate detect`` reads: ``box_voxel``
``(i0, j0, k0, i1, j1, k1)`` (start inclusive, end exclusive) and ``box_world_mm``, the axis-aligned world
extent enclosing it (RAS, or LPS on request), through :func:`mitk.image.map_box_extents`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mitk.errors import InputError
from mitk.image import Image, map_box_extents

LABEL_SUFFIXES = ("_labels", "_label", "_seg", "_mask", "_gt")
"""Taken off a label map's file stem to name its case (``lung1_label.nii.gz`` → ``lung1``)."""


def lesion_boxes(label: Image, names: dict[int, str] | None = None, min_voxels: int = 1,
                 coordinate_system: str = "RAS") -> list[dict[str, Any]]:
    """One record per connected component of each non-zero label value, in label order then in scan order
    (``scipy.ndimage.label``): ``label``, ``name``, ``score`` (1), ``box_voxel``, ``box_world_mm``,
    ``voxels`` and ``coordinate_system``. Components smaller than ``min_voxels`` are left out."""
    from scipy import ndimage

    values = np.asarray(label.array)
    if values.ndim == 4 and values.shape[3] == 1:
        values = values[..., 0]
    if values.ndim == 2:
        values = values[..., None]
    if values.ndim != 3:
        raise InputError(f"a label map has 2 or 3 axes, got shape {values.shape}", label.path)
    if not np.all(np.equal(np.mod(values, 1), 0)):
        raise InputError("label map holds non-integer values (was it resampled with interpolation?)", label.path)
    structure = np.ones((3, 3, 3), dtype=bool)  # 26-connected; 8-connected within a single slice
    records: list[dict[str, Any]] = []
    for value in sorted(int(v) for v in np.unique(values) if v > 0):
        components, count = ndimage.label(values == value, structure=structure)
        sizes = np.bincount(components.ravel(), minlength=count + 1)
        for number, extent in enumerate(ndimage.find_objects(components), start=1):
            if extent is None or sizes[number] < min_voxels:
                continue
            box = np.array([s.start for s in extent] + [s.stop for s in extent], dtype=float)
            world = map_box_extents(box, label.affine)[0]
            if coordinate_system.upper() == "LPS":
                world = (world * np.array([-1, -1, 1, -1, -1, 1]))[[3, 4, 2, 0, 1, 5]]
            records.append({"label": value, "name": (names or {}).get(value, str(value)), "score": 1.0,
                            "box_voxel": box.tolist(), "box_world_mm": np.round(world, 4).tolist(),
                            "voxels": int(sizes[number]), "coordinate_system": coordinate_system.upper()})
    return records


def case_of_label_file(path: Path) -> str:
    """``lung1_label.nii.gz`` → ``lung1``; ``case_003.nii.gz`` → ``case_003``; a DICOM folder → its name."""
    from mitk.io.atomic import split_suffix

    stem = split_suffix(path)[0] if path.is_file() else path.name
    for suffix in LABEL_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def boxes_document(label: Image, names: dict[int, str] | None = None, min_voxels: int = 1,
                   coordinate_system: str = "RAS") -> dict[str, Any]:
    """The ``<case>_boxes.json`` document of a label map: its boxes, the grid they are on (``affine``: voxel →
    RAS mm, ``shape``) so that voxel boxes can be turned into world boxes later, and the source file's name."""
    return {"source": label.path.name if label.path is not None else None,
            "coordinate_system": coordinate_system.upper(),
            "affine": np.asarray(label.affine, float).tolist(), "shape": list(label.spatial_shape),
            "boxes": lesion_boxes(label, names, min_voxels, coordinate_system)}


def document_text(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"
