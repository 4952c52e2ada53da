"""Former home of the image and result types, kept so that existing imports work (deprecated).

``Image`` and the geometry helpers now live in :mod:`mitk.image`; each task's result type in its own package
(``mitk.tasks.segment.result.SegmentationResult`` …). Importing a moved name from here still works and warns
once with its new place.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from mitk.enums import Task

_MOVED = {
    "Image": "mitk.image", "FloatArray": "mitk.image", "IntArray": "mitk.image", "map_box_extents": "mitk.image",
    "orientation_code": "mitk.image", "ras_to_lps": "mitk.image", "voxel_spacing": "mitk.image",
    "SegmentationResult": "mitk.tasks.segment.result", "ClassificationResult": "mitk.tasks.classify.result",
    "DetectionResult": "mitk.tasks.detect.result", "BOX_CONVENTION": "mitk.tasks.detect.result",
    "RegistrationResult": "mitk.tasks.register.result",
}

__all__ = ["Task", *_MOVED]


def __getattr__(name: str) -> Any:
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module 'mitk.types' has no attribute {name!r}")
    warnings.warn(f"mitk.types.{name} moved to {module}.{name}; import it from there", DeprecationWarning,
                  stacklevel=2)
    return getattr(importlib.import_module(module), name)
