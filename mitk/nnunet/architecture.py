"""The network that ``plans.json`` describes, built from allow-lists, never from an import string.

nnU-Net (>= 2.5) writes ``architecture: {network_class_name, arch_kwargs, _kw_requires_import}``; older plans
are converted by nnunetv2's ``ConfigurationManager`` to the same three values. nnU-Net imports every name with
``pydoc.locate``; here the class must be one of :data:`NETWORKS` and each imported keyword (``conv_op``,
``norm_op``, ``dropout_op``, ``nonlin``) one of the torch.nn classes of :data:`LAYERS`, else a one-line refusal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mitk.errors import CheckpointError

NETWORKS = ("PlainConvUNet", "ResidualEncoderUNet", "ResidualUNet")
"""dynamic_network_architectures.architectures.unet classes (the ones nnU-Net's planners write)."""
LAYERS = {
    "conv": ("Conv1d", "Conv2d", "Conv3d"),
    "instancenorm": ("InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"),
    "batchnorm": ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d"),
    "normalization": ("GroupNorm", "LayerNorm"),
    "dropout": ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d"),
    "activation": ("LeakyReLU", "ReLU", "PReLU", "ELU", "GELU", "SiLU", "Tanh", "Sigmoid"),
}
"""torch.nn modules (by their module under ``torch.nn.modules``) that a plans file may name."""


def layer_class(name: str, key: str) -> Any:
    """``torch.nn.modules.conv.Conv3d`` or ``torch.nn.Conv3d`` → the class, if allow-listed."""
    import torch

    parts = name.split(".")
    short = parts[-1]
    allowed = any(short in names and ((len(parts) == 3 and parts[:2] == ["torch", "nn"]) or
                                      parts[:-1] == ["torch", "nn", "modules", module])
                  for module, names in LAYERS.items())
    if not allowed:
        raise CheckpointError(f"plans.json: {key}={name!r} is not a torch.nn layer mitk builds "
                              f"(allowed: {', '.join(n for names in LAYERS.values() for n in names)})")
    return getattr(torch.nn, short)


def network_class(name: str) -> Any:
    """``dynamic_network_architectures.architectures.unet.PlainConvUNet`` (or the bare class name) → the class."""
    parts = name.split(".")
    if parts[-1] not in NETWORKS or (len(parts) > 1 and parts[:-1] != ["dynamic_network_architectures",
                                                                          "architectures", "unet"]):
        raise CheckpointError(f"plans.json: network_class_name {name!r} is not one mitk builds "
                              f"(dynamic_network_architectures.architectures.unet: {', '.join(NETWORKS)})")
    from dynamic_network_architectures.architectures import unet

    return getattr(unet, parts[-1])


def build_network(class_name: str, kwargs: Mapping[str, Any], requires_import: Sequence[str],
                  input_channels: int, output_channels: int) -> Any:
    """As nnU-Net's ``get_network_from_plans(..., deep_supervision=False)``, with allow-lists for the names."""
    arguments = dict(kwargs)
    for key in requires_import:
        if arguments.get(key) is not None:
            if not isinstance(arguments[key], str):
                raise CheckpointError(f"plans.json: {key} must name a class")
            arguments[key] = layer_class(arguments[key], key)
    cls = network_class(class_name)
    try:
        return cls(input_channels=input_channels, num_classes=output_channels, deep_supervision=False, **arguments)
    except TypeError as error:
        raise CheckpointError(f"plans.json: the architecture's arguments do not fit {cls.__name__} ({error})") \
            from None
