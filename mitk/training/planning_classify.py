"""The plan of a classification plugin (``densenet121``, ``resnet``) from its data set's fingerprint.

- **Classes**: the class names and ``class_weights`` as the recipe finds them (inverse class frequency, mean 1;
  negatives per positive for multi-label), counted over every labelled case; the counts are in the fingerprint.
- **Input size** (``image_size``; the plugins resize the whole image to it): shaped like the median field of
  view in mm, so the network sees square (cubic) pixels, at the data's median resolution (never upsampled),
  at most :data:`MAX_SIDE` per side, sides multiples of 32 (the networks' total stride), at least 32. It
  shrinks as a whole (aspect kept) until a batch of :data:`MIN_BATCH` fits the budget; when even 32 does not,
  the network narrows (``resnet``: ``widen_factor`` 1, ½, ¼; ``densenet121``: ``init_features`` /
  ``growth_rate`` 64/32, 32/16, 16/8). ``resnet`` keeps its first convolution unstrided for inputs of 64
  or less, so the last feature map is not a single pixel.
- **Batch size**: as many as the budget allows (the per-image cost is counted on the real network,
  :mod:`mitk.training.plan_cost`), at least 2 and at most a fifth of the cases (so an epoch has five steps
  or more) and :data:`MAX_BATCH`.
- **Intensity**: CT: the fixed window of the data set's 0.5/99.5 intensity percentiles (``intensity.mode
  range``); otherwise a z-score per image and channel (``zscore``).
- **Augmentation**: flips (probability ½) on the plugin's ``side_safe_axes`` (never the first, left-right; 2-D:
  up-down only), which are then the axes ``--tta`` flips; the MRI bias field (0.3) for MR volumes; the plugin's
  rotation, zoom and intensity defaults are kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mitk.training.augment import AUTO_BIAS_FIELD
from mitk.training.fingerprint_images import class_counts, fingerprint_images, image_statistics

SIZE_DIVISOR = 32
MIN_SIDE = 32
MAX_SIDE = {2: 512, 3: 160}
MIN_BATCH = 4
MAX_BATCH = 32
FLIP = 0.5
SHRINK = 0.8
WIDTHS: dict[str, list[dict[str, Any]]] = {
    "resnet": [{"widen_factor": 1.0}, {"widen_factor": 0.5}, {"widen_factor": 0.25}],
    "densenet121": [{"init_features": 64, "growth_rate": 32}, {"init_features": 32, "growth_rate": 16},
                    {"init_features": 16, "growth_rate": 8}]}
SEPARATOR = ";"


def case_classes(case: dict[str, Any]) -> list[str]:
    """A case's class names (a list, or ``a;b`` text), as the classification recipe reads them."""
    label = case.get("label")
    if isinstance(label, list):
        return [str(v).strip() for v in label]
    return [part.strip() for part in str(label).split(SEPARATOR)]


def native_size(extent_mm: Sequence[float], shape: Sequence[float], dims: int) -> list[float]:
    """Sides proportional to the field of view, at the finest of its median voxel sizes, capped."""
    extent = np.asarray(extent_mm[:dims], dtype=float)
    finest = float(np.min(extent / np.maximum(np.asarray(shape[:dims], dtype=float), 1.0)))
    sides = extent / finest
    return (sides * min(1.0, MAX_SIDE[dims] / float(sides.max()))).tolist()


def rounded(sides: Sequence[float]) -> list[int]:
    return [max(MIN_SIDE, round(s / SIZE_DIVISOR) * SIZE_DIVISOR) for s in sides]


def _cost(plugin: Any, config: dict[str, Any]) -> Any:
    from mitk.training.plan_cost import sample_cost

    return sample_cost(lambda: plugin.network(config), [int(config["in_channels"]), *config["image_size"]])


