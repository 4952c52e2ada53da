"""The plan of the ``retinanet`` detector from its data set's fingerprint (nnDetection's idea, counted).

- **Grid** (``spacing``): a quarter of the small boxes' edge (5th percentile) on every axis, so that most lesions
  are :data:`BOX_VOXELS` voxels across (the plugin's own measured rule), except an axis that nnU-Net's
  target spacing keeps coarse (over 3× the others, with 3× fewer voxels: thick slices), which keeps that
  spacing rather than being interpolated.
- **Anchors** (``anchors.base_shapes``, network voxels at the finest pyramid level, doubled per level): two
  geometric steps from the small boxes' size on that grid towards the large ones (95th percentile), per axis;
  **pyramid levels** (``backbone.returned_layers``): enough doublings that the coarsest anchors reach the
  largest box (2 to 5 levels).
- **Network width** (``backbone.block_inplanes``, ``backbone.fpn_channels``): base 32, 16 or 8 channels, the
  widest for which a patch of at least :data:`MIN_PATCH` voxels (and :data:`CONTEXT` × the largest box) fits
  the budget (CUDA: 32); **patch** (``sampling.patch_size``, and ``patch_size`` for sliding windows): the
  median image on the grid, shrunk (its side largest relative to the median image first) until a step fits,
  sides multiples of the network's size divisor. **Batch size** 2 (nnU-Net's minimum); on CUDA more while
  memory allows, at most a fifth of the cases.
- **Flips** (``augment_flip``, every axis): on for volumes whose labels name no side; off for one-slice images
  (radiographs: left-right is not a symmetry) and for sided labels, as test-time augmentation rules.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mitk.errors import UsageError
from mitk.training.fingerprint_images import box_fingerprint, fingerprint_images, image_statistics

BOX_VOXELS = 4.0
MIN_PATCH = 32
CONTEXT = 1.5
MIN_LEVELS, MAX_LEVELS = 2, 5
BASE_WIDTHS = (32, 16, 8)
CONV1_STRIDE = 2


def grid_spacing(native: Sequence[float], spacings: Sequence[Sequence[float]], p5_mm: Sequence[float],
                 dims: int) -> list[float]:
    """A quarter of the small boxes' smallest edge on each in-plane (2-D) or every (3-D) axis; an axis the
    target spacing ``native`` keeps anisotropic (over 3× the others) keeps it when coarser."""
    from mitk.training.planning import ANISOTROPY_THRESHOLD

    edge = float(np.min(np.asarray(p5_mm[:dims], dtype=float))) / BOX_VOXELS
    median = np.median(np.asarray(spacings, dtype=float), axis=0)
    grid = []
    for axis, value in enumerate(native):
        others = [float(median[a]) for a in range(dims) if a != axis]
        thick = axis < dims and others and float(value) > ANISOTROPY_THRESHOLD * max(others)
        grid.append(round(max(edge, float(value)) if thick else edge if axis < dims else float(value), 4))
    return grid


def anchor_plan(low: np.ndarray, high: np.ndarray, largest: np.ndarray, dims: int) -> tuple[list[list[float]], int]:
    """(base anchor shapes, pyramid levels): two steps from ``low`` towards ``min(high, 2·low)`` (the plugin's
    own rule), and levels until ``2^(levels-1)`` times the larger base shape covers ``largest``."""
    ratio = np.clip(high / low, 1.0, 2.0) ** 0.5
    shapes = [[round(float(v), 2) for v in low * ratio ** n] for n in range(2)]
    reach = float(np.max(largest / (low * ratio)))
    levels = int(np.clip(math.ceil(math.log2(max(reach, 1.0))) + 1, MIN_LEVELS, MAX_LEVELS))
    return [[*s, 1.0] if dims == 2 else s for s in shapes], levels


def _round_up(side: float, divisor: int) -> int:
    return max(divisor, math.ceil(side / divisor) * divisor)


def _cost(plugin: Any, config: dict[str, Any]) -> Any:
    """One training patch through the detector's network (feature pyramid and both heads)."""
    from mitk.training.plan_cost import sample_cost

    dims = int(config["spatial_dims"])
    shape = [int(config["in_channels"]), *config["sampling"]["patch_size"][:dims]]

    def forward(detector: Any, batch: Any) -> list[Any]:
        network = detector.network
        outputs = []
        for features in network.feature_extractor(batch).values():
            for head, last in ((network.classification_head, "cls_logits"), (network.regression_head, "bbox_reg")):
                outputs.append(getattr(head, last)(head.conv(features)))
        return outputs

    return sample_cost(lambda: plugin.network(config), shape, forward)


