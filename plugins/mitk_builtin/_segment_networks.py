"""The MONAI segmentation networks behind ``unet``, ``segresnet`` and ``swinunetr``.

Each plugin hands the core MONAI pieces only: dictionary transforms, a network, a sliding-window
inferer, the loss and the metrics. The preprocessing (orientation, spacing, intensity) is the same for
training, validation and inference, and it is recorded in the checkpoint's configuration, so a trained
checkpoint carries everything ``mitk segment`` needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from mitk.errors import PluginError
from mitk.runner.sliding_window import SlidingWindow
from mitk.tasks import SegmentationPlugin, Transform
from mitk.training.augment import (
    AUGMENTATION_DEFAULTS,
    AUGMENTATION_HELP,
    AUGMENTATION_SCHEMA,
    intensity_steps,
    spatial_steps,
)
from mitk_builtin._segment_torch import KEEP, RAS_AXIS_LABELS, torch_inference, torch_preprocessing

INTENSITY_MODES = ("ct", "mr", "none")
METRIC_NAMES = ("dice", "hd95", "surface_dice")
BLEND_MODES = ("gaussian", "constant")
"""How MONAI's sliding-window inferer blends overlapping windows."""


def normalise_labels(raw: Mapping[Any, Any] | Sequence[str]) -> dict[str, str]:
    """Labels as ``{"0": "background", "1": ...}``: JSON-ready keys, values 0..N-1 with N ≥ 2."""
    pairs = dict(enumerate(raw)) if isinstance(raw, Sequence) and not isinstance(raw, str) else raw
    if not isinstance(pairs, Mapping):
        raise PluginError(f"labels must map label values to names, got {raw!r}")
    try:
        labels = {int(key): str(name) for key, name in pairs.items()}
    except (TypeError, ValueError):
        raise PluginError(f"label values must be integers, got {list(pairs)}") from None
    if sorted(labels) != list(range(len(labels))) or len(labels) < 2:
        raise PluginError(f"labels must be numbered 0..N-1 with background 0 and at least one more label, "
                          f"got {sorted(labels)}")
    return {str(value): labels[value] for value in sorted(labels)}


def _triple(value: Any, name: str) -> list[float]:
    values = [value] * 3 if isinstance(value, (int, float)) else list(value)
    if len(values) != 3 or not all(isinstance(v, (int, float)) and v > 0 for v in values):
        raise PluginError(f"{name} must be three positive numbers, got {value!r}")
    return [float(v) for v in values]


def sw_batch_size(config: dict[str, Any]) -> int:
    """Windows per network call. ``"auto"``: 4 on CUDA; on the CPU the torch thread count, at most 4 — measured
    on 2 cores, 2 windows per call ran about 20% faster per window than 4 (docs/benchmarks.md)."""
    value = config.get("sw_batch_size", "auto")
    if value == "auto":
        return 4 if torch.cuda.is_available() else max(1, min(4, torch.get_num_threads()))
    if not isinstance(value, int) or value < 1:
        raise PluginError(f"sw_batch_size must be a positive integer or \"auto\", got {value!r}")
    return value


def _nonzero(image: torch.Tensor) -> torch.Tensor:
    """Foreground for CropForegroundd: intensity modes keep background at exactly 0."""
    return image != 0


