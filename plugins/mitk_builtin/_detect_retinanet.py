"""The ``retinanet`` detector: MONAI's ``RetinaNetDetector`` (ResNet + feature pyramid, anchors, ATSS matcher,
hard-negative sampling, NMS), 2D or 3D, with no torchvision.

In monai 1.6.1 two pieces reach into torchvision even on the ATSS / hard-negative path:

* ``resnet_fpn_feature_extractor`` (via ``BackboneWithFPN``) takes torchvision's ``IntermediateLayerGetter`` —
  :class:`ResNetFPN` here builds the same extractor from MONAI's own ``ResNet`` and ``FeaturePyramidNetwork``;
* ``RetinaNetDetector`` tests ``isinstance(matcher, Matcher)`` and ``isinstance(sampler,
  BalancedPositiveNegativeSampler)`` against torchvision classes *before* its ATSS and hard-negative branches;
  without torchvision those names are MONAI's lazy-import placeholders and the test raises. When torchvision is
  absent, :func:`_inert_torchvision_placeholders` replaces them with classes nothing is an instance of, so the
  checks fall through to MONAI's own ATSS matcher and hard-negative sampler (the torchvision matcher and
  balanced sampler cannot be selected then; this plugin never selects them).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mitk.errors import PluginError, UsageError
from mitk.image import map_box_extents
from mitk.tasks import DetectionPlugin, Transform
from mitk_builtin._detect_sampling import RandBoxPatches, plan


def _inert_torchvision_placeholders() -> None:
    """Let ``RetinaNetDetector``'s isinstance checks fall through to MONAI's ATSS / HNS without torchvision."""
    from monai.apps.detection.networks import retinanet_detector as module
    from monai.utils import optional_import

    _, has_torchvision = optional_import("torchvision.models.detection._utils", name="Matcher")
    if has_torchvision:
        return
    for name in ("Matcher", "BalancedPositiveNegativeSampler"):
        if not isinstance(getattr(module, name), type):
            setattr(module, name, type(f"Unavailable{name}", (), {"__doc__": "torchvision is not installed"}))


class ResNetFPN(torch.nn.Module):
    """A MONAI ``ResNet`` body with a ``FeaturePyramidNetwork`` on the outputs of ``returned_layers`` (and a
    max-pooled extra level): the feature extractor ``RetinaNet`` expects, without torchvision."""

    def __init__(self, backbone: Any, spatial_dims: int, returned_layers: Sequence[int], out_channels: int,
                 in_channels_list: Sequence[int]) -> None:
        super().__init__()
        from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        if not returned_layers or min(returned_layers) < 1 or max(returned_layers) > 4:
            raise UsageError(f"returned_layers must lie in 1..4, got {list(returned_layers)}")
        self.returned_layers = [int(n) for n in returned_layers]
        self.stem = torch.nn.Sequential(backbone.conv1, backbone.bn1, backbone.act,
                                        torch.nn.Identity() if backbone.no_max_pool else backbone.maxpool)
        self.layers = torch.nn.ModuleList(getattr(backbone, f"layer{n}") for n in range(1, max(returned_layers) + 1))
        self.fpn = FeaturePyramidNetwork(spatial_dims=spatial_dims, in_channels_list=list(in_channels_list),
                                         out_channels=out_channels, extra_blocks=LastLevelMaxPool(spatial_dims))
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = self.stem(x)
        for number, layer in enumerate(self.layers, start=1):
            x = layer(x)
            if number in self.returned_layers:
                features[str(len(features))] = x
        result: dict[str, torch.Tensor] = self.fpn(features)
        return result


class FocalLossPerPositive(torch.nn.Module):
    """RetinaNet's sigmoid focal loss over every anchor, summed and divided by the number of positive targets
    (Lin et al.): dense gradients from all negatives, not a mean that drowns the few positives."""

    def __init__(self, gamma: float = 2.0, alpha: float = 0.25) -> None:
        super().__init__()
        self.gamma, self.alpha = gamma, alpha

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from torch.nn.functional import binary_cross_entropy_with_logits

        probability = torch.sigmoid(logits)
        cross_entropy = binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p_t = probability * targets + (1 - probability) * (1 - targets)
        weight = self.alpha * targets + (1 - self.alpha) * (1 - targets) if self.alpha >= 0 else 1.0
        loss = weight * cross_entropy * (1 - p_t) ** self.gamma
        return loss.sum() / targets.sum().clamp(min=1.0)


def build_detector(config: dict[str, Any]) -> torch.nn.Module:
    """The ``RetinaNetDetector`` of ``config``: network, anchors, ATSS matcher, hard-negative sampler, selector."""
    from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
    from monai.apps.detection.networks.retinanet_network import RetinaNet
    from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
    from monai.networks.nets import resnet

    _inert_torchvision_placeholders()
    dims = int(config["spatial_dims"])
    backbone_settings = config["backbone"]
    inplanes = [int(n) for n in backbone_settings["block_inplanes"]]
    block = resnet.ResNetBottleneck if backbone_settings["block"] == "bottleneck" else resnet.ResNetBlock
    expansion = 4 if block is resnet.ResNetBottleneck else 1
    backbone = resnet.ResNet(block=block, layers=[int(n) for n in backbone_settings["layers"]],
                             block_inplanes=inplanes, spatial_dims=dims, n_input_channels=int(config["in_channels"]),
                             conv1_t_stride=int(backbone_settings["conv1_stride"]),
                             conv1_t_size=int(backbone_settings["conv1_size"]), no_max_pool=True, feed_forward=False)
    returned = [int(n) for n in backbone_settings["returned_layers"]]
    extractor = ResNetFPN(backbone, dims, returned, int(backbone_settings["fpn_channels"]),
                          [inplanes[n - 1] * expansion for n in returned])
    anchors = config["anchors"]
    shapes = [[float(v) for v in shape][:dims] for shape in anchors["base_shapes"]]
    generator = AnchorGeneratorWithAnchorShape(feature_map_scales=[2 ** n for n in range(len(returned) + 1)],
                                               base_anchor_shapes=shapes)
    num_classes = len({int(k) for k in config["labels"]})  # saved settings come back with text keys
    network = RetinaNet(spatial_dims=dims, num_classes=num_classes, num_anchors=generator.num_anchors_per_location()[0],
                        feature_extractor=extractor, size_divisible=size_divisible(config))
    convs = int(backbone_settings.get("head_convs", 4))
    if not 1 <= convs <= 4:
        raise UsageError(f"backbone.head_convs must lie in 1..4, got {convs}")
    for head in (network.classification_head, network.regression_head):  # MONAI builds 4 conv-norm-relu
        head.conv = torch.nn.Sequential(*list(head.conv.children())[: 3 * convs])
    detector = RetinaNetDetector(network=network, anchor_generator=generator, spatial_dims=dims,
                                 num_classes=num_classes, size_divisible=size_divisible(config))
    detector.set_target_keys(box_key="box", label_key="label")
    detector.set_atss_matcher(num_candidates=int(config["matcher"]["num_candidates"]), center_in_gt=False)
    sampler = config["sampler"]
    if str(sampler.get("name", "hard_negative")) == "focal":  # every anchor, focal loss per positive
        detector.set_cls_loss(FocalLossPerPositive(float(sampler.get("gamma", 2.0)),
                                                   float(sampler.get("alpha", 0.25))))
        detector.fg_bg_sampler = None
    else:
        detector.set_hard_negative_sampler(batch_size_per_image=int(sampler["batch_size_per_image"]),
                                           positive_fraction=float(sampler["positive_fraction"]),
                                           pool_size=float(sampler["pool_size"]),
                                           min_neg=int(sampler["min_neg"]))
    selector = config["selector"]
    detector.set_box_selector_parameters(score_thresh=float(selector["score_thresh"]),
                                         topk_candidates_per_level=int(selector["topk_candidates_per_level"]),
                                         nms_thresh=float(selector["nms_thresh"]),
                                         detections_per_img=int(selector["detections_per_img"]))
    detector.set_sliding_window_inferer(roi_size=[int(n) for n in config["patch_size"]][:dims], overlap=0.25,
                                        sw_batch_size=1, mode="constant")
    return detector


def size_divisible(config: dict[str, Any]) -> int:
    """The network input must divide by the total stride of its coarsest pyramid level."""
    backbone = config["backbone"]
    return int(backbone["conv1_stride"]) * 2 ** (max(int(n) for n in backbone["returned_layers"]) - 1) * 2


class ResampleToSpacing:
    """Bring ``image`` (channel first, 3D) onto a grid of about ``spacing`` mm with its axes kept, fast and
    anti-aliased: whole-voxel block means first (each block at most the target size), then trilinear
    interpolation (``align_corners=False``) to the nearest whole number of target voxels. The affine follows
    both steps exactly, so the runner maps boxes back exactly; the spacing reached differs from ``spacing`` by
    the rounding of the grid size only. ``planar``: a one-slice image keeps its third axis as it is (2-D)."""

    def __init__(self, spacing: Sequence[float], planar: bool = False) -> None:
        self.spacing = np.asarray([float(s) for s in spacing])
        self.planar = planar

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        from monai.data import MetaTensor

        image = data["image"]
        affine = np.asarray(image.affine, dtype=float)
        tensor = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
        tensor = tensor.float()
        current = np.linalg.norm(affine[:3, :3], axis=0)
        target = np.array([*self.spacing[:2], current[2]]) if self.planar else self.spacing
        factors = [max(1, int(np.floor(t / s + 1e-6))) for s, t in zip(current, target, strict=True)]
        if any(f > 1 for f in factors):
            shape = [n // f for n, f in zip(tensor.shape[1:], factors, strict=True)]
            tensor = tensor[:, : shape[0] * factors[0], : shape[1] * factors[1], : shape[2] * factors[2]]
            tensor = torch.nn.functional.avg_pool3d(tensor[None], kernel_size=factors, stride=factors)[0]
            step = np.diag([*map(float, factors), 1.0])
            step[:3, 3] = [(f - 1) / 2.0 for f in factors]
            affine = affine @ step
            current = current * np.asarray(factors)
        sizes = [max(1, round(n * s / t)) for n, s, t in zip(tensor.shape[1:], current, target, strict=True)]
        if sizes != list(tensor.shape[1:]):
            scale = np.asarray(tensor.shape[1:], dtype=float) / np.asarray(sizes, dtype=float)
            tensor = torch.nn.functional.interpolate(tensor[None], size=sizes, mode="trilinear",
                                                     align_corners=False)[0]
            step = np.diag([*scale, 1.0])
            step[:3, 3] = (scale - 1) / 2.0
            affine = affine @ step
        return {**data, "image": MetaTensor(tensor.contiguous(), affine=torch.as_tensor(affine))}


def as_3d_boxes(boxes: np.ndarray, dims: int) -> np.ndarray:
    """MONAI boxes ``(N, 2·dims)`` as ``(N, 6)``: a 2-D box spans the one slice (extent −0.5..0.5)."""
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 2 * dims)
    if dims == 3:
        return boxes
    depth = np.full((len(boxes), 1), 0.5)
    return np.concatenate([boxes[:, :2], -depth, boxes[:, 2:], depth], axis=1)


def check_dimensions(shape: Sequence[int], spatial_dims: int, name: str = "the image") -> None:
    """Refuse a one-slice (2-D) image for a 3-D model and a volume for a 2-D model, in one line."""
    planar = int(shape[-1]) == 1
    if spatial_dims == 2 and not planar:
        raise PluginError(f"{name} is a volume ({'×'.join(map(str, shape))} network voxels) but this model is 2-D "
                          "(spatial_dims=2): give one-slice images (PNG, 2-D NIfTI) or a 3-D model")
    if spatial_dims == 3 and planar:
        raise PluginError(f"{name} is one slice ({'×'.join(map(str, shape))} network voxels) but this model is "
                          "3-D (spatial_dims=3): give volumes, or train a 2-D model (2-D training images make one)")


def needs_sliding_window(shape: Sequence[int], config: dict[str, Any]) -> bool:
    """One pass over the whole grid when it is small enough (cheaper than overlapping windows, no seams);
    sliding windows of ``patch_size`` beyond ``whole_image_voxels``."""
    return int(np.prod([int(n) for n in shape])) > int(config.get("whole_image_voxels", 4_000_000))


class RetinaNetTrainingStep:
    """The detector computes its own losses (classification + box regression); validation runs the detector and
    scores its boxes on the network grid with COCO mAP over IoU 0.1–0.5 (the monitor), mAR and FROC."""

    monitor = "mAP"
    mode = "max"

    def __init__(self, config: dict[str, Any]) -> None:
        self.labels = sorted({int(k) for k in config["labels"]})
        self.config = config

    def loss(self, network: torch.nn.Module, batch: list[dict[str, Any]], device: torch.device) -> torch.Tensor:
        images = [torch.as_tensor(case["image"]).to(device) for case in batch]
        targets = [{"box": torch.as_tensor(case["box"], dtype=torch.float32).to(device),
                    "label": torch.as_tensor(case["label"], dtype=torch.long).to(device)} for case in batch]
        losses = network(images, targets)
        total: torch.Tensor = losses["classification"] + losses["box_regression"]
        return total

    @torch.no_grad()
    def validate(self, network: torch.nn.Module, loader: Any, device: torch.device,
                 autocast: Callable[[], Any]) -> dict[str, float]:
        from mitk.tasks.detect.evaluation import CaseBoxes, coco_metrics, froc

        network.eval()
        predictions, references = [], []
        for batch in loader:
            for case in batch:
                image = torch.as_tensor(case["image"]).to(device)
                use_inferer = needs_sliding_window(image.shape[1:], self.config)
                with autocast():
                    [output] = network([image], use_inferer=use_inferer)
                predictions.append(CaseBoxes(as_3d_boxes(output["box"].float().cpu().numpy(), image.ndim - 1),
                                             output["label"].cpu().numpy().astype(int),
                                             output["label_scores"].float().cpu().numpy(), "voxel"))
                references.append(CaseBoxes(as_3d_boxes(np.asarray(case["box"], float), image.ndim - 1),
                                            np.asarray(case["label"], int), np.ones(len(case["label"])), "voxel"))
        network.train()
        scores = coco_metrics(predictions, references, list(range(len(self.labels))))
        sensitivity = froc(predictions, references)
        summary = {key: (math.nan if scores[key] is None else float(scores[key]))
                   for key in ("mAP", "mAR", "AP_0.1", "AR_0.1")}
        summary["froc"] = math.nan if sensitivity["score"] is None else float(sensitivity["score"])
        return summary


class BoxTargets:
    """Training transform: preprocess the image as for inference, then bring the world boxes (RAS extents)
    onto the network grid as MONAI boxes (``xyzxyz`` extents in voxel units, voxel centres at integers), with
    labels counted from 0. Deterministic, so a cache keeps its result."""

    def __init__(self, preprocess: Transform, labels: Sequence[int], spatial_dims: int = 3) -> None:
        self.preprocess = preprocess
        self.index = {int(label): n for n, label in enumerate(sorted(labels))}
        self.dims = spatial_dims

    def __call__(self, case: dict[str, Any]) -> dict[str, Any]:
        image = self.preprocess({"image": case["image"]})["image"]
        check_dimensions(image.shape[1:], self.dims, case.get("name") or "a training image")
        affine = np.asarray(image.affine, dtype=float)
        if case.get("boxes_voxel") is not None:  # input voxel extent → network voxel extent in one step (exact)
            source = np.asarray(case["image"].affine, dtype=float)
            boxes = map_box_extents(case["boxes_voxel"], np.linalg.inv(affine) @ source)
        else:
            world = np.asarray(case["boxes_world"], dtype=float).reshape(-1, 6)
            boxes = map_box_extents(world + 0.5, np.linalg.inv(affine))  # world extent → network voxel extent
        unknown = sorted({int(v) for v in case["labels"]} - set(self.index))
        if unknown:
            raise PluginError(f"{case.get('name', 'a case')}: box labels {unknown} are not among the model's "
                              f"labels {sorted(self.index)}")
        labels = np.array([self.index[int(v)] for v in case["labels"]], dtype=np.int64)
        tensor = torch.as_tensor(np.asarray(image.detach().cpu()), dtype=torch.float32)
        if self.dims == 2:
            tensor, boxes = tensor[..., 0], boxes[:, [0, 1, 3, 4]]
        return {"image": tensor, "box": boxes.astype(np.float32), "label": labels}


class RandBoxFlip:
    """Random flips along each spatial axis, moving image and boxes together (probability 1/2 per axis)."""

    def __init__(self, seed: int = 0) -> None:
        from monai.transforms import RandomizableTransform

        class _Flip(RandomizableTransform):
            def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
                image, boxes = data["image"], np.array(data["box"], dtype=np.float32)
                dims = image.ndim - 1
                for axis in range(dims):
                    if self.R.random() < 0.5:
                        image = torch.flip(image, dims=[axis + 1])
                        last = image.shape[axis + 1] - 1
                        low, high = boxes[:, axis].copy(), boxes[:, axis + dims].copy()
                        boxes[:, axis], boxes[:, axis + dims] = last - high, last - low
                return {**data, "image": image, "box": boxes}

        self.transform = _Flip(prob=1.0)
        self.transform.set_random_state(seed)

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.transform(data)
        return result


def merge_legacy(legacy: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
    """``saved`` with the ``legacy`` values filled in where it has none (one level of nesting)."""
    merged = dict(saved)
    for key, values in legacy.items():
        merged[key] = {**values, **saved.get(key, {})}
    return merged


class RetinaNetDetectorPlugin(DetectionPlugin):
    """MONAI RetinaNet (ResNet-FPN, ATSS, hard negatives, NMS) on a fixed-spacing grid; trainable, 2D or 3D."""

    needs_weights = True
    trainable = True

    def default_config(self) -> dict[str, Any]:
        return {
            "spatial_dims": 3,
            "in_channels": 1,
            "spacing": "auto",
            "intensity_percentiles": [0.5, 99.5],
            "patch_size": [64, 64, 64],
            "backbone": {"block": "basic", "layers": [1, 1, 1, 1], "block_inplanes": [16, 32, 64, 128],
                         "conv1_stride": 2, "conv1_size": 3, "returned_layers": [1, 2], "fpn_channels": 32,
                         "head_convs": 2},
            "anchors": {"base_shapes": "auto"},
            "matcher": {"num_candidates": 4},
            "sampler": {"name": "focal", "gamma": 2.0, "alpha": 0.25, "batch_size_per_image": 64,
                        "positive_fraction": 0.3, "pool_size": 20, "min_neg": 16},
            "sampling": {"patch_size": [32, 32, 32], "per_case": 2, "box_fraction": 0.67},
            "box_statistics": {},
            "selector": {"score_thresh": 0.05, "topk_candidates_per_level": 1000, "nms_thresh": 0.22,
                         "detections_per_img": 100},
            "whole_image_voxels": 4_000_000,
            "augment_flip": True,
            "labels": {"1": "lesion"},
        }

    def resolve_config(self, *overrides: Mapping[str, Any] | None) -> dict[str, Any]:
        """As for every plugin, except that ``labels`` is replaced whole by the last override naming it (label
        sets do not merge), with text keys as a saved checkpoint has them. A checkpoint saved before
        ``backbone.head_convs`` and ``sampler.name`` existed (its saved ``backbone`` lacks them) gets the values it
        was trained with: MONAI's four head convolutions and hard-negative sampling, so its weights keep loading."""
        saved = overrides[0] if overrides else None
        if isinstance(saved, Mapping) and isinstance(saved.get("backbone"), Mapping) \
                and "head_convs" not in saved["backbone"]:
            legacy: dict[str, Any] = {"backbone": {"head_convs": 4}}
            if isinstance(saved.get("sampler"), Mapping) and "name" not in saved["sampler"]:
                legacy["sampler"] = {"name": "hard_negative"}
            overrides = (merge_legacy(legacy, dict(saved)), *overrides[1:])
        config = super().resolve_config(*overrides)
        labels: Any = self.default_config()["labels"]
        for override in overrides:
            if override and override.get("labels"):
                labels = override["labels"]
        config["labels"] = {str(int(k)): str(v) for k, v in dict(labels).items()}
        return plan(config)

    def settings_help(self) -> dict[str, str]:
        return {
            "spatial_dims": "2 or 3 (found from the training images: one-slice images, PNG or 2-D NIfTI, make 2-D)",
            "in_channels": "image channels (found from the training data)",
            "spacing": ("network grid voxel size [x, y, z] mm (2-D: z unused); auto: a quarter of the "
                        "5th-percentile training box edge"),
            "intensity_percentiles": "[low, high] percentiles of each image scaled to 0..1 (clipped)",
            "patch_size": "sliding-window size (network voxels) for grids beyond whole_image_voxels",
            "backbone.block": "ResNet block: basic or bottleneck",
            "backbone.layers": "ResNet blocks per stage (four stages)",
            "backbone.block_inplanes": "ResNet channels per stage (four stages)",
            "backbone.conv1_stride": "stride of the first convolution",
            "backbone.conv1_size": "kernel size of the first convolution",
            "backbone.returned_layers": "ResNet stages feeding the feature pyramid (1..4); one more level is pooled",
            "backbone.fpn_channels": "feature-pyramid channels",
            "backbone.head_convs": "conv-norm-ReLU layers in each head before its output (MONAI: 4)",
            "anchors.base_shapes": ("anchor shapes (network voxels) at the finest level, doubled per level; "
                                    "auto: from the boxes"),
            "matcher.num_candidates": "ATSS: candidate anchors per level and box",
            "sampler.name": ("focal: sigmoid focal loss over every anchor (RetinaNet); "
                             "hard_negative: MONAI's hard negatives"),
            "sampler.gamma": "focal: focusing exponent",
            "sampler.alpha": "focal: weight of positives (negatives 1 - alpha; negative: no weighting)",
            "sampler.batch_size_per_image": "hard-negative sampler: anchors sampled per image",
            "sampler.positive_fraction": "hard-negative sampler: largest share of positives",
            "sampler.pool_size": "hard-negative sampler: negatives drawn from the hardest pool_size × needed",
            "sampler.min_neg": "hard-negative sampler: least negatives per image",
            "selector.score_thresh": "boxes scoring below this are dropped",
            "selector.topk_candidates_per_level": "boxes kept per pyramid level before NMS",
            "selector.nms_thresh": "non-maximum suppression IoU",
            "selector.detections_per_img": "boxes reported per image at most",
            "whole_image_voxels": "grids up to this many voxels run in one pass; larger ones by sliding window",
            "augment_flip": "training: random flips of image and boxes along each axis",
            "sampling.patch_size": "training patch (network voxels); smaller images are padded",
            "sampling.per_case": "training patches drawn from each case per epoch",
            "sampling.box_fraction": "share of training patches centred on a box (random shift, box inside)",
            "box_statistics": "training box sizes in mm (found from the data; plans spacing and anchors)",
            "labels": "label value → name of the detected classes",
        }

    def settings_schema(self) -> dict[str, tuple[type | None, ...]]:
        return {**super().settings_schema(), "spacing": (list, str), "patch_size": (list,),
                "anchors.base_shapes": (list, str), "sampling.patch_size": (list,), "box_statistics": (dict,)}

    def network(self, config: dict[str, Any]) -> torch.nn.Module:
        if int(config["spatial_dims"]) not in (2, 3):
            raise PluginError(f"spatial_dims must be 2 or 3, got {config['spatial_dims']}")
        return build_detector(config)

    def inference_transforms(self, config: dict[str, Any]) -> Transform:
        from monai.transforms import Compose, ScaleIntensityRangePercentilesd

        low, high = (float(p) for p in config["intensity_percentiles"])
        dims = int(config["spatial_dims"])
        spacing = [float(s) for s in config["spacing"]]
        steps: list[Any] = [ResampleToSpacing(spacing, planar=dims == 2)]
        steps.append(ScaleIntensityRangePercentilesd(keys="image", lower=low, upper=high, b_min=0.0, b_max=1.0,
                                                     clip=True))
        return Compose(steps)

    def training_transforms(self, config: dict[str, Any]) -> Transform:
        from monai.transforms import Compose

        seed = int((config.get("training") or {}).get("seed", 0))
        steps: list[Any] = [BoxTargets(self.inference_transforms(config), list(self.labels(config)),
                                       int(config["spatial_dims"]))]
        if config.get("augment_flip", True):
            steps.append(RandBoxFlip(seed).transform)
        sampling = config["sampling"]
        if int(sampling.get("per_case", 0)) > 0:  # 0: whole images, as before
            steps.append(RandBoxPatches(sampling["patch_size"], int(sampling["per_case"]),
                                        float(sampling["box_fraction"]), seed))
        return Compose(steps)

    def validation_transforms(self, config: dict[str, Any]) -> Transform:
        from monai.transforms import Compose

        return Compose([BoxTargets(self.inference_transforms(config), list(self.labels(config)),
                                   int(config["spatial_dims"]))])

    def training_step(self, config: dict[str, Any]) -> RetinaNetTrainingStep:
        return RetinaNetTrainingStep(config)

    def tta_axes(self, config: dict[str, Any]) -> tuple[int, ...]:
        """World axes ``--tta`` may flip (0 = left-right, 1, 2): all three, as training's flips; not left-right
        when a label names a side; none when trained without flips (``augment_flip`` off). The runner never mirrors
        left-right on a one-slice image."""
        if not config.get("augment_flip", True):
            return ()
        names = " ".join(self.labels(config).values()).lower().replace("_", " ")
        return (1, 2) if re.search(r"\b(left|right)\b", names) else (0, 1, 2)

    def detect(self, image: Any, model: Any, config: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes in ``image``'s voxel indices: MONAI's extents (voxel centres at integers) plus one half."""
        if model is None:
            raise PluginError("retinanet needs weights: give --weights (train them with `mitk train detect`)")
        model.eval()
        tensor = torch.as_tensor(image).float()
        device = next(model.parameters()).device
        dims = int(config["spatial_dims"])
        check_dimensions(tensor.shape[1:], dims)
        if dims == 2:
            tensor = tensor[..., 0]
        use_inferer = needs_sliding_window(tensor.shape[1:], config)
        with torch.no_grad():
            [output] = model([tensor.to(device)], use_inferer=use_inferer)
        boxes = as_3d_boxes(output["box"].float().cpu().numpy(), dims)  # 2-D: the box spans the only slice
        names = sorted(int(k) for k in self.labels(config))
        labels = np.array([names[int(n)] for n in output["label"].cpu().numpy()], dtype=int)
        return boxes + 0.5, output["label_scores"].float().cpu().numpy(), labels
