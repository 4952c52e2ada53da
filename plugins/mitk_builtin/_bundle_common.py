"""What the bundle plugins share: the safe resolver over their settings, the declared input and labels."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mitk.bundles.resolver import SafeResolver
from mitk.errors import CheckpointError, PluginError

BUNDLE_DEFAULTS: dict[str, Any] = {"bundle": {}, "metadata": {}, "torchscript_sha256": None}
BUNDLE_SCHEMA: dict[str, tuple[type | None, ...]] = {"bundle": (dict,), "metadata": (dict,),
                                                      "torchscript_sha256": (str, None)}
BUNDLE_HELP = {"bundle": "the bundle's configs/inference.json (read from --weights BUNDLE_FOLDER)",
               "metadata": "the bundle's configs/metadata.json",
               "torchscript_sha256": "run a TorchScript models/model.ts only if its sha256 is this"}


def resolver(config: Mapping[str, Any]) -> SafeResolver:
    if not config.get("bundle"):
        raise PluginError("this plugin runs MONAI bundles: give --weights BUNDLE_FOLDER")
    return SafeResolver(config["bundle"])


def image_key(config: Mapping[str, Any]) -> str:
    found = resolver(config)
    return str(found.value("image_key")) if found.has("image_key") else "image"


MEANINGFUL = ("softmax", "sigmoid", "argmax", "threshold", "applied_labels", "independent", "connectivity",
              "_disabled_")
"""The arguments of a postprocessing step that mitk reads; the steps themselves are never built."""
FORMATTING = frozenset({"Activationsd", "Invertd", "AsDiscreted", "SaveImaged", "SaveClassificationd", "EnsureTyped",
                        "Lambdad", "CopyItemsd", "DeleteItemsd", "ToTensord", "SqueezeDimd"})
"""Postprocessing steps whose work mitk's runner does itself (activation, inversion, argmax, saving), or that only
reshape the output for saving (a ``Lambdad`` is code, and never run)."""


def postprocessing_steps(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The bundle's postprocessing steps by name, with only the arguments of :data:`MEANINGFUL` resolved."""
    found = resolver(config)
    if not found.has("postprocessing#transforms"):
        return []
    steps = []
    for n, step in enumerate(found.raw("postprocessing#transforms")):
        if isinstance(step, Mapping) and isinstance(step.get("_target_"), str):
            key = f"postprocessing#transforms#{n}"
            read = {k: found.resolve(v, f"{key}#{k}") for k, v in step.items() if k in MEANINGFUL}
            steps.append({"_target_": step["_target_"].rsplit(".", 1)[-1], **read})
    return [step for step in steps if isinstance(step, dict)]


def declared_output(config: Mapping[str, Any]) -> dict[str, Any]:
    """``network_data_format.outputs.pred`` of the metadata (or its first output)."""
    outputs = ((config.get("metadata") or {}).get("network_data_format") or {}).get("outputs") or {}
    return dict(outputs.get("pred") or next(iter(outputs.values()), {}))


def channel_names(config: Mapping[str, Any]) -> dict[int, str]:
    """The output channels' names, by index, as the metadata declares them."""
    return {int(k): str(v) for k, v in (declared_output(config).get("channel_def") or {}).items()}


def bundle_preprocess(config: Mapping[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The bundle's preprocessing (reading and channel-first steps left to mitk) on ``{"image": ...}``; the bundle's
    own image key is used inside. Whether the image fits what the metadata declares (channels, dims, modality) is
    checked before, by :mod:`mitk.runner.fit`, as for every model."""
    found = resolver(config)
    key = image_key(config)
    compose = found.build("preprocessing") if found.has("preprocessing") else None

    def preprocess(data: dict[str, Any]) -> dict[str, Any]:
        out = compose({key: data["image"]}) if compose is not None else {key: data["image"]}
        return {**data, "image": out[key]}

    return preprocess


class BundlePieces:
    """What every bundle plugin shares: its settings are the bundle's configs, its network is ``network_def``
    built by the safe resolver, its preprocessing the bundle's own; it runs as given (no training, no kernel
    rewrites). Mixed in before the task's plugin base."""

    trainable = False
    cpu_kernels = False

    def default_config(self) -> dict[str, Any]:
        return dict(BUNDLE_DEFAULTS)

    def settings_schema(self) -> dict[str, tuple[type | None, ...]]:
        return dict(BUNDLE_SCHEMA)

    def settings_help(self) -> dict[str, str]:
        return dict(BUNDLE_HELP)

    def network(self, config: dict[str, Any]) -> Any:
        import torch

        network = resolver(config).build("network_def")
        if not isinstance(network, torch.nn.Module):
            raise CheckpointError("network_def: does not build a network")
        return network

    def inference_transforms(self, config: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
        return bundle_preprocess(config)
