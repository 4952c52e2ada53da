"""Detection: one image in, boxes in voxel indices and world millimetres out."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mitk.runner.geometry import voxel_map
from mitk.runner.model import LoadedModel
from mitk.runner.segment import to_meta_tensor
from mitk.tasks import DetectionPlugin
from mitk.types import DetectionResult, Image


def boxes_to_input_grid(boxes: np.ndarray, source_affine: np.ndarray, target_affine: np.ndarray) -> np.ndarray:
    """Map ``(i0, j0, k0, i1, j1, k1)`` boxes from the network grid to the input grid (enclosing box)."""
    mapping = voxel_map(target_affine, source_affine)  # source voxel -> target voxel
    out = np.zeros((len(boxes), 6))
    for n, box in enumerate(np.asarray(boxes, float).reshape(-1, 6)):
        lo, hi = box[:3] - 0.5, box[3:] - 0.5  # voxel extent edges
        corners = np.array([[a, b, c, 1.0] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
        mapped = (mapping @ corners.T).T[:, :3]
        out[n, :3] = mapped.min(axis=0) + 0.5
        out[n, 3:] = mapped.max(axis=0) + 0.5
    return out


class DetectionRunner:
    def __init__(self, model: LoadedModel) -> None:
        if not isinstance(model.plugin, DetectionPlugin):
            raise TypeError("DetectionRunner needs a detection plugin")
        self.model = model
        self.plugin: DetectionPlugin = model.plugin
        self.labels = self.plugin.labels(model.config)
        self.preprocess = self.plugin.inference_transforms(model.config)

    @torch.inference_mode()
    def __call__(self, image: Image) -> DetectionResult:
        data = self.preprocess({"image": to_meta_tensor(image)})
        network_input = data["image"]
        boxes, scores, labels = self.plugin.detect(network_input, self.model.network, self.model.config)
        boxes = boxes_to_input_grid(np.asarray(boxes), np.asarray(network_input.affine, float), image.affine)
        return DetectionResult(boxes_voxel=boxes, affine=image.affine, scores=np.asarray(scores, float),
                               labels=np.asarray(labels, int), label_names=self.labels)


def make_detect_job(model: LoadedModel, policy: Any, *, series: str | None = None,
                    allow_resample: bool = False) -> Any:
    from mitk.runner.outputs import json_record_job

    runner = DetectionRunner(model)
    return json_record_job(policy, "_boxes", lambda image: {"boxes": runner(image).to_dicts()}, series=series,
                           allow_resample=allow_resample)
