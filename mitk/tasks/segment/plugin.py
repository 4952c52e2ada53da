"""The segmentation plugin base: what a segmentation plugin hands the runner."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from mitk.enums import Task
from mitk.plugin import TaskPlugin

if TYPE_CHECKING:
    import numpy as np
    import torch

    from mitk.image import Image


class SegmentationPlugin(TaskPlugin):
    """Produces a label map: network logits with one channel per label, background first."""

    __module__ = "mitk.tasks"  # its public home (re-exported there)

    task = Task.SEGMENT
    required_methods = ("network", "inference_transforms")
    colour: ClassVar[Literal["channels", "luminance", "refuse"]] = "channels"
    """What the plugin does with a multi-channel image (an RGB photograph, a multi-sequence MR): ``"channels"``
    — its network takes them as input channels when :meth:`image_channels` says that many; ``"luminance"`` —
    the runner turns RGB into grey first (ITU-R BT.601, as Pillow's ``convert("L")``); ``"refuse"`` — never.
    Any other image is refused with a one-line message naming the plugin and the channels it takes."""

    def image_channels(self, config: dict[str, Any]) -> int:
        """How many image channels the network takes: ``in_channels`` of the config, else 1."""
        return int(config.get("in_channels") or 1)

    def inference_network(self, config: dict[str, Any]) -> torch.nn.Module:
        """The network ``load_model`` builds for inference: :meth:`network` unless a plugin builds an equal of it
        that is cheaper to import (the built-in ``unet``: MONAI's UNet in plain torch, same weights and output).
        Training always builds :meth:`network`."""
        return self.network(config)

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

    def tta_axes(self, config: dict[str, Any]) -> tuple[int, ...]:
        """Every spatial axis (nnU-Net's mirroring): a label map flipped is the flipped label map; but not the
        first (left-right on a RAS grid) when a label names a side (``left kidney``): mirroring would swap
        them, as TotalSegmentator's models avoid. The runner also keeps left-right of a one-slice image. A model
        mitk trained flips only the axes its ``augmentation`` flipped (none with ``augmentation.flip`` 0)."""
        axes = tuple(range(int(config.get("spatial_dims") or 3)))
        augmentation = config.get("augmentation")
        if isinstance(augmentation, dict) and "flip" in augmentation:  # mitk's training settings: what it flipped
            if not float(augmentation["flip"] or 0.0) > 0:
                return ()  # trained without flips: a flip it never saw may change its answer
            if augmentation.get("flip_axes") is not None:
                axes = tuple(a for a in axes if a in {int(b) for b in augmentation["flip_axes"]})
        names = " ".join(self.labels(config).values()).lower().replace("_", " ")
        if re.search(r"\b(left|right)\b", names):
            return tuple(a for a in axes if a != 0)
        return axes

    def segment_array(self, image: Image, config: dict[str, Any]) -> np.ndarray:
        """For a plugin with ``needs_torch = False``: the integer label map on ``image``'s grid (its spatial
        shape), computed with NumPy/SciPy alone. The runner uses it instead of the network path, so it must give
        the labels the network path would."""
        raise NotImplementedError

    def settings_schema(self) -> dict[str, tuple[type | None, ...]]:
        """``labels`` is open: its keys are the label values the user chooses."""
        return {"labels": (dict,)}
