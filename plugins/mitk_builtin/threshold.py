"""``threshold``: classical foreground segmentation (Otsu or a fixed threshold), no weights needed."""

from __future__ import annotations

from mitk import hookimpl
from mitk.registry import PluginRegistrar


@hookimpl
def mitk_register_plugins(register: PluginRegistrar) -> None:
    register("threshold", task="segment", factory="mitk_builtin._threshold:ThresholdSegmenter",
             summary="Otsu or fixed-threshold foreground mask, optional largest connected component")
