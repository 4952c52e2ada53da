"""The allow-list: the only ``_target_`` names a bundle may instantiate, and the only dotted names it may read."""

from __future__ import annotations

from typing import Any

from mitk.errors import CheckpointError

NETWORKS = ("UNet", "BasicUNet", "SegResNet", "SegResNetDS", "SwinUNETR", "UNETR", "DynUNet", "AttentionUnet",
            "FlexibleUNet", "VNet", "HighResNet", "DenseNet121", "DenseNet169", "DenseNet201", "SEResNet50",
            "SEResNet101", "SEResNext50", "EfficientNetBN", "ResNet", "ViT")
"""MONAI networks (``monai.networks.nets``)."""

TRANSFORMS = ("Compose", "LoadImaged", "EnsureChannelFirstd", "Orientationd", "Spacingd", "ScaleIntensityRanged",
              "ScaleIntensityd", "NormalizeIntensityd", "Resized", "CastToTyped", "EnsureTyped", "ToTensord",
              "CropForegroundd", "SpatialPadd", "DivisiblePadd", "CenterSpatialCropd",
              "ScaleIntensityRangePercentilesd", "ThresholdIntensityd", "Identityd")
"""MONAI dictionary transforms (``monai.transforms``) that preprocess in memory; none reads or writes files
(``LoadImaged`` is named so that it can be left out, never built)."""

INFERERS = ("SimpleInferer", "SlidingWindowInferer")
"""MONAI inferers (``monai.inferers``)."""

MODULES = {**{name: "monai.networks.nets" for name in NETWORKS}, **{name: "monai.transforms" for name in TRANSFORMS},
           **{name: "monai.inferers" for name in INFERERS}}

DROPPED = frozenset({"LoadImaged", "EnsureChannelFirstd"})
"""Preprocessing steps mitk does itself (reading any format, channel first): left out of the pipeline."""

CONSTANTS = {f"{module}.{name}": (module, name) for module in ("torch", "numpy", "np")
             for name in ("float16", "float32", "float64", "uint8", "int8", "int16", "int32", "int64", "bool")}
"""Dotted names an expression may read: dtypes only."""


def target_name(target: Any, key: str) -> str:
    """The short allow-listed name of ``target`` (``"UNet"``, ``"monai.networks.nets.UNet"``), or a refusal."""
    if not isinstance(target, str):
        raise CheckpointError(f"{key}: _target_ must be a name, not {type(target).__name__}")
    name = target.rsplit(".", 1)[-1]
    module = target.rsplit(".", 1)[0] if "." in target else None
    allowed = MODULES.get(name)
    if allowed is None or (module is not None and not allowed.startswith(module) and module != "monai"):
        raise CheckpointError(f"{key}: _target_ {target!r} is not on mitk's allow-list of MONAI networks, "
                              "transforms and inferers (see docs/pretrained-models.md)")
    return name


def load_target(name: str) -> Any:
    """The class behind an allow-listed short name."""
    import importlib

    return getattr(importlib.import_module(MODULES[name]), name)


def read_constant(dotted: str, key: str) -> Any:
    """``torch.float32`` and the like; anything else is refused."""
    found = CONSTANTS.get(dotted)
    if found is None:
        raise CheckpointError(f"{key}: {dotted!r} is not one of the names a bundle expression may use (dtypes)")
    import importlib

    module, name = found
    return getattr(importlib.import_module("numpy" if module == "np" else module), name)
