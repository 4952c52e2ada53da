"""Training a segmentation plugin: the segmentation :class:`TrainingStep` and the run's assembly."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mitk.enums import Task
from mitk.errors import CheckpointError, PluginError, UsageError
from mitk.plugin_manager import get_registry
from mitk.tasks import SegmentationPlugin
from mitk.training.data import (
    Datalist,
    LoadCased,
    first_case_channels,
    make_dataset,
    pipeline,
    read_datalist,
    tensor_of,
)
from mitk.training.folder import check_output_dir, prepare_output_dir
from mitk.training.loop import (
    ModelSpec,
    ResumePoint,
    Trainer,
    TrainingOptions,
    TrainingRun,
    load_resume_point,
    unwrapped_errors,
)
from mitk.types import voxel_spacing


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


def _segmentation_plugin(name: str) -> tuple[SegmentationPlugin, str | None]:
    entry = get_registry().get(name, Task.SEGMENT)
    plugin = entry.load()
    if not isinstance(plugin, SegmentationPlugin) or not getattr(plugin, "trainable", False):
        raise PluginError(f"plugin {name!r} cannot be trained (it has no trainable network)")
    return plugin, entry.version


def _resume(output_dir: Path, plugin_name: str | None, options: dict[str, Any],
            overrides: dict[str, Any] | None) -> tuple[ResumePoint, str, TrainingOptions, dict[str, Any]]:
    """The interrupted run's resume point, plugin, options (updated by ``options``) and config."""
    if overrides:
        raise UsageError("a resumed run keeps its settings: drop --set, --labels, --patch-size and --lr")
    point = load_resume_point(output_dir)
    saved = point.checkpoint
    if saved.task != Task.SEGMENT.value or not saved.plugin:
        raise CheckpointError(f"the run trained a {saved.task} model, not a segmentation", saved.path)
    if plugin_name and plugin_name != saved.plugin:
        raise CheckpointError(f"the run was trained with plugin {saved.plugin!r}, not {plugin_name!r}",
                              saved.path)
    training_options = TrainingOptions.from_dict({**point.options, **options})
    if training_options.epochs <= point.epoch:
        raise UsageError(f"the run has finished {point.epoch} epochs already; give a larger --epochs "
                         "to continue it")
    return point, saved.plugin, training_options, saved.config


def train_segmentation(*, plugin_name: str | None, data: str | Path | None, output_dir: str | Path,
                       options: dict[str, Any], overrides: dict[str, Any] | None = None,
                       resume: bool = False, overwrite: bool = False, console: Any = None,
                       on_epoch: Callable[[dict[str, Any]], None] | None = None,
                       on_ready: Callable[[Datalist, dict[str, Any]], None] | None = None) -> TrainingRun:
    """Train a segmentation plugin on a datalist and write the run folder.

    ``options`` holds :class:`TrainingOptions` fields (``None`` = default, or the saved value when
    resuming); ``overrides`` the plugin settings (labels, patch_size, network, optimizer.lr, ...).
    ``on_ready(datalist, config)`` is called once the data is loaded, ``on_epoch(row)`` after each epoch.
    """
    from mitk.runner.model import resolve_device

    output_dir = Path(output_dir)
    check_output_dir(output_dir, resume, overwrite)
    point: ResumePoint | None = None
    saved_config: dict[str, Any] | None = None
    if resume:
        point, plugin_name, training_options, saved_config = _resume(output_dir, plugin_name, options,
                                                                     overrides)
        data = data or point.extra.get("data")
    else:
        training_options = TrainingOptions.from_dict(options)
    if not plugin_name:
        raise UsageError("--plugin is required (e.g. --plugin unet)")
    if not data:
        raise UsageError("--data is required")
    plugin, version = _segmentation_plugin(plugin_name)
    datalist = read_datalist(data, seed=training_options.seed)
    if saved_config is not None:
        config = plugin.resolve_config(saved_config)
    else:
        found: dict[str, Any] = {"in_channels": first_case_channels(datalist)}
        if datalist.labels:
            found["labels"] = datalist.labels
        config = plugin.resolve_config(found, overrides)
    config["training"] = {k: v for k, v in vars(training_options).items() if k not in ("device", "num_workers")}
    device = resolve_device(training_options.device)
    loader = LoadCased(num_labels=len(plugin.labels(config)), in_channels=int(config["in_channels"]))
    workers = max(1, training_options.num_workers)
    with unwrapped_errors():
        if not training_options.cache:  # check every case now, not deep inside a loader worker
            for case in datalist.training + datalist.validation:
                loader(case)
        train_dataset = make_dataset(datalist.training, pipeline(loader, plugin.training_transforms(config)),
                                     training_options.cache, workers=workers)
        val_dataset = make_dataset(datalist.validation, pipeline(loader, plugin.validation_transforms(config)),
                                   training_options.cache, workers=workers)
    if on_ready is not None:
        on_ready(datalist, config)
    prepare_output_dir(output_dir, resume, overwrite)
    spec = ModelSpec(task=Task.SEGMENT.value, plugin_name=plugin_name, plugin_version=version, plugin=plugin,
                     config=config)
    trainer = Trainer(spec, SegmentationStep(plugin, config), train_dataset, val_dataset, training_options,
                      output_dir, device=device, extra_state={"data": str(Path(data).resolve())},
                      console=console, on_epoch=on_epoch)
    return trainer.fit(point)
