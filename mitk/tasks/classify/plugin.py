"""The classification plugin base: what a classification plugin hands the runner."""

from __future__ import annotations

from typing import Any

from mitk.enums import Task
from mitk.plugin import TaskPlugin


class ClassificationPlugin(TaskPlugin):
    """Produces per-class probabilities for a whole image."""

    __module__ = "mitk.tasks"  # its public home (re-exported there)

    task = Task.CLASSIFY
    required_methods = ("network", "inference_transforms")

    def class_names(self, config: dict[str, Any]) -> list[str]:
        return list(config.get("class_names") or [])

    def tta_axes(self, config: dict[str, Any]) -> tuple[int, ...]:
        """Every spatial axis but the first (the image's columns: left-right in a radiograph and in most
        volumes), so that ``--tta`` never mirrors a side-dependent finding; 2-D: the up-down axis alone."""
        return tuple(range(1, int(config.get("spatial_dims") or 3)))
