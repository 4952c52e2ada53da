"""The detection plugin base: what a detection plugin hands the runner."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mitk.enums import Task
from mitk.plugin import TaskPlugin

if TYPE_CHECKING:
    import numpy as np
    import torch

    from mitk.image import Image


class DetectionPlugin(TaskPlugin):
    """Produces boxes. :meth:`detect` works on the preprocessed image, in its voxel coordinates."""

    __module__ = "mitk.tasks"  # its public home (re-exported there)

    task = Task.DETECT
    required_methods = ("inference_transforms", "detect")

    def labels(self, config: dict[str, Any]) -> dict[int, str]:
        raw = config.get("labels") or {1: "object"}
        return {int(k): str(v) for k, v in raw.items()}

    def detect(self, image: torch.Tensor, model: torch.nn.Module | None, config: dict[str, Any]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(boxes, scores, labels)``; boxes are ``(i0, j0, k0, i1, j1, k1)`` voxel indices of
        ``image`` (channel first, no batch axis)."""
        raise NotImplementedError

    def detect_array(self, image: Image, config: dict[str, Any]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For a plugin with ``needs_torch = False``: ``(boxes, grid_affine, scores, labels)`` computed with
        NumPy/SciPy alone, boxes in the voxel indices of the grid whose affine is ``grid_affine`` (the image's
        own, or a coarser one the plugin worked on), as :meth:`detect` gives them for its preprocessed image.
        The runner maps them to the input grid as for the network path, so they must be the boxes it gives."""
        raise NotImplementedError

    def settings_schema(self) -> dict[str, tuple[type | None, ...]]:
        """``labels`` is open: its keys are the label values the user chooses."""
        return {"labels": (dict,)}