def plan_network(plugin: Any, name: str, base: dict[str, Any], sides: Sequence[float], budget: Any,
                 cases: int) -> dict[str, Any]:
    """``image_size``, network widths and batch size under ``budget`` (see the module docstring)."""
    cap = max(2, min(MAX_BATCH, cases // 5))
    wanted = min(MIN_BATCH, cap)
    widths = WIDTHS.get(name, [{}]) if budget.gflop_per_step is not None else WIDTHS.get(name, [{}])[:1]
    chosen: tuple[dict[str, Any], list[int], int] | None = None
    for width in widths:
        scale = 1.0
        while True:  # the whole image shrinks, its aspect kept
            size = rounded([s * scale for s in sides])
            network = {**_stride(name, size), **width}
            cost = _cost(plugin, plugin.resolve_config(base, {"image_size": size, "network": network}))
            batch = _batch(budget, cost.gflop, cost.memory_gb, cap)
            if batch >= wanted or max(size) <= MIN_SIDE:
                break
            scale *= SHRINK
        chosen = (network, size, batch)
        if batch >= wanted:
            break
    assert chosen is not None
    network, size, batch = chosen
    return {"image_size": size, "network": network, "batch_size": max(2, batch), "estimate": cost.times(max(2, batch))}


def _stride(name: str, size: Sequence[int]) -> dict[str, Any]:
    """``resnet``: an unstrided first convolution for inputs of 64 or less."""
    return {"first_stride": 1 if min(size) <= 64 else 2} if name == "resnet" else {}


def _batch(budget: Any, gflop: float, memory_gb: float, cap: int) -> int:
    """The most images a step can take within the budget, at most ``cap``."""
    limit = budget.memory_gb / max(memory_gb, 1e-9)
    if budget.gflop_per_step is not None:
        limit = min(limit, budget.gflop_per_step / max(gflop, 1e-9))
    return int(min(cap, math.floor(limit)))


def intensity_settings(channels: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """CT (every channel): the data set's 0.5/99.5 percentile window; otherwise z-scores per image."""
    if channels and all(c["modality"] == "CT" for c in channels) and len(channels) == 1:
        return {"mode": "range", "a_min": round(float(channels[0]["percentile_00_5"]), 4),
                "a_max": round(float(channels[0]["percentile_99_5"]), 4)}
    return {"mode": "zscore"}


def plan_classify(data: str | Path, name: str, plugin: Any, budget: Any) -> dict[str, Any]:
    """The plan document for classification plugin ``name`` on the datalist (CSV, JSON, folder) ``data``."""
    from mitk.taskspecs import get_task
    from mitk.training.data import Datalist, read_case_image

    recipe = get_task("classify").load_recipe()
    listed = recipe.read_datalist(Path(data), seed=0, validation_fraction=0.2)
    cases = listed.training + listed.validation
    every = Datalist(source=listed.source, training=cases, validation=[], labels=listed.labels,
                     extra=listed.extra)
    found = recipe.found_config(every)
    images = []
    for case in cases:
        image = read_case_image(case["image"])
        images.append(image_statistics(image.array, image.spacing))
    fingerprint = fingerprint_images(images, _datalist_modality(Path(data)))
    fingerprint["class_counts"] = class_counts(found["class_names"], case_classes, cases)
    dims = int(found["spatial_dims"])
    base = {**found, "spatial_dims": dims}
    sides = native_size(fingerprint["median_extent_mm"], fingerprint["median_shape"], dims)
    network = plan_network(plugin, name, base, sides, budget, len(listed.training))
    channels = fingerprint["intensity"]
    flip_axes = [int(a) for a in plugin.side_safe_axes({"spatial_dims": dims})]
    mr_volumes = dims == 3 and all(c["modality"] == "MR" for c in channels)
    settings = {**found, "image_size": network["image_size"], "intensity": intensity_settings(channels),
                "network": network["network"],
                "augmentation": {"flip": FLIP if flip_axes else 0.0, "flip_axes": flip_axes,
                                 "bias_field": AUTO_BIAS_FIELD if mr_volumes else 0.0}}
    return {"format": 1, "task": "classify", "plugin": name, "settings": settings,
            "training": {"batch_size": network["batch_size"]}, "budget": budget.to_dict(),
            "estimate": network["estimate"], "modality": [c["modality"] for c in channels],
            "fingerprint": fingerprint}


def _datalist_modality(data: Path) -> dict[str, Any] | None:
    """A JSON datalist's ``modality`` (or ``channel_names``) mapping, if any."""
    import json

    if data.suffix.lower() != ".json" or not data.is_file():
        return None
    try:
        document = json.loads(data.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    raw = (document.get("modality") or document.get("channel_names")) if isinstance(document, dict) else None
    return raw if isinstance(raw, dict) else None
