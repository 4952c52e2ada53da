"""Classification: one image in, per-class probabilities out."""

from __future__ import annotations

import torch

from mitk.runner.batch import CaseJob
from mitk.runner.model import LoadedModel
from mitk.runner.outputs import OutputPolicy
from mitk.runner.tensors import to_meta_tensor
from mitk.tasks import ClassificationPlugin
from mitk.types import ClassificationResult, Image


class ClassificationRunner:
    def __init__(self, model: LoadedModel) -> None:
        if not isinstance(model.plugin, ClassificationPlugin):
            raise TypeError("ClassificationRunner needs a classification plugin")
        self.model = model
        self.plugin: ClassificationPlugin = model.plugin
        self.class_names = self.plugin.class_names(model.config)
        self.preprocess = self.plugin.inference_transforms(model.config)

    @torch.inference_mode()
    def __call__(self, image: Image) -> ClassificationResult:
        data = self.preprocess({"image": to_meta_tensor(image)})
        batch = data["image"].as_tensor().unsqueeze(0).to(self.model.device)
        assert self.model.network is not None
        logits = self.model.network(batch).float()
        probabilities = torch.softmax(logits.reshape(1, -1), dim=1)[0].cpu().tolist()
        names = self.class_names or [str(i) for i in range(len(probabilities))]
        return ClassificationResult(class_names=names, probabilities=probabilities)


def make_classify_job(model: LoadedModel, policy: OutputPolicy, *, series: str | None = None,
                      allow_resample: bool = False) -> CaseJob:
    from mitk.runner.outputs import json_record_job

    runner = ClassificationRunner(model)
    return json_record_job(policy, "_class", lambda image: runner(image).to_dict(), series=series,
                           allow_resample=allow_resample, channels=True)
