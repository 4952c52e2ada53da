"""``monai-bundle-classes``: a MONAI classification bundle (output format ``classes``) under mitk's runner.

The network and preprocessing come from the bundle through :mod:`mitk.bundles`' safe resolver; the class names
from the metadata's ``channel_def``; mitk's classification runner gives the image its network's dimensions and
channels and takes the softmax (a sigmoid when the bundle's postprocessing applies one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mitk.tasks import ClassificationPlugin
from mitk_builtin._bundle_common import BundlePieces, channel_names, postprocessing_steps, resolver


class BundleClassifier(BundlePieces, ClassificationPlugin):
    """A MONAI Model Zoo classification bundle (``--weights BUNDLE_FOLDER``)."""

    def resolve_config(self, *overrides: Mapping[str, Any] | None) -> dict[str, Any]:
        """The settings, with the network's ``spatial_dims`` and ``in_channels`` and the output's activation
        (what the classification runner reads) taken from the bundle."""
        config = super().resolve_config(*overrides)
        if config.get("bundle"):
            network = resolver(config).value("network_def")
            config["spatial_dims"] = int(network.get("spatial_dims", 3))
            config["in_channels"] = int(network.get("in_channels", 1))
            config["multi_label"] = any(step["_target_"] == "Activationsd" and step.get("sigmoid")
                                        for step in postprocessing_steps(config))
        return config

    def class_names(self, config: dict[str, Any]) -> list[str]:
        names = channel_names(config)
        return [names[i] for i in sorted(names)] if names else super().class_names(config)
