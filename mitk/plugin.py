"""The base of every task plugin, and the training step a plugin may supply.

Each task's own base class (``mitk.tasks.<task>.plugin``: ``SegmentationPlugin`` …) subclasses
:class:`TaskPlugin`; a plugin subclasses its task's base and overrides the pieces it supplies. Every method takes
the plugin's resolved ``config`` (its :meth:`TaskPlugin.default_config`, updated by a checkpoint and by the user)
and returns MONAI objects: dictionary transforms, an ``nn.Module``, an ``Inferer``, metrics. The core
runner (:mod:`mitk.runner`) does the loading, the loop, the inversion back to the input's grid and the
writing; plugins never touch files or command-line flags.

Dictionary transforms see the keys ``"image"`` (and ``"label"`` in training), channel first, as MONAI
``MetaTensor`` objects whose affine is RAS+ (the NIfTI convention), so spatial transforms keep track of
the geometry the runner needs to invert them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

if TYPE_CHECKING:
    import torch

Transform = Callable[[dict[str, Any]], dict[str, Any]]
Direction = Literal["max", "min"]


class TrainingStep(Protocol):
    """The task-specific part of one training iteration and of validation."""

    monitor: str
    """The validation metric that picks ``best.safetensors``."""
    mode: Direction
    """``"max"`` when a higher :attr:`monitor` is better (Dice, AUC), ``"min"`` when lower is (TRE, loss)."""
    # Optional: ``tie_break = "loss"`` names a validation metric, lower is better, that decides between epochs
    # whose :attr:`monitor` is equal (a saturated AUC of 1.0); without it the first such epoch is kept.

    def loss(self, network: torch.nn.Module, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
        """The loss of one training batch (called under autocast when AMP is on)."""

    def validate(self, network: torch.nn.Module, loader: Any, device: torch.device,
                 autocast: Callable[[], Any]) -> dict[str, float]:
        """Metrics over the validation set, including :attr:`monitor`."""


def merge_config(base: Mapping[str, Any], *overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return ``base`` updated recursively by each override; an explicit ``None`` value replaces too."""
    merged = copy.deepcopy(dict(base))
    for override in overrides:
        for key, value in (override or {}).items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
                merged[key] = merge_config(merged[key], value)
            else:
                merged[key] = copy.deepcopy(value)
    return merged


TRAINING_DEFAULTS: dict[str, Any] = {
    "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.0, "momentum": 0.99, "nesterov": True},
    "schedule": {"name": "cosine", "warmup_epochs": 0, "power": 0.9},
}
"""Settings every trainable plugin has (the training engine reads them); a plugin's defaults override them."""

TRAINING_HELP: dict[str, str] = {
    "optimizer.name": "training: adamw, adam, or sgd (momentum, nesterov: nnU-Net's choice)",
    "optimizer.lr": "training: peak learning rate",
    "optimizer.weight_decay": "training: weight decay",
    "optimizer.momentum": "training: SGD momentum (sgd only)",
    "optimizer.nesterov": "training: Nesterov momentum (sgd only)",
    "schedule.name": "training: learning rate per epoch: cosine, poly or constant",
    "schedule.warmup_epochs": "training: epochs of linear warm-up before the schedule",
    "schedule.power": "training: exponent of the poly schedule",
}
"""One line for each of :data:`TRAINING_DEFAULTS`, shown by ``mitk plugins info``."""


class TaskPlugin:
    """Base of all task plugins."""

    task: ClassVar[str]
    """The name of the task (a row of the task table, e.g. ``"segment"``)."""
    required_methods: ClassVar[tuple[str, ...]] = ()
    """Methods a plugin of this task must override (``plugins info`` lists the missing ones)."""
    needs_weights: ClassVar[bool] = True
    """False for classical methods that run without a checkpoint."""
    trainable: ClassVar[bool] = True
    needs_torch: ClassVar[bool] = True
    """False for a classical plugin that implements its task's array method (segmentation:
    ``segment_array``) and so runs without importing torch or MONAI: a per-file call costs milliseconds."""
    cpu_kernels: ClassVar[bool] = True
    """False keeps mitk's exact CPU convolution rewrites (``mitk.runner.cpu_kernels``) off this plugin's network."""
    unused_parameters: ClassVar[bool] = False
    """True when the network's training forward leaves some parameters out (a branch used only sometimes, a
    deep-supervision head); under torchrun ``DistributedDataParallel`` then looks for them after every forward
    (``find_unused_parameters``, a cost), where it would otherwise stop with an error."""

    def requirements(self) -> tuple[str, ...]:
        """The methods this plugin must override: :attr:`required_methods`, unless its kind needs others."""
        return self.required_methods

    def default_config(self) -> dict[str, Any]:
        """Hyperparameters and preprocessing parameters, JSON-serialisable; saved in checkpoints."""
        return {}

    def resolve_config(self, *overrides: Mapping[str, Any] | None) -> dict[str, Any]:
        """Defaults (with :data:`TRAINING_DEFAULTS` beneath them for trainable plugins), then each override."""
        base = TRAINING_DEFAULTS if self.trainable else {}
        return merge_config(base, self.default_config(), *overrides)

    def network(self, config: dict[str, Any]) -> torch.nn.Module:
        """Build the (untrained) network."""
        raise NotImplementedError(f"{type(self).__name__} has no network")

    def inference_transforms(self, config: dict[str, Any]) -> Transform:
        """Preprocessing applied to ``{"image": ...}`` before the network."""
        raise NotImplementedError

    def training_transforms(self, config: dict[str, Any]) -> Transform:
        """Preprocessing plus augmentation for training samples."""
        raise NotImplementedError(f"{type(self).__name__} cannot be trained")

    def validation_transforms(self, config: dict[str, Any]) -> Transform:
        """Preprocessing for validation samples (no augmentation)."""
        return self.training_transforms(config)

    def loss(self, config: dict[str, Any]) -> torch.nn.Module:
        raise NotImplementedError(f"{type(self).__name__} cannot be trained")

    def metrics(self, config: dict[str, Any]) -> dict[str, Any]:
        """Named MONAI metrics (``CumulativeIterationMetric`` instances) used in validation."""
        return {}

    def training_step(self, config: dict[str, Any]) -> TrainingStep | None:
        """The plugin's own training step (e.g. a detector whose network returns its losses), or ``None`` for
        the task recipe's default step (:mod:`mitk.training.recipe`)."""
        return None

    def tta_axes(self, config: dict[str, Any]) -> tuple[int, ...]:
        """The spatial axes of the network's input (0 = the first after the channel) that test-time augmentation
        (``--tta``) may flip: the answer must not depend on a flip of any of them. Every combination is run and
        averaged (:mod:`mitk.runner.tta`). Default: none (``--tta`` then runs the plain pass only)."""
        return ()

    def settings_help(self) -> dict[str, str]:
        """One line describing each setting, by dotted key (``"network.channels"``); shown by
        ``mitk plugins info NAME``."""
        return {}

    def settings_schema(self) -> dict[str, tuple[type | None, ...]]:
        """Accepted types of the settings whose default does not say (dotted key → types, ``None`` for null).

        A key named here is checked against these types only and nothing below it is checked, so
        ``{"labels": (dict,)}`` leaves the label names to the user. See :mod:`mitk.settings`.
        """
        return {}
