"""Training a detection plugin: box datalists, list collation, the detector's own losses, mAP as the monitor.

A box datalist is JSON with a ``training`` list (and optionally ``validation``) of
``{"image": PATH, "box": [[...6 numbers...], ...], "label": [1, ...]}`` cases, and at its top level:

* ``box_mode``: a MONAI box mode name — ``xyzxyz`` (corners, the default), ``xxyyzz`` or ``cccwhd``
  (centre and size);
* ``box_coordinates``: ``world`` (millimetres, the default) or ``voxel`` (indices of the case's image: a box
  ``(i0, j0, k0, i1, j1, k1)`` covers voxels ``i0 .. i1 - 1``, i.e. the extent ``i0 - 0.5 .. i1 - 0.5``);
* ``coordinate_system``: ``RAS`` (the default) or ``LPS``, for world boxes;
* ``labels``: ``{"1": "lesion", ...}`` (optional; label values are positive).

``mitk sample detect`` writes such a file. Every box becomes a world (RAS) extent here; the plugin's transforms
carry it onto the network grid through :func:`mitk.image.map_box_extents`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mitk.enums import Task
from mitk.errors import InputError, PluginError
from mitk.image import map_box_extents
from mitk.io.reader import is_planar
from mitk.plugin import TaskPlugin
from mitk.tasks.detect.plugin import DetectionPlugin
from mitk.training.data import Datalist, channel_count, hold_out, read_case_image, read_case_input
from mitk.training.recipe import TrainingRecipe, TrainingStep

BOX_MODES = ("xyzxyz", "xxyyzz", "cccwhd")


def to_corners(boxes: np.ndarray, mode: str) -> np.ndarray:
    """``(N, 6)`` boxes in a MONAI box mode → ``xyzxyz`` corners (MONAI's ``convert_box_mode``)."""
    from monai.data.box_utils import convert_box_mode

    if mode == "xyzxyz" or len(boxes) == 0:
        return boxes
    return np.asarray(convert_box_mode(boxes, src_mode=mode, dst_mode="xyzxyz"), dtype=float)


def world_boxes(case: Mapping[str, Any], affine: np.ndarray, settings: Mapping[str, Any]) -> np.ndarray:
    """A case's boxes as world RAS extents ``(x0, y0, z0, x1, y1, z1)``."""
    boxes = to_corners(np.asarray(case.get("box") or [], dtype=float).reshape(-1, 6), settings["box_mode"])
    if settings["box_coordinates"] == "voxel":
        return map_box_extents(boxes, affine)
    if settings["coordinate_system"] == "LPS":
        boxes = boxes * np.array([-1.0, -1.0, 1.0, -1.0, -1.0, 1.0])
        boxes = boxes[:, [3, 4, 2, 0, 1, 5]]
    return boxes


def read_box_datalist(source: Path, *, seed: int, validation_fraction: float) -> Datalist:
    """Read a box datalist (see the module docstring); a folder means its ``dataset.json``."""
    path = source / "dataset.json" if source.is_dir() else source
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"not a readable box datalist ({error})", path) from None
    if not isinstance(document, dict) or not isinstance(document.get("training"), list):
        raise InputError('a box datalist needs a "training" list of {"image", "box", "label"}', path)
    settings = {"box_mode": str(document.get("box_mode", "xyzxyz")),
                "box_coordinates": str(document.get("box_coordinates", "world")),
                "coordinate_system": str(document.get("coordinate_system", "RAS")).upper()}
    if settings["box_mode"] not in BOX_MODES:
        raise InputError(f"box_mode must be one of {', '.join(BOX_MODES)}, got {settings['box_mode']!r}", path)
    if settings["box_coordinates"] not in ("world", "voxel"):
        raise InputError(f"box_coordinates must be world or voxel, got {settings['box_coordinates']!r}", path)
    if settings["coordinate_system"] not in ("RAS", "LPS"):
        raise InputError(f"coordinate_system must be RAS or LPS, got {settings['coordinate_system']!r}", path)
    lists = {}
    for key in ("training", "validation"):
        cases = []
        for raw in document.get(key) or []:
            if not isinstance(raw, dict) or "image" not in raw:
                raise InputError(f"every {key} case needs an image, got {raw!r}", path)
            case = {**raw, **settings, "image": str((path.parent / raw["image"]).resolve())}
            check_boxes(case, path)
            cases.append(case)
        lists[key] = cases
    labels = document.get("labels")
    names = {int(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) and labels else None
    training, validation, held = lists["training"], lists["validation"], False
    if not validation:
        training, validation = hold_out(training, seed, validation_fraction, path)
        held = True
    return Datalist(source=path, training=training, validation=validation, labels=names, held_out=held,
                    extra=settings)


def check_boxes(case: dict[str, Any], source: Path) -> None:
    """Refuse a case whose image is missing or whose boxes and labels do not pair up."""
    if not Path(case["image"]).exists():
        raise InputError(f"listed in {source.name} but missing", case["image"])
    boxes, labels = case.get("box") or [], case.get("label") or []
    try:
        array = np.asarray(boxes, dtype=float).reshape(-1, 6)
    except (TypeError, ValueError):
        raise InputError(f"{case['image']}: boxes must be lists of 6 numbers", source) from None
    if len(array) != len(labels) or any(int(v) < 1 for v in labels):
        raise InputError(f"{case['image']}: give one positive label per box", source)
    case.setdefault("name", Path(case["image"]).name)


SMALLEST_VISIBLE_VOXELS = 3.0
"""Lesions narrower than this on the network grid are below what its feature maps resolve."""
FEW_CASES, FEW_BOXES = 20, 30
"""Below these many training cases or boxes a detector trained from scratch rarely generalises."""


def box_statistics(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Edge lengths (mm, world RAS extents) of the training boxes: 5th, 50th, 95th percentile per axis, the
    smallest box's edges and the count (the plan for spacing and anchors is made from these)."""
    sizes = []
    for case in cases:
        boxes = world_boxes(case, np.eye(4), case) if case.get("box_coordinates") != "voxel" else None
        if boxes is None:  # voxel boxes need the image's affine: read its header only
            from mitk.io.reader import load_image

            boxes = world_boxes(case, load_image(case["image"]).affine, case)
        sizes.extend((boxes[:, 3:] - boxes[:, :3]).tolist())
    if not sizes:
        return {"count": 0}
    array = np.asarray(sizes, dtype=float)
    smallest = array[np.argmin(array.min(axis=1))]
    return {"count": len(array), "smallest_mm": np.round(smallest, 3).tolist(),
            **{f"p{q}_mm": np.round(np.percentile(array, q, axis=0), 3).tolist() for q in (5, 50, 95)}}


def size_warnings(datalist: Datalist, config: Mapping[str, Any]) -> list[str]:
    """What a user should know before training: too few cases or boxes, boxes too small for the network grid
    (with the spacing that would show them at :data:`SMALLEST_VISIBLE_VOXELS` voxels)."""
    warnings = []
    stats = dict(config.get("box_statistics") or box_statistics(datalist.training))
    cases, boxes = len(datalist.training), int(stats.get("count", 0))
    if cases < FEW_CASES or boxes < FEW_BOXES:
        warnings.append(f"a small data set ({cases} training cases, {boxes} boxes): a detector trained from "
                        f"scratch needs about {FEW_CASES} cases and {FEW_BOXES} boxes or more to generalise")
    spacing = config.get("spacing")
    if boxes and isinstance(spacing, list | tuple) and all(isinstance(v, int | float) for v in spacing):
        grid = np.asarray(spacing, dtype=float)[: int(config.get("spatial_dims", 3))]  # 2-D: in-plane axes
        low = np.asarray(stats["p5_mm"], dtype=float)[: len(grid)]
        voxels = low / grid[: len(low)]
        if voxels.min() < SMALLEST_VISIBLE_VOXELS:
            visible = np.floor(low / SMALLEST_VISIBLE_VOXELS * 100) / 100
            shown = ",".join(f"{v:g}" for v in visible)
            warnings.append(f"lesions are small for the network grid: 5% of the boxes are under "
                            f"{voxels.min():.1f} voxels across at spacing {list(map(float, grid))} mm; "
                            f"--set spacing=[{shown}] would make them {SMALLEST_VISIBLE_VOXELS:g} voxels")
    return warnings


class LoadBoxCase:
    """Read one case: its image (channel first, with its affine) and its boxes as world RAS extents."""

    def __init__(self, in_channels: int) -> None:
        self.in_channels = in_channels

    def __call__(self, case: dict[str, Any]) -> dict[str, Any]:
        from mitk.runner.tensors import to_meta_tensor

        image = read_case_input(case["image"], self.in_channels)
        voxel = None
        if case.get("box_coordinates") == "voxel":  # kept as given: mapped to the network grid in one step
            voxel = to_corners(np.asarray(case.get("box") or [], dtype=float).reshape(-1, 6), case["box_mode"])
        return {"image": to_meta_tensor(image), "boxes_world": world_boxes(case, image.affine, case),
                "boxes_voxel": voxel, "labels": np.asarray(case.get("label") or [], dtype=np.int64),
                "name": case.get("name", "")}


def list_collate(batch: list[Any]) -> list[Any]:
    """Detection batches stay lists: images differ in size, cases in box count; a case that became several
    training patches contributes each of them."""
    return [item for entry in batch for item in (entry if isinstance(entry, list) else [entry])]


class DetectionRecipe(TrainingRecipe):
    """Box datalists; the plugin's own step (its detector computes its losses); mAP as the monitor."""

    task = Task.DETECT

    def read_datalist(self, source: Path, *, seed: int, validation_fraction: float) -> Datalist:
        if not source.exists():
            raise InputError("no such datalist file or folder", source)
        return read_box_datalist(source, seed=seed, validation_fraction=validation_fraction)

    def check_case(self, case: Mapping[str, Any], source: Path) -> None:
        check_boxes(dict(case), source)

    def found_config(self, datalist: Datalist) -> dict[str, Any]:
        first = read_case_image(datalist.training[0]["image"])
        found: dict[str, Any] = {"in_channels": channel_count(first),
                                 "box_statistics": box_statistics(datalist.training)}
        if is_planar(first):  # one-slice training images (PNG, 2-D NIfTI) make a 2-D model
            found["spatial_dims"] = 2
        labels = datalist.labels or {int(v): f"class {int(v)}" for case in datalist.training
                                     for v in case.get("label") or []}
        if labels:
            found["labels"] = {k: v for k, v in sorted(labels.items()) if k > 0}
        return found

    def case_loader(self, plugin: TaskPlugin, config: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
        return LoadBoxCase(int(config["in_channels"]))

    def training_step(self, plugin: TaskPlugin, config: dict[str, Any]) -> TrainingStep:
        if not isinstance(plugin, DetectionPlugin):
            raise PluginError(f"{type(plugin).__name__} is not a detection plugin")
        raise PluginError(f"{type(plugin).__name__} has no training step: a trainable detection plugin supplies "
                          "training_step(config) (its detector computes its own losses)")

    def collate(self) -> Callable[[list[Any]], Any] | None:
        return list_collate

    def describe(self, datalist: Datalist, config: dict[str, Any]) -> str:
        boxes = sum(len(case.get("box") or []) for case in datalist.training)
        labels = ", ".join(str(name) for name in (config.get("labels") or {}).values())
        line = f"{super().describe(datalist, config)}; {boxes} training boxes; labels: {labels}"
        return "\n".join([line, *(f"warning: {text}" for text in size_warnings(datalist, config))])