class MonaiSegmenter(SegmentationPlugin):
    """Shared preprocessing, augmentation, inference and evaluation; subclasses build the network."""

    size_divisor_name = "the network"
    min_patch_side = 1

    def network_defaults(self) -> dict[str, Any]:
        raise NotImplementedError

    def default_learning_rate(self) -> float:
        return 1e-3

    def default_config(self) -> dict[str, Any]:
        return {
            "labels": {"0": "background", "1": "foreground"},
            "in_channels": 1,
            "orientation": "RAS",
            "spacing": [1.5, 1.5, 1.5],
            "intensity": {"mode": "mr", "a_min": -1000.0, "a_max": 1000.0, "b_min": 0.0, "b_max": 1.0},
            "crop_foreground": False,
            "patch_size": [96, 96, 96],
            "samples_per_case": 2,
            "positive": 1.0,
            "negative": 1.0,
            "augmentation": {**AUGMENTATION_DEFAULTS, "flip": 0.5, "rotate90": 0.2, "intensity": 0.5, "scale": 0.1,
                             "shift": 0.1, "bias_field": 0.0},
            "sw_batch_size": "auto",
            "overlap": 0.25,
            "mode": "gaussian",
            "largest_component": False,
            "metrics": list(METRIC_NAMES),
            "surface_tolerance_mm": 2.0,
            "optimizer": {"lr": self.default_learning_rate(), "weight_decay": 1e-5},
            "network": self.network_defaults(),
        }

    def settings_help(self) -> dict[str, str]:
        return {
            "labels": "label value → name, background 0 first (a list of names numbers them 0..N-1)",
            "in_channels": "image channels the network takes (set from the training data)",
            "orientation": "reorient to these RAS+ axis codes first (e.g. RAS); null or \"keep\": as stored",
            "spacing": "resample to this voxel size [x, y, z] (mm) first; null or \"keep\": as stored",
            "intensity.mode": "intensity normalisation: ct (window a_min..a_max to b_min..b_max), mr (z-score of "
                              "non-zero voxels) or none",
            "intensity.a_min": "lower end of the CT window (HU)",
            "intensity.a_max": "upper end of the CT window (HU)",
            "intensity.b_min": "ct: value a_min maps to (0; a plan sets (a_min - mean) / std: clip and z-score)",
            "intensity.b_max": "ct: value a_max maps to (1; a plan sets (a_max - mean) / std)",
            "crop_foreground": "training: crop each case to its non-zero voxels before sampling patches",
            "patch_size": "network input patch (voxels): training crops and sliding-window size",
            "samples_per_case": "training: patches sampled from each case per epoch",
            "positive": "training: relative weight of patches centred on a foreground voxel",
            "negative": "training: relative weight of patches centred on a background voxel",
            **{f"augmentation.{key}": f"training: {text}" for key, text in AUGMENTATION_HELP.items()},
            "augmentation.rotate90": "training: probability of an in-plane quarter turn",
            "sw_batch_size": "sliding windows per network call; \"auto\": 4 on CUDA, up to 4 CPU threads",
            "overlap": "sliding-window overlap, 0 to below 1",
            "mode": "blending of overlapping windows: gaussian or constant",
            "largest_component": "keep the largest connected component of each foreground label (true) or "
                                 "of the listed labels",
            "metrics": f"validation metrics, from {', '.join(METRIC_NAMES)} (dice is always computed)",
            "surface_tolerance_mm": "tolerance (mm) of surface_dice",
            "optimizer.lr": "training: peak learning rate",
            "optimizer.weight_decay": "training: weight decay",
            **self.network_help(),
        }

    def network_help(self) -> dict[str, str]:
        """One line for each ``network.*`` setting."""
        raise NotImplementedError

    def settings_schema(self) -> dict[str, tuple[type | None, ...]]:
        return {
            **super().settings_schema(),
            **AUGMENTATION_SCHEMA,
            "labels": (dict, list),  # a list of names numbers them 0..N-1
            "orientation": (str, None),
            "spacing": (list, float, str, None),
            "patch_size": (list, int),
            "sw_batch_size": (int, str),
            "largest_component": (bool, list),
        }

    def resolve_config(self, *overrides: Mapping[str, Any] | None) -> dict[str, Any]:
        """Merge as usual, except that ``labels`` is replaced whole by the last override that names it."""
        config = super().resolve_config(*overrides)
        labels: Any = self.default_config()["labels"]
        for override in overrides:
            if override and override.get("labels"):
                labels = override["labels"]
        config["labels"] = normalise_labels(labels)
        return config

    # -- geometry and sizes ------------------------------------------------------------------------

    def size_divisor(self, config: dict[str, Any]) -> int:
        """Every patch side must be a multiple of this for the network's down/up-sampling to line up."""
        return 1

    def patch_size(self, config: dict[str, Any]) -> list[int]:
        raw = config.get("patch_size")
        patch = [int(raw)] * 3 if isinstance(raw, int) else [int(v) for v in raw or []]
        divisor = self.size_divisor(config)
        if len(patch) != 3 or min(patch) < self.min_patch_side or any(side % divisor for side in patch):
            least = f" and at least {self.min_patch_side}" if self.min_patch_side > 1 else ""
            raise PluginError(f"patch_size must be three sides divisible by {divisor}{least} for "
                              f"{self.size_divisor_name}, got {raw!r}")
        return patch

    def out_channels(self, config: dict[str, Any]) -> int:
        return len(self.labels(config))

    # -- transforms --------------------------------------------------------------------------------

    def _preprocessing(self, config: dict[str, Any], keys: tuple[str, ...]) -> list[Any]:
        from monai.transforms import Orientationd, ScaleIntensityRanged, Spacingd

        from mitk_builtin._intensity import ZScoreNonzerod

        steps: list[Any] = []
        orientation = config.get("orientation")
        if orientation not in KEEP:
            steps.append(Orientationd(keys=keys, axcodes=str(orientation), labels=RAS_AXIS_LABELS))
        spacing = config.get("spacing")
        if spacing not in KEEP:
            modes = ("bilinear", "nearest")[: len(keys)]
            steps.append(Spacingd(keys=keys, pixdim=_triple(spacing, "spacing"), mode=modes))
        intensity = dict(config.get("intensity") or {})
        mode = str(intensity.get("mode", "none")).lower()
        if mode == "ct":
            steps.append(ScaleIntensityRanged(keys="image", a_min=float(intensity["a_min"]),
                                              a_max=float(intensity["a_max"]),
                                              b_min=float(intensity.get("b_min", 0.0)),
                                              b_max=float(intensity.get("b_max", 1.0)),
                                              clip=True))
        elif mode == "mr":
            steps.append(ZScoreNonzerod(keys="image"))
        elif mode != "none":
            raise PluginError(f"intensity.mode must be one of {', '.join(INTENSITY_MODES)}, got {mode!r}")
        return steps

    def inference_transforms(self, config: dict[str, Any]) -> Transform:
        """Orientation, spacing and intensity only: no crop, so the affine maps straight back. Without a spacing
        change, the same steps without MONAI (:mod:`mitk_builtin._segment_torch`)."""
        def monai() -> Transform:
            from monai.transforms import Compose

            return Compose(self._preprocessing(config, ("image",)))

        lean = torch_preprocessing(config, monai)
        return lean if lean is not None else monai()

    def validation_transforms(self, config: dict[str, Any]) -> Transform:
        from monai.transforms import Compose

        return Compose(self._preprocessing(config, ("image", "label")))

    def training_transforms(self, config: dict[str, Any]) -> Transform:
        from monai.transforms import Compose, CropForegroundd, RandCropByPosNegLabeld, RandRotate90d, SpatialPadd

        keys = ("image", "label")
        patch = self.patch_size(config)
        augmentation = dict(config.get("augmentation") or {})
        steps = self._preprocessing(config, keys)
        if config.get("crop_foreground"):
            steps.append(CropForegroundd(keys=keys, source_key="image", select_fn=_nonzero, allow_smaller=True))
        steps += [
            SpatialPadd(keys=keys, spatial_size=patch),
            RandCropByPosNegLabeld(keys=keys, label_key="label", spatial_size=patch,
                                   pos=float(config["positive"]), neg=float(config["negative"]),
                                   num_samples=int(config["samples_per_case"])),
        ]
        steps += spatial_steps(augmentation, keys=keys, modes=("bilinear", "nearest"), dims=3, flip_axes=(0, 1, 2))
        rotate = float(augmentation.get("rotate90", 0.0))
        if rotate > 0 and patch[0] == patch[1]:  # a quarter turn in-plane keeps the patch shape
            steps.append(RandRotate90d(keys=keys, prob=rotate, max_k=3, spatial_axes=(0, 1)))
        mode = str(dict(config.get("intensity") or {}).get("mode", "none")).lower()
        steps += intensity_steps(augmentation, modality={"mr": "MR", "ct": "CT"}.get(mode))
        return Compose(steps)

    # -- inference ---------------------------------------------------------------------------------

    def inferer(self, config: dict[str, Any]) -> Any:
        """MONAI's ``SlidingWindowInferer`` with these settings; on plain tensors mitk's MONAI-free copy of it
        (:mod:`mitk.runner.sliding_window`: the same output bit for bit; MONAI's for anything else)."""
        overlap, mode = float(config["overlap"]), str(config["mode"])
        if not 0 <= overlap < 1:
            raise PluginError(f"overlap must be at least 0 and below 1, got {overlap}")
        if mode not in BLEND_MODES:
            raise PluginError(f"mode must be one of {', '.join(BLEND_MODES)}, got {mode!r}")
        inferer = SlidingWindow(self.patch_size(config), sw_batch_size(config), overlap, mode)
        return inferer if torch_inference() else inferer.monai()

    def postprocess(self, config: dict[str, Any]) -> Any:
        choice = config.get("largest_component")
        if not choice:
            return None
        from monai.transforms import KeepLargestConnectedComponent

        foreground = [value for value in self.labels(config) if value != 0]
        applied = foreground if choice is True else [int(v) for v in choice]
        unknown = sorted(set(applied) - set(foreground))
        if unknown:
            raise PluginError(f"largest_component names labels {unknown} that are not foreground labels")
        return KeepLargestConnectedComponent(applied_labels=applied, independent=True)

    # -- training ----------------------------------------------------------------------------------

    def loss(self, config: dict[str, Any]) -> torch.nn.Module:
        from monai.losses import DiceCELoss

        return DiceCELoss(to_onehot_y=True, softmax=True)

    def metrics(self, config: dict[str, Any]) -> dict[str, Any]:
        """Per-case, per-foreground-class values (``reduction="none"``); the loop averages them."""
        from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDiceMetric

        names = list(config.get("metrics") or ["dice"])
        unknown = sorted(set(names) - set(METRIC_NAMES))
        if unknown:
            raise PluginError(f"unknown metrics {unknown}; choose from {', '.join(METRIC_NAMES)}")
        foreground = self.out_channels(config) - 1
        tolerance = float(config.get("surface_tolerance_mm", 2.0))
        available = {
            "dice": lambda: DiceMetric(include_background=False, reduction="none"),
            "hd95": lambda: HausdorffDistanceMetric(include_background=False, percentile=95,
                                                    reduction="none"),
            "surface_dice": lambda: SurfaceDiceMetric(class_thresholds=[tolerance] * foreground,
                                                      include_background=False, reduction="none"),
        }
        return {name: available[name]() for name in ["dice", *[n for n in names if n != "dice"]]}


