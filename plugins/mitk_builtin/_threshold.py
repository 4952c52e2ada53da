"""The threshold segmenter: Otsu's or a fixed threshold, then (optionally) the largest connected component.

It runs on NumPy and scikit-image alone (``needs_torch = False``: a call never imports torch or MONAI). The
parameter-free network module computes the same labels, for the paths that need a network: ``--probabilities``,
and code that calls ``plugin.network`` directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mitk.image import Image
from mitk.tasks import SegmentationPlugin, Transform

if TYPE_CHECKING:
    import torch


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut that maximises the between-class variance of the histogram of ``values``
    (float32, as the image reaches the network), on ``bins`` equal bins from the minimum to the maximum."""
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    low, high = float(flat.min()), float(flat.max())
    if high <= low:
        return low
    histogram = np.histogram(flat, bins=bins, range=(low, high))[0].astype(np.float64)
    edges = np.linspace(low, high, bins + 1, dtype=np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_below = np.cumsum(histogram)
    weight_above = weight_below[-1] - weight_below
    sum_below = np.cumsum(histogram * centres)
    mean_below = sum_below / np.maximum(weight_below, 1e-12)
    mean_above = (sum_below[-1] - sum_below) / np.maximum(weight_above, 1e-12)
    between = weight_below * weight_above * (mean_below - mean_above) ** 2
    index = int(np.argmax(between[:-1]))
    return float((centres[index] + centres[index + 1]) / 2)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of ``mask`` (ties as MONAI's ``KeepLargestConnectedComponent`` breaks
    them: the same labelling as scikit-image's ``measure.label``, which for a boolean mask is
    ``scipy.ndimage.label``, and the same ranking)."""
    from mitk_builtin._labelling import label

    features, count = label(mask)
    if count <= 1:
        return mask.astype(bool)
    counts = np.bincount(features.reshape(-1))
    counts[0] = 0
    keep = np.zeros(counts.shape[0], dtype=bool)
    keep[np.argsort(counts)[::-1][:1]] = True
    return keep[features]


def first_channel(image: Image) -> np.ndarray:
    """Channel 0 of the image as float32: the values the network path compares."""
    array = image.array if image.array.ndim == 4 else image.array[..., None]
    return np.asarray(array[..., 0]).astype(np.float32)


def _network_module() -> type:
    import torch

    class ThresholdNetwork(torch.nn.Module):
        """Two-channel logits (background, foreground) from ``x > threshold``."""

        def __init__(self, threshold: float | None, bins: int = 256) -> None:
            super().__init__()
            self.threshold = threshold
            self.bins = bins

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            value = self.threshold if self.threshold is not None else otsu_threshold(
                image[:, :1].detach().cpu().numpy(), self.bins)
            foreground = (image[:, :1] > value).float()
            return torch.cat([1.0 - foreground, foreground], dim=1) * 20.0

    return ThresholdNetwork


class ThresholdSegmenter(SegmentationPlugin):
    """Foreground mask by Otsu's method (default) or by ``threshold``."""

    needs_weights = False
    trainable = False
    needs_torch = False
    colour = "luminance"  # an RGB picture is thresholded on its grey value (ITU-R BT.601)

    def default_config(self) -> dict[str, Any]:
        return {
            "threshold": None,
            "bins": 256,
            "largest_component": True,
            "labels": {0: "background", 1: "foreground"},
        }

    def settings_help(self) -> dict[str, str]:
        return {
            "threshold": "foreground is intensity above this value; null: Otsu's threshold per image",
            "bins": "histogram bins for Otsu's threshold",
            "largest_component": "keep only the largest 6-connected foreground component",
            "labels": "label value → name of the two output labels",
        }

    def settings_schema(self) -> dict[str, tuple[type | None, ...]]:
        return {**super().settings_schema(), "threshold": (float, None)}

    def segment_array(self, image: Image, config: dict[str, Any]) -> np.ndarray:
        values = first_channel(image)
        threshold = config.get("threshold")
        value = float(threshold) if threshold is not None else otsu_threshold(values, int(config["bins"]))
        foreground = values > np.float32(value)
        if config.get("largest_component"):
            foreground = largest_component(foreground)
        return foreground.astype(np.uint8)

    def network(self, config: dict[str, Any]) -> torch.nn.Module:
        threshold = config.get("threshold")
        module: torch.nn.Module = _network_module()(float(threshold) if threshold is not None else None,
                                                    int(config["bins"]))
        return module

    def inference_transforms(self, config: dict[str, Any]) -> Transform:
        return lambda data: data

    def postprocess(self, config: dict[str, Any]) -> Any:
        if not config.get("largest_component"):
            return None
        from monai.transforms import KeepLargestConnectedComponent

        return KeepLargestConnectedComponent(applied_labels=[1], independent=True, connectivity=1)
