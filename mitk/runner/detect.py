"""Detection: one image in, boxes in voxel indices and world millimetres out."""

from __future__ import annotations

import numpy as np
import torch

from mitk.runner.batch import CaseJob
from mitk.runner.geometry import voxel_map
from mitk.runner.model import LoadedModel
from mitk.runner.outputs import OutputPolicy
from mitk.runner.tensors import to_meta_tensor
from mitk.tasks import DetectionPlugin
from mitk.types import DetectionResult, Image, map_box_extents


def boxes_to_input_grid(boxes: np.ndarray, source_affine: np.ndarray, target_affine: np.ndarray) -> np.ndarray:
    """Map ``(i0, j0, k0, i1, j1, k1)`` boxes from the network grid to the input grid (enclosing box)."""
    extents = map_box_extents(boxes, voxel_map(target_affine, source_affine))  # source voxel -> target voxel
    return extents + 0.5  # extent edges back to (inclusive start, exclusive end) indices


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


def make_detect_job(model: LoadedModel, policy: OutputPolicy, *, series: str | None = None,
                    allow_resample: bool = False) -> CaseJob:
    from mitk.runner.outputs import json_record_job

    runner = DetectionRunner(model)
    return json_record_job(policy, "_boxes", lambda image: {"boxes": runner(image).to_dicts()}, series=series,
                           allow_resample=allow_resample)