class UNetSegmenter(MonaiSegmenter):
    """MONAI's residual UNet (Kerfoot et al.)."""

    size_divisor_name = "the UNet (product of strides)"

    def network_defaults(self) -> dict[str, Any]:
        return {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2,
                "dropout": 0.0, "norm": "instance"}

    def network_help(self) -> dict[str, str]:
        return {
            "network.channels": "features at each level, one more entry than strides",
            "network.strides": "downsampling factor between levels (their product divides patch_size)",
            "network.num_res_units": "residual units per block (0: plain convolutions)",
            "network.dropout": "dropout probability",
            "network.norm": "normalisation layer: instance, batch, group, ...",
        }

    def settings_schema(self) -> dict[str, tuple[type | None, ...]]:
        return {**super().settings_schema(), "network.norm": (str, list)}

    def size_divisor(self, config: dict[str, Any]) -> int:
        return int(math.prod(int(s) for s in config["network"]["strides"]))

    def _unet_arguments(self, config: dict[str, Any]) -> dict[str, Any]:
        settings = config["network"]
        self.patch_size(config)
        if len(settings["channels"]) != len(settings["strides"]) + 1:
            raise PluginError("network.channels needs exactly one more entry than network.strides")
        return {"spatial_dims": 3, "in_channels": int(config["in_channels"]),
                "out_channels": self.out_channels(config), "channels": tuple(int(c) for c in settings["channels"]),
                "strides": tuple(int(s) for s in settings["strides"]),
                "num_res_units": int(settings["num_res_units"]), "dropout": float(settings["dropout"]),
                "norm": settings["norm"]}

    def network(self, config: dict[str, Any]) -> torch.nn.Module:
        from monai.networks.nets import UNet

        return UNet(**self._unet_arguments(config))

    def inference_network(self, config: dict[str, Any]) -> torch.nn.Module:
        """MONAI's UNet rebuilt in plain torch (:mod:`mitk.runner.unet_torch`: same modules, same weights, same
        output) where it can be, else :meth:`network`."""
        arguments = self._unet_arguments(config)
        if torch_inference():
            from mitk.runner.unet_torch import torch_unet

            network = torch_unet(**arguments)
            if network is not None:
                return network
        return self.network(config)


