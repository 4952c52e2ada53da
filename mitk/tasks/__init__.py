"""mitk's tasks, one package each with the same modules: ``task`` (the row of the task table and the options of
its verbs), ``plugin`` (the base class its plugins subclass), ``result`` (the typed result and its files),
``runner`` (one image in, a result out; and the batch job), ``recipe`` (its part of training), ``evaluation``
(its metrics) and ``commands`` (the bodies of its verbs).

The plugin base classes are importable from here, as plugin authors have always imported them, and so are the
result classes (imported on first use: they bring numpy)::

    from mitk.tasks import SegmentationPlugin, SegmentationResult, Transform
"""

from __future__ import annotations

import importlib
from typing import Any

from mitk.plugin import TRAINING_DEFAULTS, TRAINING_HELP, TaskPlugin, Transform, merge_config
from mitk.tasks.classify.plugin import ClassificationPlugin
from mitk.tasks.detect.plugin import DetectionPlugin
from mitk.tasks.register.plugin import RegistrationPlugin
from mitk.tasks.segment.plugin import SegmentationPlugin

RESULTS = {"SegmentationResult": "segment", "ClassificationResult": "classify", "DetectionResult": "detect",
           "RegistrationResult": "register"}
"""The result classes, by the task package whose ``result`` module holds each."""

__all__ = ["TRAINING_DEFAULTS", "TRAINING_HELP", "ClassificationPlugin", "DetectionPlugin", "RegistrationPlugin",
           "SegmentationPlugin", "TaskPlugin", "Transform", "merge_config", *RESULTS]


def __getattr__(name: str) -> Any:
    """``mitk.tasks.SegmentationResult`` …: the result classes, imported on first use."""
    if name in RESULTS:
        return getattr(importlib.import_module(f"{__name__}.{RESULTS[name]}.result"), name)
    raise AttributeError(f"module 'mitk.tasks' has no attribute {name!r}")
