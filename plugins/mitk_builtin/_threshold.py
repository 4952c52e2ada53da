"""The threshold segmenter: a parameter-free network module so it runs through the same runner."""

from __future__ import annotations

from typing import Any

import torch

from mitk.tasks import SegmentationPlugin, Transform


def otsu_threshold(values: torch.Tensor, bins: int = 256) -> float:
    """Otsu's threshold: the cut that maximises the between-class variance of the histogram."""
    flat = values.reshape(-1).float()
    low, high = float(flat.min()), float(flat.max())
    if high <= low:
        return low
    histogram = torch.histc(flat, bins=bins, min=low, max=high).double()
    centres = torch.linspace(low, high, bins + 1, dtype=torch.float64)
    centres = (centres[:-1] + centres[1:]) / 2
    weight_below = torch.cumsum(histogram, 0)
    weight_above = weight_below[-1] - weight_below
    sum_below = torch.cumsum(histogram * centres, 0)
    mean_below = sum_below / weight_below.clamp(min=1e-12)
    mean_above = (sum_below[-1] - sum_below) / weight_above.clamp(min=1e-12)
    between = weight_below * weight_above * (mean_below - mean_above) ** 2
    index = int(torch.argmax(between[:-1]))
    return float((centres[index] + centres[index + 1]) / 2)


class ThresholdNetwork(torch.nn.Module):
    """Two-channel logits (background, foreground) from ``x > threshold``."""

    def __init__(self, threshold: float | None, bins: int = 256) -> None:
        super().__init__()
        self.threshold = threshold
        self.bins = bins

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        value = self.threshold if self.threshold is not None else otsu_threshold(image[:, :1], self.bins)
        foreground = (image[:, :1] > value).float()
        return torch.cat([1.0 - foreground, foreground], dim=1) * 20.0


class ThresholdSegmenter(SegmentationPlugin):
    """Foreground mask by Otsu's method (default) or by ``threshold``."""

    needs_weights = False
    trainable = False
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

    def network(self, config: dict[str, Any]) -> torch.nn.Module:
        threshold = config.get("threshold")
        return ThresholdNetwork(float(threshold) if threshold is not None else None, int(config["bins"]))

    def inference_transforms(self, config: dict[str, Any]) -> Transform:
        return lambda data: data

    def postprocess(self, config: dict[str, Any]) -> Any:
        if not config.get("largest_component"):
            return None
        from monai.transforms import KeepLargestConnectedComponent

        return KeepLargestConnectedComponent(applied_labels=[1], independent=True, connectivity=1)