class SegResNetSegmenter(MonaiSegmenter):
    """MONAI's SegResNet (Myronenko, 2018) without the VAE branch."""

    size_divisor_name = "SegResNet (2 ** (len(blocks_down) - 1))"

    def network_defaults(self) -> dict[str, Any]:
        return {"init_filters": 16, "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1], "dropout": 0.0}

    def default_learning_rate(self) -> float:
        return 2e-4

    def network_help(self) -> dict[str, str]:
        return {
            "network.init_filters": "features of the first level (doubled at each level down)",
            "network.blocks_down": "residual blocks at each encoder level",
            "network.blocks_up": "residual blocks at each decoder level, one fewer than blocks_down",
            "network.dropout": "dropout probability (0: none)",
        }

    def size_divisor(self, config: dict[str, Any]) -> int:
        return 2 ** (len(config["network"]["blocks_down"]) - 1)

    def _segresnet_arguments(self, config: dict[str, Any]) -> dict[str, Any]:
        settings = config["network"]
        self.patch_size(config)
        dropout = float(settings.get("dropout") or 0.0)
        return {"spatial_dims": 3, "in_channels": int(config["in_channels"]),
                "out_channels": self.out_channels(config), "init_filters": int(settings["init_filters"]),
                "blocks_down": tuple(int(b) for b in settings["blocks_down"]),
                "blocks_up": tuple(int(b) for b in settings["blocks_up"]), "dropout_prob": dropout or None}

    def network(self, config: dict[str, Any]) -> torch.nn.Module:
        from monai.networks.nets import SegResNet

        return SegResNet(**self._segresnet_arguments(config))

    def inference_network(self, config: dict[str, Any]) -> torch.nn.Module:
        """MONAI's SegResNet rebuilt in plain torch (:mod:`mitk.runner.segresnet_torch`: same modules, weights
        and output), unless ``MITK_TORCH_INFERENCE=0``."""
        arguments = self._segresnet_arguments(config)
        if not torch_inference():
            return self.network(config)
        from mitk.runner.segresnet_torch import TorchSegResNet

        return TorchSegResNet(**arguments)


class SwinUNETRSegmenter(MonaiSegmenter):
    """MONAI's SwinUNETR (Hatamizadeh et al., 2022): a Swin transformer encoder with a UNet decoder."""

    size_divisor_name = "SwinUNETR"
    min_patch_side = 64
    """At 32 voxels the bottleneck is one voxel, where instance normalisation cannot train."""

    def network_defaults(self) -> dict[str, Any]:
        return {"feature_size": 24, "depths": [2, 2, 2, 2], "num_heads": [3, 6, 12, 24], "drop_rate": 0.0,
                "attn_drop_rate": 0.0, "dropout_path_rate": 0.0, "use_checkpoint": False, "use_v2": False}

    def default_learning_rate(self) -> float:
        return 1e-4

    def network_help(self) -> dict[str, str]:
        return {
            "network.feature_size": "embedding features, a multiple of 12",
            "network.depths": "Swin blocks at each of the four stages",
            "network.num_heads": "attention heads at each of the four stages",
            "network.drop_rate": "dropout probability",
            "network.attn_drop_rate": "attention dropout probability",
            "network.dropout_path_rate": "stochastic depth rate",
            "network.use_checkpoint": "gradient checkpointing: less memory, slower training",
            "network.use_v2": "SwinUNETR v2 (a residual convolution block before each stage)",
        }

    def size_divisor(self, config: dict[str, Any]) -> int:
        return 32

    def network(self, config: dict[str, Any]) -> torch.nn.Module:
        import importlib.util

        if importlib.util.find_spec("einops") is None:
            raise PluginError("swinunetr needs the einops package: pip install einops")
        from monai.networks.nets import SwinUNETR

        settings = config["network"]
        self.patch_size(config)
        feature_size = int(settings["feature_size"])
        if feature_size % 12:
            raise PluginError(f"network.feature_size must be a multiple of 12 for SwinUNETR, got {feature_size}")
        return SwinUNETR(spatial_dims=3, in_channels=int(config["in_channels"]),
                         out_channels=self.out_channels(config), feature_size=feature_size,
                         depths=tuple(int(d) for d in settings["depths"]),
                         num_heads=tuple(int(h) for h in settings["num_heads"]),
                         drop_rate=float(settings["drop_rate"]), attn_drop_rate=float(settings["attn_drop_rate"]),
                         dropout_path_rate=float(settings["dropout_path_rate"]),
                         use_checkpoint=bool(settings["use_checkpoint"]), use_v2=bool(settings["use_v2"]))
