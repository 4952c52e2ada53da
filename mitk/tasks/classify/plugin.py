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

    def side_safe_axes(self, config: dict[str, Any]) -> tuple[int, ...]:
        """Every spatial axis but the first (the image's columns: left-right in a radiograph and in most
        volumes), so that a flip never mirrors a side-dependent finding; 2-D: the up-down axis alone."""
        return tuple(range(1, int(config.get("spatial_dims") or 3)))

    def default_flip_axes(self, spatial_dims: int) -> tuple[int, ...]:
        """The axes ``augmentation.flip`` flips when ``augmentation.flip_axes`` is null: 2-D left-right only (an
        upside-down radiograph or fundus photograph is not a sample), 3-D every axis."""
        return (0,) if spatial_dims == 2 else tuple(range(spatial_dims))

    def trained_flip_axes(self, config: dict[str, Any]) -> tuple[int, ...]:
        """The axes the network was trained to be indifferent to: ``augmentation.flip_axes`` when
        ``augmentation.flip`` is on, else none."""
        augmentation = config.get("augmentation") or {}
        if not float(augmentation.get("flip") or 0.0) > 0:
            return ()
        axes = augmentation.get("flip_axes")
        dims = int(config.get("spatial_dims") or 3)
        return tuple(int(a) for a in (self.default_flip_axes(dims) if axes is None else axes))

    def tta_axes(self, config: dict[str, Any]) -> tuple[int, ...]:
        """The side-safe axes the network was trained to flip (both): a classifier has not learnt to ignore a flip
        it never saw in training, and up-down TTA on a 2-D classifier trained without flips cost it 6 points of
        accuracy (docs/benchmarks.md). None (the plain pass only) for a model trained without flips."""
        trained = set(self.trained_flip_axes(config))
        return tuple(axis for axis in self.side_safe_axes(config) if axis in trained)
