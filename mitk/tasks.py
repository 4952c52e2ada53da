"""The task interfaces: what a plugin hands the runner for each of the four tasks.

A plugin subclasses one of these and overrides the pieces it supplies. Every method takes the plugin's
resolved ``config`` (its :meth:`TaskPlugin.default_config`, updated by a checkpoint and by the user)
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
from typing import TYPE_CHECKING, Any, ClassVar

from mitk.enums import Task

if TYPE_CHECKING:
    import numpy as np
    import torch

    from mitk.training.recipe import TrainingStep
    from mitk.types import Image

Transform = Callable[[dict[str, Any]], dict[str, Any]]


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

    task: ClassVar[Task]
    required_methods: ClassVar[tuple[str, ...]] = ()
    """Methods a plugin of this task must override (``plugins info`` lists the missing ones)."""
    needs_weights: ClassVar[bool] = True
    """False for classical methods that run without a checkpoint."""
    trainable: ClassVar[bool] = True
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


class SegmentationPlugin(TaskPlugin):
    """Produces a label map: network logits with one channel per label, background first."""

    task = Task.SEGMENT
    required_methods = ("network", "inference_transforms")

    def labels(self, config: dict[str, Any]) -> dict[int, str]:
        """Label value → name, background (0) included."""
        raw = config.get("labels") or {0: "background", 1: "foreground"}
        return {int(k): str(v) for k, v in raw.items()}

    def inferer(self, config: dict[str, Any]) -> Any:
        """A MONAI ``Inferer`` (e.g. ``SlidingWindowInferer``) that runs the network on a batch."""
        from monai.inferers import SimpleInferer

        return SimpleInferer()

    def postprocess(self, config: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """Applied to the discrete label map ``(1, I, J, K)`` on the network grid, e.g. largest component."""
        return None

    def settings_schema(self) -> dict[str, tuple[type | None, ...]]:
        """``labels`` is open: its keys are the label values the user chooses."""
        return {"labels": (dict,)}


class ClassificationPlugin(TaskPlugin):
    """Produces per-class probabilities for a whole image."""

    task = Task.CLASSIFY
    required_methods = ("network", "inference_transforms")

    def class_names(self, config: dict[str, Any]) -> list[str]:
        return list(config.get("class_names") or [])


class DetectionPlugin(TaskPlugin):
    """Produces boxes. :meth:`detect` works on the preprocessed image, in its voxel coordinates."""

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

    def settings_schema(self) -> dict[str, tuple[type | None, ...]]:
        """``labels`` is open: its keys are the label values the user chooses."""
        return {"labels": (dict,)}


class RegistrationPlugin(TaskPlugin):
    """Aligns a moving image to a fixed one.

    A classical plugin overrides :meth:`register`. A learned plugin instead supplies a network (and its
    ``inference_transforms``): the runner resamples the moving image onto the fixed grid, passes both through
    the transforms (so they share the network grid), asks :meth:`predict_displacement` for a dense displacement
    in network-grid voxels, and brings it back onto the fixed grid in millimetres.
    """

    task = Task.REGISTER
    required_methods = ("register",)

    def requirements(self) -> tuple[str, ...]:
        """A learned plugin (no ``register`` of its own) needs a network and its transforms instead."""
        return ("network", "inference_transforms") if self.is_learned() else self.required_methods

    def register(self, fixed: Image, moving: Image, model: torch.nn.Module | None, config: dict[str, Any]
                 ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Return ``(matrix, displacement)``: a 4×4 fixed-world → moving-world matrix (RAS mm) and/or a
        displacement field ``(I, J, K, 3)`` in mm on the fixed grid, either may be ``None`` (a third item, a
        report dict, is optional).

        Masks are an optional extension: a plugin whose ``register`` also declares the keywords
        ``fixed_mask=None, moving_mask=None`` (or ``**kwargs``) receives the user's masks there, as ``uint8`` 0/1
        :class:`~mitk.types.Image` s on the fixed / moving image's own grid (the runner resamples them onto it
        and refuses empty ones), and only when the user gives them. A plugin without these keywords keeps
        working; asking it for masks is a one-line error."""
        raise NotImplementedError

    def predict_displacement(self, network: torch.nn.Module, fixed: torch.Tensor, moving: torch.Tensor,
                             config: dict[str, Any]) -> torch.Tensor:
        """A learned plugin's dense displacement field ``(B, 3, *spatial)`` in voxels of the network grid, for
        preprocessed ``fixed`` and ``moving`` batches ``(B, C, *spatial)`` on that grid, such that
        ``warped(p) = moving(p + ddf(p))`` (MONAI ``Warp``'s convention). Default: the network on the
        channels ``[moving, fixed]``, as MONAI's VoxelMorph and LocalNet take them."""
        import torch

        displacement: torch.Tensor = network(torch.cat([moving, fixed], dim=1))
        return displacement

    @classmethod
    def is_learned(cls) -> bool:
        """True when the plugin leaves :meth:`register` to the runner's learned path."""
        return cls.register is RegistrationPlugin.register
