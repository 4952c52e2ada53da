"""The MONAI classification networks behind ``densenet121`` and ``resnet``.

Each plugin hands the core MONAI pieces only: dictionary transforms, a network, the loss, and the layer
Grad-CAM reads. Images arrive channel first with 2 or 3 spatial axes (``spatial_dims``, found from the
training data and saved in the checkpoint); MONOCHROME1 radiographs are already inverted by the core
(:func:`mitk.tasks.classify.runner.network_input`). Preprocessing is the same in training, validation and
inference: resize (or centre crop/pad) to ``image_size``, then intensity normalisation; training adds
augmentations suited to the dimension. Flips are off unless ``augmentation.flip`` asks for them: a flipped
radiograph or volume has its patient's sides swapped, which corrupts the label of any side-dependent task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mitk.errors import PluginError
from mitk.tasks import ClassificationPlugin, Transform
from mitk.training.augment import (
    AUGMENTATION_DEFAULTS,
    AUGMENTATION_HELP,
    AUGMENTATION_SCHEMA,
    intensity_steps,
    spatial_steps,
)

SIZE_MODES = ("resize", "crop")
INTENSITY_MODES = ("zscore", "minmax", "range", "none")
RESNET_DEPTHS = (18, 34, 50)
DEFAULT_SIZES = {2: [224, 224], 3: [96, 96, 96]}


def _sides(value: Any, dims: int, name: str) -> list[int]:
    sides = [value] * dims if isinstance(value, int) else list(value or [])
    if len(sides) != dims or not all(isinstance(v, int) and v > 0 for v in sides):
        raise PluginError(f"{name} must be {dims} positive whole numbers for {dims}-D images, got {value!r}")
    return [int(v) for v in sides]


class MonaiClassifier(ClassificationPlugin):
    """Shared preprocessing, augmentation and loss; subclasses build the network and name the CAM layer."""

    def network_defaults(self) -> dict[str, Any]:
        raise NotImplementedError

    def default_config(self) -> dict[str, Any]:
        return {
            "class_names": [],
            "in_channels": 1,
            "spatial_dims": 2,
            "image_size": None,
            "size_mode": "resize",
            "intensity": {"mode": "zscore", "a_min": 0.0, "a_max": 255.0},
            "multi_label": False,
            "threshold": 0.5,
            "class_weights": None,
            "augmentation": {**AUGMENTATION_DEFAULTS, "flip": 0.0, "rotate": 0.3, "rotate_deg": 10.0, "zoom": 0.3,
                             "zoom_range": 0.1, "intensity": 0.5, "scale": 0.1, "shift": 0.1, "noise": 0.1,
                             "noise_std": 0.05, "bias_field": 0.0},
            "optimizer": {"lr": 1e-3, "weight_decay": 1e-4},
            "network": self.network_defaults(),
        }

    def settings_help(self) -> dict[str, str]:
        """One line per setting (dotted keys), for ``mitk plugins info`` and checked ``--set``."""
        return {
            "class_names": "class names, in output order (found from the training labels)",
            "in_channels": "image channels: 1 greyscale, 3 colour (found from the training images)",
            "spatial_dims": "2 for slices, radiographs and photographs, 3 for volumes (found from the data)",
            "image_size": "network input size per spatial axis, e.g. [224, 224]; null: 224² in 2-D, 96³ in 3-D",
            "size_mode": "resize (whole image, default) or crop (centre crop or pad to image_size)",
            "intensity.mode": "zscore (per channel, default), minmax (0..1), range (a_min..a_max to 0..1) or none",
            "intensity.a_min": "lower bound for intensity.mode range",
            "intensity.a_max": "upper bound for intensity.mode range",
            "multi_label": "true: independent sigmoid per class (labels may name several classes)",
            "threshold": "probability at or above which a class is predicted when multi_label",
            "class_weights": "loss weight per class; found as inverse class frequency from the training labels",
            **{f"augmentation.{key}": text for key, text in AUGMENTATION_HELP.items()},
            "augmentation.flip": "flip probability per axis of flip_axes (null: 2-D left-right only, 3-D all); "
                                 "0 by default: a flip swaps sides",
            "augmentation.bias_field": "MRI: probability of a smooth multiplicative bias field (0 by default)",
            "optimizer.name": "adamw (default), adam or sgd",
            "optimizer.lr": "peak learning rate",
            "optimizer.weight_decay": "weight decay",
            "optimizer.momentum": "SGD momentum",
            "optimizer.nesterov": "SGD with Nesterov momentum",
            "schedule.name": "cosine (default), poly or constant learning-rate schedule",
            "schedule.warmup_epochs": "epochs of linear warm-up",
            "schedule.power": "exponent of the poly schedule",
            **{f"network.{key}": text for key, text in self.network_help().items()},
        }

    def network_help(self) -> dict[str, str]:
        return {}

    def settings_schema(self) -> dict[str, tuple[type | None, ...]]:
        return {**super().settings_schema(), **AUGMENTATION_SCHEMA}

    # -- sizes -------------------------------------------------------------------------------------

    def spatial_dims(self, config: dict[str, Any]) -> int:
        dims = config.get("spatial_dims")
        if dims not in (2, 3):
            raise PluginError(f"spatial_dims must be 2 or 3, got {dims!r}")
        return int(dims)

    def image_size(self, config: dict[str, Any]) -> list[int]:
        dims = self.spatial_dims(config)
        raw = config.get("image_size")
        return _sides(DEFAULT_SIZES[dims] if raw is None else raw, dims, "image_size")

    def out_channels(self, config: dict[str, Any]) -> int:
        names = self.class_names(config)
        if len(names) < 2 and not (config.get("multi_label") and names):
            raise PluginError(f"a classifier needs at least two class names, got {names!r} "
                              "(they are found from the training labels)")
        return len(names)

    # -- transforms --------------------------------------------------------------------------------

    def _preprocessing(self, config: dict[str, Any]) -> list[Any]:
        from monai.transforms import (
            NormalizeIntensityd,
            Resized,
            ResizeWithPadOrCropd,
            ScaleIntensityd,
            ScaleIntensityRanged,
        )

        size = self.image_size(config)
        mode = str(config.get("size_mode", "resize")).lower()
        if mode == "resize":
            steps: list[Any] = [Resized(keys="image", spatial_size=size, mode="area")]
        elif mode == "crop":
            steps = [ResizeWithPadOrCropd(keys="image", spatial_size=size)]
        else:
            raise PluginError(f"size_mode must be one of {', '.join(SIZE_MODES)}, got {mode!r}")
        intensity = dict(config.get("intensity") or {})
        kind = str(intensity.get("mode", "zscore")).lower()
        if kind == "zscore":
            steps.append(NormalizeIntensityd(keys="image", channel_wise=True))
        elif kind == "minmax":
            steps.append(ScaleIntensityd(keys="image", minv=0.0, maxv=1.0, channel_wise=True))
        elif kind == "range":
            steps.append(ScaleIntensityRanged(keys="image", a_min=float(intensity["a_min"]),
                                              a_max=float(intensity["a_max"]), b_min=0.0, b_max=1.0, clip=True))
        elif kind != "none":
            raise PluginError(f"intensity.mode must be one of {', '.join(INTENSITY_MODES)}, got {kind!r}")
        return steps

    def inference_transforms(self, config: dict[str, Any]) -> Transform:
        from monai.transforms import Compose

        return Compose(self._preprocessing(config))

    def validation_transforms(self, config: dict[str, Any]) -> Transform:
        return self.inference_transforms(config)

    def training_transforms(self, config: dict[str, Any]) -> Transform:
        """Preprocessing, then the ``augmentation`` settings (:mod:`mitk.training.augment`)."""
        from monai.transforms import Compose

        dims = self.spatial_dims(config)
        augmentation = dict(config.get("augmentation") or {})
        steps = self._preprocessing(config)
        # flips are opt-in; 2-D: left-right only (an upside-down radiograph or fundus photo is not a sample)
        steps += spatial_steps(augmentation, keys=("image",), modes=("bilinear",), dims=dims,
                               flip_axes=self.default_flip_axes(dims), padding="border")
        steps += intensity_steps(augmentation)
        return Compose(steps)

    # -- training ----------------------------------------------------------------------------------

    def loss(self, config: dict[str, Any]) -> torch.nn.Module:
        """Cross-entropy (sigmoid binary cross-entropy when ``multi_label``), weighted by ``class_weights``."""
        classes = self.out_channels(config)
        raw = config.get("class_weights")
        weights = None
        if raw is not None:
            if not isinstance(raw, Sequence) or len(raw) != classes or not all(
                    isinstance(w, (int, float)) and w > 0 for w in raw):
                raise PluginError(f"class_weights must be {classes} positive numbers, got {raw!r}")
            weights = torch.tensor([float(w) for w in raw], dtype=torch.float32)
        if config.get("multi_label"):
            return torch.nn.BCEWithLogitsLoss(pos_weight=weights)
        return torch.nn.CrossEntropyLoss(weight=weights)

    def cam_layer(self, config: dict[str, Any]) -> str:
        """The layer whose activations Grad-CAM weighs (the last convolutional features)."""
        raise NotImplementedError


class DenseNet121Classifier(MonaiClassifier):
    """MONAI's DenseNet121 (Huang et al., 2017); its blocks and widths are settings."""

    def network_defaults(self) -> dict[str, Any]:
        return {"init_features": 64, "growth_rate": 32, "block_config": [6, 12, 24, 16], "dropout": 0.0}

    def network_help(self) -> dict[str, str]:
        return {"init_features": "channels of the first convolution",
                "growth_rate": "channels each dense layer adds",
                "block_config": "dense layers per block, e.g. [6, 12, 24, 16]",
                "dropout": "dropout probability inside dense layers"}

    def network(self, config: dict[str, Any]) -> torch.nn.Module:
        from monai.networks.nets import DenseNet

        settings = config["network"]
        blocks = settings["block_config"]
        if not isinstance(blocks, Sequence) or not blocks or not all(isinstance(b, int) and b > 0 for b in blocks):
            raise PluginError(f"network.block_config must be positive whole numbers, got {blocks!r}")
        return DenseNet(spatial_dims=self.spatial_dims(config), in_channels=int(config["in_channels"]),
                        out_channels=self.out_channels(config), init_features=int(settings["init_features"]),
                        growth_rate=int(settings["growth_rate"]), block_config=tuple(int(b) for b in blocks),
                        dropout_prob=float(settings.get("dropout") or 0.0))

    def cam_layer(self, config: dict[str, Any]) -> str:
        return "class_layers.relu"


