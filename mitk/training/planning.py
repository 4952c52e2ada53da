"""From a fingerprint to a segmentation plugin's training settings, following nnU-Net's ``ExperimentPlanner``
(classification: :mod:`mitk.training.planning_classify`; detection: :mod:`mitk.training.planning_detect`;
any of them from the data: :mod:`mitk.training.plan_data`). The plan file and its checks are here.

- **Target spacing**: the median spacing; when one axis is more than 3× coarser than the others and has
  more than 3× fewer voxels, that axis takes the 10th percentile of its spacings instead (nnU-Net's
  ``determine_fullres_target_spacing``).
- **Patch**: nnU-Net's starting patch (256³ voxels shaped like the target spacing's inverse) clipped to the
  median shape after resampling, its sides multiples of the network's size divisor.
- **Depth**: pooling until the smallest patch side would fall below 4 voxels (at most 5 poolings);
  **channels**: doubling from a base width, at most 320.
- **Budget**: on CUDA the activations must fit the memory budget (nnU-Net's 8 GB reference, or less when
  the device has less); on the CPU also one training step must fit a compute budget (about a second at
  25 GFLOP/s per thread). The widest base (32, 16, then 8) that fits is taken, then the patch shrinks along
  its side largest relative to the median shape.
- **Batch size**: 2 (nnU-Net's minimum); on CUDA more while the memory budget allows, at most 5% of the data
  set's voxels per batch.
- **Augmentation**: a bias field (probability 0.3) when every channel is MR, none otherwise.
- **Intensity**: CT clips to the foreground 0.5/99.5 percentiles and z-scores with the foreground mean and
  std (as one linear map); MR z-scores each image over its non-zero voxels.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mitk.errors import UsageError
from mitk.training.augment import AUTO_BIAS_FIELD

PLAN_FORMAT = 1
ANISOTROPY_THRESHOLD = 3.0
PATCH_VOXELS = 256 ** 3
MIN_FEATURE_SIDE = 4
MAX_POOLINGS = 5
MAX_FEATURES = 320
BASE_WIDTHS = (32, 16, 8)
CUDA_REFERENCE_GB = 8.0
CPU_GFLOP_PER_THREAD = 25.0
"""The CPU compute budget: GFLOP per training step per torch thread (about a second per step)."""
BYTES_PER_ACTIVATION = 4 * 24
"""fp32 bytes kept per feature-map voxel and channel for the backward pass (convolutions, norms, activations
and residual units of encoder and decoder)."""
MAX_BATCH_SHARE = 0.05
PLANNED_TASKS = {"unet": "segment", "segresnet": "segment", "densenet121": "classify", "resnet": "classify",
                 "retinanet": "detect"}
"""The plugins `mitk plan` configures, and their tasks (classify: :mod:`mitk.training.planning_classify`,
detect: :mod:`mitk.training.planning_detect`)."""
PLANNED_PLUGINS = tuple(PLANNED_TASKS)
SEGMENT_PLUGINS = ("unet", "segresnet")


@dataclass(frozen=True)
class Budget:
    """What one training step may cost on the chosen device."""

    device: str
    memory_gb: float
    gflop_per_step: float | None  # None: no compute limit (CUDA)

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "memory_gb": round(self.memory_gb, 2),
                "gflop_per_step": None if self.gflop_per_step is None else round(self.gflop_per_step, 1)}


def device_budget(device: str = "auto", memory_gb: float | None = None, gflop_per_step: float | None = None
                  ) -> Budget:
    """The budget of ``device`` (auto: CUDA when available): CUDA memory (at most nnU-Net's 8 GB reference);
    on the CPU a quarter of the RAM (at most 8 GB) and :data:`CPU_GFLOP_PER_THREAD` per torch thread."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available")
        total = torch.cuda.get_device_properties(torch.device(device)).total_memory / 2 ** 30
        return Budget("cuda", memory_gb or min(CUDA_REFERENCE_GB, 0.8 * total), gflop_per_step)
    if device != "cpu":
        raise UsageError(f"--device must be auto, cpu or cuda[:N], not {device!r}")
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    threads = torch.get_num_threads()
    return Budget("cpu", memory_gb or min(8.0, ram / 4), gflop_per_step or CPU_GFLOP_PER_THREAD * threads)


def target_spacing(spacings: Sequence[Sequence[float]], shapes: Sequence[Sequence[float]]) -> list[float]:
    """nnU-Net's full-resolution target spacing (see the module docstring)."""
    spacing_table = np.asarray(spacings, dtype=float)
    target = np.percentile(spacing_table, 50, axis=0)
    target_size = np.percentile(np.asarray(shapes, dtype=float), 50, axis=0)
    worst = int(np.argmax(target))
    others = [axis for axis in range(len(target)) if axis != worst]
    other_spacings = [target[a] for a in others]
    anisotropic_spacing = target[worst] > ANISOTROPY_THRESHOLD * max(other_spacings)
    anisotropic_voxels = target_size[worst] * ANISOTROPY_THRESHOLD < min(target_size[a] for a in others)
    if anisotropic_spacing and anisotropic_voxels:
        coarse = float(np.percentile(spacing_table[:, worst], 10))
        if coarse < max(other_spacings):
            coarse = max(max(other_spacings), coarse) + 1e-5
        target[worst] = coarse
    return [float(v) for v in target]


