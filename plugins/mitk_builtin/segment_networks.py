"""``unet``, ``segresnet`` and ``swinunetr``: trainable MONAI segmentation networks.

Registration only: the plugin classes (and torch/monai) load from :mod:`mitk_builtin._segment_networks`
when a plugin is first used.
"""

from __future__ import annotations

from mitk import hookimpl
from mitk.registry import PluginRegistrar

_MODULE = "mitk_builtin._segment_networks"


@hookimpl
def mitk_register_plugins(register: PluginRegistrar) -> None:
    register("unet", task="segment", factory=f"{_MODULE}:UNetSegmenter",
             summary="MONAI residual UNet; train with `mitk train segment --plugin unet`")
    register("segresnet", task="segment", factory=f"{_MODULE}:SegResNetSegmenter",
             summary="MONAI SegResNet (residual encoder-decoder); train with `mitk train segment`")
    register("swinunetr", task="segment", factory=f"{_MODULE}:SwinUNETRSegmenter",
             summary="MONAI SwinUNETR (Swin transformer encoder, patch sizes divisible by 32)")
