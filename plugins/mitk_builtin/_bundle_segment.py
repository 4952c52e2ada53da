"""``monai-bundle-segmentation``: a MONAI bundle's network, preprocessing and inferer under mitk's runner.

The bundle's configs arrive as this plugin's settings (``bundle``: ``inference.json``, ``metadata``:
``metadata.json``), read from the folder by :mod:`mitk.bundles` and built by its safe resolver. Reading and
channel-first steps are mitk's; the bundle's postprocessing is read for its meaning only: a softmax output is
inverted onto the input grid and its argmax taken by mitk's runner (what ``Activationsd`` + ``Invertd`` +
``AsDiscreted(argmax)`` do), ``KeepLargestConnectedComponentd`` becomes the postprocess step.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from mitk.errors import CheckpointError, MitkWarning
from mitk.tasks import SegmentationPlugin
from mitk_builtin._bundle_common import FORMATTING, BundlePieces, channel_names, postprocessing_steps, resolver


class BundleSegmenter(BundlePieces, SegmentationPlugin):
    """A MONAI Model Zoo segmentation bundle (``--weights BUNDLE_FOLDER``)."""

    def settings_schema(self) -> dict[str, tuple[type | None, ...]]:
        return {"labels": (dict,), **super().settings_schema()}

    def settings_help(self) -> dict[str, str]:
        return {**super().settings_help(), "labels": "label value → name (default: the metadata's output channel_def)"}

    def network(self, config: dict[str, Any]) -> Any:
        self._check_output(config)
        return super().network(config)

    def labels(self, config: dict[str, Any]) -> dict[int, str]:
        if config.get("labels"):
            return super().labels(config)
        return channel_names(config) or super().labels(config)

    def inferer(self, config: dict[str, Any]) -> Any:
        found = resolver(config)
        if found.has("inferer"):
            return found.build("inferer")
        return super().inferer(config)

    def postprocess(self, config: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor] | None:
        for step in postprocessing_steps(config):
            if step["_target_"] == "KeepLargestConnectedComponentd":
                from monai.transforms import KeepLargestConnectedComponent

                keep = KeepLargestConnectedComponent(applied_labels=step.get("applied_labels"),
                                                     independent=step.get("independent", True),
                                                     connectivity=step.get("connectivity"))
                return lambda label_map: torch.as_tensor(keep(label_map))
        return None

    def _check_output(self, config: dict[str, Any]) -> None:
        steps = postprocessing_steps(config)
        if any(step["_target_"] == "Activationsd" and step.get("sigmoid") for step in steps):
            raise CheckpointError("postprocessing: the bundle's output is sigmoid multi-label (overlapping "
                                  "channels); mitk runs softmax/argmax segmentation bundles only")
        skipped = sorted({s["_target_"] for s in steps} - FORMATTING - {"KeepLargestConnectedComponentd"})
        if skipped:
            warnings.warn(f"postprocessing: mitk does not run the bundle's {', '.join(skipped)}", MitkWarning,
                          stacklevel=2)