def resampled_median_shape(fingerprint: Mapping[str, Any], spacing: Sequence[float]) -> list[float]:
    """The median case shape (cropped to non-zero) after resampling to ``spacing``."""
    shapes = np.asarray(fingerprint["shapes_after_crop"], dtype=float)
    spacings = np.asarray(fingerprint["spacings"], dtype=float)
    return np.median(shapes * spacings / np.asarray(spacing, dtype=float), axis=0).tolist()


def poolings(patch: Sequence[int]) -> int:
    """Isotropic poolings until the smallest side would fall below :data:`MIN_FEATURE_SIDE` (1..5)."""
    smallest = min(patch)
    return max(1, min(MAX_POOLINGS, math.floor(math.log2(max(smallest, 1) / MIN_FEATURE_SIDE))))


def features(base: int, levels: int) -> list[int]:
    return [min(MAX_FEATURES, base * 2 ** level) for level in range(levels)]


def step_cost(patch: Sequence[int], widths: Sequence[int], batch: int) -> tuple[float, float]:
    """(activation memory in GB, GFLOP) of one training step of a residual UNet with two 3×3×3 convolutions
    per unit and two units per level (encoder and decoder), forward and backward."""
    voxels = float(np.prod(patch))
    memory = flops = 0.0
    for level, width in enumerate(widths):
        level_voxels = voxels / 8 ** level
        memory += level_voxels * width * BYTES_PER_ACTIVATION
        flops += 2 * 27 * width * width * level_voxels * 6 * 3
    return batch * memory / 2 ** 30, batch * flops / 1e9


def _round_to(side: float, divisor: int) -> int:
    return max(divisor, round(side / divisor) * divisor)


def _fits(budget: Budget, memory: float, gflop: float) -> bool:
    return memory <= budget.memory_gb and (budget.gflop_per_step is None or gflop <= budget.gflop_per_step)


def plan_network(median_shape: Sequence[float], spacing: Sequence[float], budget: Budget,
                 dataset_voxels: float) -> dict[str, Any]:
    """Patch, poolings, widths and batch size under ``budget`` (see the module docstring)."""
    inverse = 1.0 / np.asarray(spacing, dtype=float)
    start = inverse * (PATCH_VOXELS / np.prod(inverse)) ** (1 / 3)
    patch = [max(8, round(float(v))) for v in np.minimum(start, np.asarray(median_shape))]
    widths_tried = [w for w in BASE_WIDTHS if budget.gflop_per_step is not None or w == BASE_WIDTHS[0]]
    while True:
        levels = poolings(patch) + 1
        divisor = 2 ** (levels - 1)
        patch = [_round_to(side, divisor) for side in patch]
        for base in widths_tried:
            widths = features(base, levels)
            memory, gflop = step_cost(patch, widths, 2)
            if _fits(budget, memory, gflop):
                batch = 2
                if budget.gflop_per_step is None:
                    per_case = memory / 2
                    cap = max(2, int(MAX_BATCH_SHARE * dataset_voxels / np.prod(patch)))
                    batch = max(2, min(cap, int(budget.memory_gb / per_case)))
                memory, gflop = step_cost(patch, widths, batch)
                return {"patch_size": patch, "strides": [2] * (levels - 1), "channels": widths,
                        "batch_size": batch, "estimate": {"memory_gb": round(memory, 3),
                                                          "gflop_per_step": round(gflop, 1)}}
        if max(patch) <= 8:
            raise UsageError("no patch of at least 8 voxels fits the budget; raise --memory-gb or --gflop")
        ratios = np.asarray(patch) / np.maximum(np.asarray(median_shape), 1.0)
        axis = int(np.argmax(ratios))
        patch[axis] = max(8, patch[axis] - divisor)


def intensity_settings(channel: Mapping[str, Any]) -> dict[str, Any]:
    """CT: clip to the foreground 0.5/99.5 percentiles and z-score with the foreground mean/std (a linear
    map from [a_min, a_max] to [b_min, b_max]); otherwise z-score per image over its non-zero voxels."""
    if channel.get("modality") != "CT":
        return {"mode": "mr"}
    low, high = float(channel["percentile_00_5"]), float(channel["percentile_99_5"])
    mean, std = float(channel["mean"]), max(float(channel["std"]), 1e-8)
    return {"mode": "ct", "a_min": round(low, 4), "a_max": round(high, 4),
            "b_min": round((low - mean) / std, 6), "b_max": round((high - mean) / std, 6)}