def plan_network(plugin: Any, base: dict[str, Any], shape: Sequence[float], need: Sequence[float], budget: Any,
                 cases: int, patches_per_case: int) -> dict[str, Any]:
    """Widths, patch and batch size under ``budget`` (see the module docstring)."""
    dims = int(base["spatial_dims"])
    levels = len(base["backbone"]["returned_layers"]) + 1
    divisor = CONV1_STRIDE * 2 ** (levels - 1)
    start = [_round_up(max(n, m, MIN_PATCH), divisor) for n, m in zip(shape[:dims], need[:dims], strict=True)]
    floor = [min(s, _round_up(max(m, MIN_PATCH), divisor)) for s, m in zip(start, need[:dims], strict=True)]
    widths = [w for w in BASE_WIDTHS if budget.gflop_per_step is not None or w == BASE_WIDTHS[0]]
    for width in widths:
        patch = list(start)
        while True:
            cost = _cost(plugin, _with(plugin, base, patch, width, dims))
            memory, gflop = 2 * patches_per_case * cost.memory_gb, 2 * patches_per_case * cost.gflop
            fits = memory <= budget.memory_gb and (budget.gflop_per_step is None or gflop <= budget.gflop_per_step)
            if fits or patch == floor:
                break
            ratios = np.asarray(patch, dtype=float) / np.maximum(np.asarray(shape[:dims], dtype=float), 1.0)
            ratios[np.asarray(patch) <= np.asarray(floor)] = -1.0
            axis = int(np.argmax(ratios))
            patch[axis] = max(floor[axis], patch[axis] - divisor)
        if fits:
            break
    batch = 2
    if budget.gflop_per_step is None:
        per_case = patches_per_case * cost.memory_gb
        batch = max(2, min(max(2, cases // 5), int(budget.memory_gb / max(per_case, 1e-9))))
    return {"patch": patch, "width": width, "batch_size": batch, "fits": fits,
            "estimate": cost.times(batch * patches_per_case)}


def _with(plugin: Any, base: dict[str, Any], patch: Sequence[int], width: int, dims: int) -> dict[str, Any]:
    sides = [*patch, 1] if dims == 2 else list(patch)
    return plugin.resolve_config(base, {"patch_size": sides, "sampling": {"patch_size": sides},
                                        "backbone": {"block_inplanes": [width * 2 ** n for n in range(4)],
                                                     "fpn_channels": 2 * width}})


def sided(labels: dict[str, Any]) -> bool:
    names = " ".join(str(v) for v in labels.values()).lower().replace("_", " ")
    return re.search(r"\b(left|right)\b", names) is not None


def plan_detect(data: str | Path, name: str, plugin: Any, budget: Any) -> dict[str, Any]:
    """The plan document for detection plugin ``name`` on the box datalist ``data``."""
    from mitk.training.data import Datalist
    from mitk.training.planning import target_spacing

    if name != "retinanet":
        raise UsageError(f"mitk plan configures the detector retinanet, not {name!r}")
    recipe = get_recipe()
    listed = recipe.read_datalist(Path(data), seed=0, validation_fraction=0.2)
    cases = listed.training + listed.validation
    found = recipe.found_config(Datalist(source=listed.source, training=cases, validation=[], labels=listed.labels))
    found.pop("box_statistics", None)  # found again from each run's own training cases
    loader = recipe.case_loader(plugin, {"in_channels": found["in_channels"]})
    images, boxes, labels = [], [], []
    for case in cases:
        loaded = loader(case)
        tensor = np.asarray(loaded["image"])
        affine = np.asarray(loaded["image"].affine, dtype=float)
        images.append(image_statistics(np.moveaxis(tensor, 0, -1), np.linalg.norm(affine[:3, :3], axis=0)))
        boxes.append(np.asarray(loaded["boxes_world"], dtype=float).reshape(-1, 6))
        labels.append(np.asarray(loaded["labels"]))
    fingerprint = fingerprint_images(images)
    fingerprint["boxes"] = box_fingerprint(boxes, labels)
    dims = int(fingerprint["spatial_dims"])
    stats = fingerprint["boxes"]
    native = target_spacing(fingerprint["spacings"], fingerprint["shapes"])
    spacing = grid_spacing(native, fingerprint["spacings"], stats["p5_mm"], dims)
    grid = np.asarray(spacing[:dims], dtype=float)
    low = np.maximum(np.asarray(stats["p5_mm"][:dims], dtype=float) / grid, 1.0)
    high = np.maximum(np.asarray(stats["p95_mm"][:dims], dtype=float) / grid, 1.0)
    largest = np.maximum(np.asarray(stats["max_mm"][:dims], dtype=float) / grid, 1.0)
    shapes, levels = anchor_plan(low, high, largest, dims)
    shapes_on_grid = np.asarray(fingerprint["shapes"], dtype=float) * np.asarray(fingerprint["spacings"]) / spacing
    median_shape = np.median(shapes_on_grid, axis=0)
    base = {**found, "spatial_dims": dims, "spacing": spacing, "anchors": {"base_shapes": shapes},
            "backbone": {"returned_layers": list(range(1, levels))}}
    per_case = int(plugin.default_config()["sampling"]["per_case"])
    network = plan_network(plugin, base, median_shape.tolist(), (CONTEXT * largest).tolist(), budget,
                           len(listed.training), per_case)
    patch = [*network["patch"], 1] if dims == 2 else network["patch"]
    width = network["width"]
    settings = {**found, "spatial_dims": dims, "spacing": spacing, "patch_size": patch,
                "sampling": {"patch_size": patch}, "anchors": {"base_shapes": shapes},
                "backbone": {"returned_layers": list(range(1, levels)),
                             "block_inplanes": [width * 2 ** n for n in range(4)], "fpn_channels": 2 * width},
                "augment_flip": dims == 3 and not sided(found.get("labels") or {})}
    return {"format": 1, "task": "detect", "plugin": name, "settings": settings,
            "training": {"batch_size": network["batch_size"]}, "budget": budget.to_dict(),
            "estimate": {**network["estimate"], "fits_budget": network["fits"]},
            "median_shape_on_grid": [round(float(v), 1) for v in median_shape],
            "modality": [c["modality"] for c in fingerprint["intensity"]], "fingerprint": fingerprint}


def get_recipe() -> Any:
    from mitk.taskspecs import get_task

    return get_task("detect").load_recipe()
