"""Training a segmentation plugin: the segmentation recipe and its :class:`~mitk.training.recipe.TrainingStep`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mitk.enums import Task
from mitk.errors import PluginError
from mitk.image import voxel_spacing
from mitk.plugin import TaskPlugin
from mitk.tasks.segment.plugin import SegmentationPlugin
from mitk.training.data import (
    Datalist,
    LoadCased,
    check_case_paths,
    first_case_channels,
    read_datalist,
    tensor_of,
)
from mitk.training.recipe import TrainingRecipe, TrainingStep


def _takes_spacing(metric: Any) -> bool:
    """Distance-based MONAI metrics accept ``spacing=`` (their ``_compute_tensor`` takes ``**kwargs``)."""
    import inspect

    compute = getattr(metric, "_compute_tensor", None)
    if compute is None:
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(compute).parameters.values())


class SegmentationStep:
    """Loss on random patches; sliding-window validation on whole (preprocessed) volumes.

    Validation runs on the network grid (after orientation and spacing), with the distance metrics
    given that grid's voxel spacing in mm, and applies the plugin's post-processing first, so it scores
    what ``mitk segment`` would produce.
    """

    monitor = "mean_dice"
    mode: Literal["max", "min"] = "max"
    shards_validation = True
    """Under torchrun each rank scores its share of the cases: MONAI's metric buffers gather every rank's
    per-case values when read (``Cumulative.get_buffer``), so the means are over all cases."""

    def __init__(self, plugin: SegmentationPlugin, config: dict[str, Any]) -> None:
        self.loss_function = plugin.loss(config)
        self.inferer = plugin.inferer(config)
        self.postprocess = plugin.postprocess(config)
        self.metrics = plugin.metrics(config)
        self.spacing_aware = {name for name, metric in self.metrics.items() if _takes_spacing(metric)}
        self.labels = plugin.labels(config)
        self.num_labels = len(self.labels)

    def loss(self, network: torch.nn.Module, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
        image = tensor_of(batch["image"]).to(device, non_blocking=True)
        label = tensor_of(batch["label"]).to(device, non_blocking=True)
        loss: torch.Tensor = self.loss_function(network(image), label)
        return loss

    @torch.no_grad()
    def validate(self, network: torch.nn.Module, loader: Any, device: torch.device,
                 autocast: Callable[[], Any]) -> dict[str, float]:
        from monai.networks.utils import one_hot

        network.eval()
        for metric in self.metrics.values():
            metric.reset()
        for batch in loader:
            image = tensor_of(batch["image"]).to(device)
            label = tensor_of(batch["label"]).to(device)
            spacing = voxel_spacing(np.asarray(batch["image"].affine[0], dtype=float))
            with autocast():
                logits = self.inferer(image, network)
            prediction = torch.argmax(logits.float(), dim=1, keepdim=True)
            if self.postprocess is not None:
                prediction = torch.stack([torch.as_tensor(self.postprocess(p)) for p in prediction])
            predicted = one_hot(prediction, self.num_labels)
            reference = one_hot(label.round().long(), self.num_labels)
            with warnings.catch_warnings():  # empty prediction or reference: NaN/inf, reported as such
                warnings.simplefilter("ignore")
                for name, metric in self.metrics.items():
                    if name in self.spacing_aware:
                        metric(y_pred=predicted, y=reference, spacing=list(spacing))
                    else:
                        metric(y_pred=predicted, y=reference)
        network.train()
        return self._summarise()

    def _summarise(self) -> dict[str, float]:
        """Per-class means over cases (NaN/inf skipped) and their mean, e.g. ``dice/brain``, ``mean_dice``."""
        names = [name for value, name in sorted(self.labels.items()) if value != 0]
        summary: dict[str, float] = {}
        for metric_name, metric in self.metrics.items():
            buffer = metric.get_buffer()
            values = np.asarray(buffer.detach().cpu().numpy(), dtype=np.float64).reshape(-1, len(names))
            values[~np.isfinite(values)] = np.nan
            per_class = [float(np.nanmean(column)) if np.isfinite(column).any() else math.nan
                         for column in values.T]
            finite = [v for v in per_class if math.isfinite(v)]
            summary[f"mean_{metric_name}"] = float(np.mean(finite)) if finite else math.nan
            for name, value in zip(names, per_class, strict=True):
                summary[f"{metric_name}/{name}"] = value
        return summary


class SegmentationRecipe(TrainingRecipe):
    """Label maps on the image grid: Decathlon datalists or nnU-Net-style folders, Dice as the monitor."""

    task = Task.SEGMENT

    def read_datalist(self, source: Path, *, seed: int, validation_fraction: float) -> Datalist:
        return read_datalist(source, seed=seed, validation_fraction=validation_fraction)

    def check_case(self, case: Mapping[str, Any], source: Path) -> None:
        check_case_paths(dict(case), source)

    def found_config(self, datalist: Datalist) -> dict[str, Any]:
        found: dict[str, Any] = {"in_channels": first_case_channels(datalist)}
        if datalist.labels:
            found["labels"] = datalist.labels
        return found

    def case_loader(self, plugin: TaskPlugin, config: dict[str, Any]) -> LoadCased:
        labels = plugin.labels(config) if isinstance(plugin, SegmentationPlugin) else {}
        return LoadCased(num_labels=len(labels), in_channels=int(config["in_channels"]))

    def training_step(self, plugin: TaskPlugin, config: dict[str, Any]) -> TrainingStep:
        if not isinstance(plugin, SegmentationPlugin):
            raise PluginError(f"{type(plugin).__name__} is not a segmentation plugin")
        return SegmentationStep(plugin, config)

    def describe(self, datalist: Datalist, config: dict[str, Any]) -> str:
        labels = ", ".join(str(name) for name in (config.get("labels") or {}).values())
        return f"{super().describe(datalist, config)}; labels: {labels}"
