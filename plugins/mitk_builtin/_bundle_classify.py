"""``monai-bundle-classes``: a MONAI classification bundle (output format ``classes``) under mitk's runner.

The network and preprocessing come from the bundle through :mod:`mitk.bundles`' safe resolver; the class names
from the metadata's ``channel_def``; mitk's classification runner gives the image its network's dimensions and
channels and takes the softmax (a sigmoid when the bundle's postprocessing applies one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from mitk.errors import CheckpointError
from mitk.taskspecs import get_task
from mitk_builtin._bundle_common import (
    BUNDLE_DEFAULTS,
    BUNDLE_HELP,
    BUNDLE_SCHEMA,
    bundle_preprocess,
    channel_names,
    postprocessing_steps,
    resolver,
)

ClassificationPlugin: Any = get_task("classify").base_class()


class BundleClassifier(ClassificationPlugin):  # type: ignore[misc]
    """A MONAI Model Zoo classification bundle (``--weights BUNDLE_FOLDER``)."""

    trainable = False
    cpu_kernels = False

    def default_config(self) -> dict[str, Any]:
        return dict(BUNDLE_DEFAULTS)

    def settings_schema(self) -> dict[str, tuple[type | None, ...]]:
        return dict(BUNDLE_SCHEMA)

    def settings_help(self) -> dict[str, str]:
        return dict(BUNDLE_HELP)

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

    def network(self, config: dict[str, Any]) -> torch.nn.Module:
        network = resolver(config).build("network_def")
        if not isinstance(network, torch.nn.Module):
            raise CheckpointError("network_def: does not build a network")
        return network

    def class_names(self, config: dict[str, Any]) -> list[str]:
        names = channel_names(config)
        return [names[i] for i in sorted(names)] if names else super().class_names(config)

    def inference_transforms(self, config: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
        return bundle_preprocess(config)