def network_settings(plugin: str, plan: Mapping[str, Any]) -> dict[str, Any]:
    """The plugin's ``network.*`` settings for the planned depth and widths."""
    if plugin == "unet":
        return {"channels": plan["channels"], "strides": plan["strides"]}
    if plugin == "segresnet":
        levels = len(plan["channels"])
        return {"init_filters": plan["channels"][0], "blocks_down": [1, 2, 2, 4, 4, 4][:levels],
                "blocks_up": [1] * (levels - 1)}
    raise UsageError(f"mitk plan configures the plugins {', '.join(PLANNED_PLUGINS)}, not {plugin!r}")


def planned_task(plugin: str) -> str:
    """The task of a plugin `mitk plan` configures; a usage error names those it does."""
    if plugin not in PLANNED_TASKS:
        raise UsageError(f"mitk plan configures the plugins {', '.join(PLANNED_PLUGINS)}, not {plugin!r}")
    return PLANNED_TASKS[plugin]


def make_plan(fingerprint: Mapping[str, Any], plugin: str, budget: Budget) -> dict[str, Any]:
    """The segmentation plan document: the plugin's settings, the batch size, the reasons and the fingerprint."""
    if plugin not in SEGMENT_PLUGINS:
        raise UsageError(f"mitk plan configures the plugins {', '.join(PLANNED_PLUGINS)}, not {plugin!r}")
    spacing = target_spacing(fingerprint["spacings"], fingerprint["shapes_after_crop"])
    median_shape = resampled_median_shape(fingerprint, spacing)
    dataset_voxels = float(np.prod(median_shape) * fingerprint["cases"])
    network = plan_network(median_shape, spacing, budget, dataset_voxels)
    channels = fingerprint["intensity"]
    settings: dict[str, Any] = {
        "spacing": [round(v, 5) for v in spacing],
        "patch_size": network["patch_size"],
        "intensity": intensity_settings(channels[0]),
        "network": network_settings(plugin, network),
    }
    if len(channels) > 1 and any(c["modality"] == "CT" for c in channels):
        settings["intensity"] = {"mode": "mr"}  # one normalisation for all channels: per-image z-score
    mr = all(c["modality"] == "MR" for c in channels)
    settings["augmentation"] = {"bias_field": AUTO_BIAS_FIELD if mr else 0.0}  # MRI artefacts for MR only
    return {
        "format": PLAN_FORMAT,
        "task": "segment",
        "plugin": plugin,
        "settings": settings,
        "training": {"batch_size": network["batch_size"]},
        "budget": budget.to_dict(),
        "estimate": network["estimate"],
        "median_shape_resampled": [round(v, 1) for v in median_shape],
        "modality": [c["modality"] for c in channels],
        "fingerprint": dict(fingerprint),
    }


# -------------------------------------------------------------------------------------------------
# The plan file
# -------------------------------------------------------------------------------------------------

PLAN_TASKS = ("segment", "classify", "detect")
PLAN_NAME = "mitk-plan.json"
"""The plan `mitk plan DATA` writes beside the data, and `mitk train` picks up from there by default."""


def default_plan_path(data: str | Path) -> Path:
    """``DATA/mitk-plan.json`` for a folder, the datalist's folder for a datalist file."""
    data = Path(data)
    return (data if data.is_dir() else data.parent) / PLAN_NAME


def write_plan(plan: Mapping[str, Any], path: str | Path, overwrite: bool = False) -> Path:
    """Write the plan as indented JSON (refusing an existing file unless ``overwrite``)."""
    import json

    from mitk.errors import OutputExistsError
    from mitk.io.atomic import write_text_atomic

    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError("a plan exists already (use --overwrite to replace it)", path)
    return write_text_atomic(path, json.dumps(plan, indent=2) + "\n", overwrite=overwrite)


def read_plan(path: str | Path) -> dict[str, Any]:
    """A plan file, checked: its format, task, plugin, ``settings`` and ``training`` sections."""
    import json

    from mitk.errors import InputError

    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("no such plan file", path) from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InputError(f"unreadable plan ({error})", path) from None
    if not isinstance(document, dict) or document.get("format") != PLAN_FORMAT:
        raise InputError(f"not a mitk plan (format {PLAN_FORMAT})", path)
    if not isinstance(document.get("settings"), dict) or not isinstance(document.get("training", {}), dict):
        raise InputError("a plan needs a `settings` object (and optionally `training`)", path)
    if not isinstance(document.get("plugin"), str) or document.get("task") not in PLAN_TASKS:
        raise InputError(f"a plan names its task ({', '.join(PLAN_TASKS)}) and plugin", path)
    return document
