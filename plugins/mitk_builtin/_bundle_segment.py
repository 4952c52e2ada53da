"""``monai-bundle-segmentation``: a MONAI bundle's network, preprocessing and inferer under mitk's runner.

The bundle's configs arrive as this plugin's settings (``bundle``: ``inference.json``, ``metadata``:
``metadata.json``), read from the folder by :mod:`mitk.bundles` and built by its safe resolver. Reading and
channel-first steps are mitk's; the bundle's postprocessing is read for its meaning only: a softmax output is
inverted onto the input grid and its argmax taken by mitk's runner (what ``Activationsd`` + ``Invertd`` +
``AsDiscreted(argmax)`` do), ``KeepLargestConnectedComponentd`` becomes the postprocess step.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch

from mitk.bundles.resolver import SafeResolver
from mitk.errors import CheckpointError, InputError, MitkWarning, PluginError
from mitk.taskspecs import get_task

SegmentationPlugin: Any = get_task("segment").base_class()


def resolver(config: Mapping[str, Any]) -> SafeResolver:
    if not config.get("bundle"):
        raise PluginError("this plugin runs MONAI bundles: give --weights BUNDLE_FOLDER")
    return SafeResolver(config["bundle"])


def image_key(config: Mapping[str, Any]) -> str:
    found = resolver(config)
    return str(found.value("image_key")) if found.has("image_key") else "image"


def postprocessing_steps(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The bundle's postprocessing steps, resolved but not built (``transform: @preprocessing`` left as is)."""
    found = resolver(config)
    if not found.has("postprocessing#transforms"):
        return []
    steps = []
    for n, step in enumerate(found.raw("postprocessing#transforms")):
        if isinstance(step, Mapping) and "_target_" in step:
            reduced = {k: v for k, v in step.items() if k in ("_target_", "softmax", "sigmoid", "argmax",
                                                                "threshold", "applied_labels", "independent",
                                                                "connectivity", "_disabled_")}
            steps.append(found.resolve(reduced, f"postprocessing#transforms#{n}"))
    return [step for step in steps if isinstance(step, dict)]


def check_input(image: Any, metadata: Mapping[str, Any]) -> None:
    """Refuse an image whose channel count the network cannot take; warn when a CT model gets no CT values."""
    inputs = (metadata.get("network_data_format") or {}).get("inputs") or {}
    declared = dict(inputs.get("image") or next(iter(inputs.values()), {}))
    channels = declared.get("num_channels")
    if isinstance(channels, int) and int(image.shape[0]) != channels:
        names = ", ".join(str(v) for v in (declared.get("channel_def") or {}).values())
        raise InputError(f"the bundle expects {channels} channel(s){f' ({names})' if names else ''}, "
                         f"the image has {int(image.shape[0])}")
    if str(declared.get("modality", "")).upper() == "CT" and float(image.min()) >= -100:
        warnings.warn("the bundle was trained on CT (Hounsfield units) but this image has no value below -100 "
                      "(no air): is it CT?", MitkWarning, stacklevel=2)


class BundleSegmenter(SegmentationPlugin):  # type: ignore[misc]
    """A MONAI Model Zoo segmentation bundle (``--weights BUNDLE_FOLDER``)."""

    trainable = False
    cpu_kernels = False

    def default_config(self) -> dict[str, Any]:
        return {"bundle": {}, "metadata": {}, "torchscript_sha256": None}

    def settings_schema(self) -> dict[str, tuple[type | None, ...]]:
        return {"labels": (dict,), "bundle": (dict,), "metadata": (dict,), "torchscript_sha256": (str, None)}

    def settings_help(self) -> dict[str, str]:
        return {"bundle": "the bundle's configs/inference.json (read from --weights BUNDLE_FOLDER)",
                "metadata": "the bundle's configs/metadata.json",
                "torchscript_sha256": "run a TorchScript models/model.ts only if its sha256 is this"}

    def network(self, config: dict[str, Any]) -> torch.nn.Module:
        self._check_output(config)
        network = resolver(config).build("network_def")
        if not isinstance(network, torch.nn.Module):
            raise CheckpointError("network_def: does not build a network")
        return network

    def labels(self, config: dict[str, Any]) -> dict[int, str]:
        output = ((config.get("metadata") or {}).get("network_data_format") or {}).get("outputs") or {}
        channel_def = dict(output.get("pred") or next(iter(output.values()), {})).get("channel_def") or {}
        if channel_def:
            return {int(k): str(v) for k, v in channel_def.items()}
        return super().labels(config)  # type: ignore[no-any-return]

    def inference_transforms(self, config: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
        found = resolver(config)
        key = image_key(config)
        compose = found.build("preprocessing") if found.has("preprocessing") else None
        metadata = config.get("metadata") or {}

        def preprocess(data: dict[str, Any]) -> dict[str, Any]:
            check_input(data["image"], metadata)
            out = compose({key: data["image"]}) if compose is not None else {key: data["image"]}
            return {**data, "image": out[key]}

        return preprocess

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
        for step in postprocessing_steps(config):
            if step["_target_"] == "Activationsd" and step.get("sigmoid"):
                raise CheckpointError("postprocessing: the bundle's output is sigmoid multi-label (overlapping "
                                      "channels); mitk runs softmax/argmax segmentation bundles only")