class ResNetClassifier(MonaiClassifier):
    """MONAI's ResNet (He et al., 2016) of depth 18, 34 or 50, with a strided first convolution."""

    def network_defaults(self) -> dict[str, Any]:
        return {"depth": 18, "widen_factor": 1.0, "first_stride": 2}

    def network_help(self) -> dict[str, str]:
        return {"depth": "18, 34 or 50 layers",
                "widen_factor": "channel multiplier (1.0: the published widths)",
                "first_stride": "stride of the first 7-wide convolution (2 as torchvision; 1 for small images)"}

    def network(self, config: dict[str, Any]) -> torch.nn.Module:
        from monai.networks.nets import ResNet

        settings = config["network"]
        depth = settings.get("depth")
        if depth not in RESNET_DEPTHS:
            raise PluginError(f"network.depth must be one of {', '.join(map(str, RESNET_DEPTHS))}, got {depth!r}")
        block, layers = {18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]),
                         50: ("bottleneck", [3, 4, 6, 3])}[int(depth)]
        return ResNet(block=block, layers=layers, block_inplanes=[64, 128, 256, 512],
                      spatial_dims=self.spatial_dims(config), n_input_channels=int(config["in_channels"]),
                      conv1_t_size=7, conv1_t_stride=int(settings.get("first_stride", 2)),
                      widen_factor=float(settings.get("widen_factor", 1.0)), num_classes=self.out_channels(config))

    def cam_layer(self, config: dict[str, Any]) -> str:
        return "layer4"
