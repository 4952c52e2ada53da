"""MONAI's UNet for inference, in plain torch: the same layers, the same ``state_dict`` keys, the same answer.

``import monai`` imports every MONAI submodule (3–5 s of a cold process); a per-file ``mitk segment`` with the
built-in ``unet`` needs none of them. :class:`TorchUNet` rebuilds ``monai.networks.nets.UNet`` (MONAI 1.x) from
torch's own layers: ``Convolution`` (a convolution, then ``adn``: norm ``N``, dropout ``D``, activation ``A``),
``ResidualUnit`` (``conv.unitK`` plus a ``residual`` convolution where the shape changes), ``SkipConnection``
(``cat([x, submodule(x)], dim=1)``), the down path's strided convolutions and the up path's transposed
convolution (padding ``(k - 1) / 2``, output padding ``stride - 1``). Module names, parameter shapes and the order
of operations are MONAI's, so the same saved weights load with ``strict=True`` and the forward pass runs the same
torch ops in the same order: bit-for-bit MONAI's output (``tests/test_torch_unet.py``), and
:mod:`mitk.runner.cpu_kernels` rewrites its convolutions exactly as it does MONAI's.

:func:`torch_unet` builds it only for settings it reproduces exactly (PReLU activation, ``NDA`` order, instance,
batch or group norm with torch's keyword arguments, odd kernels); for any other it returns None and the caller
builds MONAI's own network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

NORMS: dict[str, tuple[str, str]] = {"instance": ("InstanceNorm", "num_features"),
                                     "batch": ("BatchNorm", "num_features"), "group": ("GroupNorm", "num_channels")}
"""MONAI norm name → torch class stem (``InstanceNorm3d`` …) and the argument that takes the channel count."""


def same_padding(kernel_size: Sequence[int] | int) -> tuple[int, ...] | int:
    """MONAI's ``same_padding`` (dilation 1): ``(k - 1) / 2`` per axis, an int when one axis."""
    kernel = np.atleast_1d(kernel_size)
    if np.any((kernel - 1) % 2 == 1):
        raise NotImplementedError(f"Same padding not available for kernel_size={kernel}.")
    padding = tuple(int(p) for p in (kernel - 1) / 2)
    return padding if len(padding) > 1 else padding[0]


def _output_padding(strides: Sequence[int] | int) -> tuple[int, ...] | int:
    """MONAI's ``stride_minus_kernel_padding(1, strides)``."""
    values = tuple(int(p) for p in np.atleast_1d(strides) - 1)
    return values if len(values) > 1 else values[0]


def norm_spec(norm: Any) -> tuple[str, dict[str, Any]] | None:
    """``"instance"``, ``("batch", {...})``, ``["group", {"num_groups": 4}]`` → (name, torch kwargs); None for a
    norm this module does not build (the caller then builds MONAI's network)."""
    if isinstance(norm, str):
        name, kwargs = norm, {}
    elif isinstance(norm, (tuple, list)) and len(norm) == 2 and isinstance(norm[0], str) \
            and isinstance(norm[1], Mapping):
        name, kwargs = norm[0], dict(norm[1])
    else:
        return None
    name = name.lower()
    if name not in NORMS or not all(isinstance(key, str) for key in kwargs):
        return None
    if name == "group" and "num_groups" not in kwargs:
        return None
    return name, kwargs


def _norm_layer(norm: tuple[str, dict[str, Any]], dims: int, channels: int) -> nn.Module:
    name, kwargs = norm
    stem, channel_argument = NORMS[name]
    layer_type = getattr(nn, stem if name == "group" else f"{stem}{dims}d")
    return layer_type(**{channel_argument: channels, **kwargs})


_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_TRANSPOSED = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


class Convolution(nn.Sequential):
    """MONAI's ``Convolution``: ``conv`` then (unless ``conv_only``) ``adn`` = norm ``N``, dropout ``D``,
    PReLU ``A``."""

    def __init__(self, dims: int, in_channels: int, out_channels: int, strides: Sequence[int] | int,
                 kernel_size: Sequence[int] | int, norm: tuple[str, dict[str, Any]], dropout: float, bias: bool,
                 conv_only: bool = False, is_transposed: bool = False,
                 padding: Sequence[int] | int | None = None) -> None:
        super().__init__()
        if padding is None:
            padding = same_padding(kernel_size)
        conv: nn.Module
        if is_transposed:
            conv = _TRANSPOSED[dims](in_channels, out_channels, kernel_size=kernel_size,  # type: ignore[arg-type]
                                     stride=strides, padding=padding,  # type: ignore[arg-type]
                                     output_padding=_output_padding(strides), bias=bias)  # type: ignore[arg-type]
        else:
            conv = _CONV[dims](in_channels, out_channels, kernel_size=kernel_size,  # type: ignore[arg-type]
                               stride=strides, padding=padding, bias=bias)  # type: ignore[arg-type]
        self.add_module("conv", conv)
        if conv_only:
            return
        adn = nn.Sequential()
        adn.add_module("N", _norm_layer(norm, dims, out_channels))
        adn.add_module("D", nn.Dropout(p=float(dropout)))
        adn.add_module("A", nn.PReLU())
        self.add_module("adn", adn)


class ResidualUnit(nn.Module):
    """MONAI's ``ResidualUnit``: ``conv`` (``subunits`` convolutions, the first strided) plus ``residual``."""

    def __init__(self, dims: int, in_channels: int, out_channels: int, strides: Sequence[int] | int,
                 kernel_size: Sequence[int] | int, subunits: int, norm: tuple[str, dict[str, Any]], dropout: float,
                 bias: bool, last_conv_only: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential()
        self.residual: nn.Module = nn.Identity()
        padding = same_padding(kernel_size)
        channels, stride = in_channels, strides
        subunits = max(1, subunits)
        for index in range(subunits):
            unit = Convolution(dims, channels, out_channels, stride, kernel_size, norm, dropout, bias,
                               conv_only=last_conv_only and index == subunits - 1, padding=padding)
            self.conv.add_module(f"unit{index:d}", unit)
            channels, stride = out_channels, 1
        if np.prod(strides) != 1 or in_channels != out_channels:
            residual_kernel, residual_padding = kernel_size, padding
            if np.prod(strides) == 1:  # only the channel count changes: a 1×1 convolution, no padding
                residual_kernel, residual_padding = 1, 0
            self.residual = _CONV[dims](in_channels, out_channels, residual_kernel, strides,  # type: ignore[arg-type]
                                        residual_padding, bias=bias)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual: torch.Tensor = self.residual(x)
        out: torch.Tensor = self.conv(x)
        return out + residual


class SkipConnection(nn.Module):
    """MONAI's ``SkipConnection`` in its ``cat`` mode: the input and the submodule's output, channels joined."""

    def __init__(self, submodule: nn.Module) -> None:
        super().__init__()
        self.submodule = submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.submodule(x)], dim=1)


class TorchUNet(nn.Module):
    """``monai.networks.nets.UNet`` with PReLU, ``NDA`` ordering: the same modules under the same names."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, channels: Sequence[int],
                 strides: Sequence[int], kernel_size: Sequence[int] | int = 3,
                 up_kernel_size: Sequence[int] | int = 3, num_res_units: int = 0, norm: Any = "instance",
                 dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        spec = norm_spec(norm)
        if spec is None:
            raise ValueError(f"TorchUNet does not build norm {norm!r}")
        if len(channels) < 2 or len(strides) < len(channels) - 1:
            raise ValueError("TorchUNet needs at least two channels and one stride per level")
        self.dimensions, self.num_res_units = spatial_dims, num_res_units
        self.kernel_size, self.up_kernel_size = kernel_size, up_kernel_size
        self.norm, self.dropout, self.bias = spec, float(dropout), bias
        self.model = self._block(in_channels, out_channels, list(channels), list(strides), True)

    def _block(self, inc: int, outc: int, channels: list[int], strides: list[int], is_top: bool) -> nn.Module:
        """MONAI's ``_create_block``: down, skip around the level below, up; recursing from the top."""
        c, s = channels[0], strides[0]
        if len(channels) > 2:
            subblock, upc = self._block(c, c, channels[1:], strides[1:], False), c * 2
        else:
            subblock, upc = self._down(c, channels[1], 1), c + channels[1]
        return nn.Sequential(self._down(inc, c, s), SkipConnection(subblock), self._up(upc, outc, s, is_top))

    def _down(self, inc: int, outc: int, strides: int) -> nn.Module:
        if self.num_res_units > 0:
            return ResidualUnit(self.dimensions, inc, outc, strides, self.kernel_size, self.num_res_units,
                                self.norm, self.dropout, self.bias)
        return Convolution(self.dimensions, inc, outc, strides, self.kernel_size, self.norm, self.dropout, self.bias)

    def _up(self, inc: int, outc: int, strides: int, is_top: bool) -> nn.Module:
        conv = Convolution(self.dimensions, inc, outc, strides, self.up_kernel_size, self.norm, self.dropout,
                           self.bias, conv_only=is_top and self.num_res_units == 0, is_transposed=True)
        if self.num_res_units == 0:
            return conv
        unit = ResidualUnit(self.dimensions, outc, outc, 1, self.kernel_size, 1, self.norm, self.dropout, self.bias,
                            last_conv_only=is_top)
        return nn.Sequential(conv, unit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x)
        return out


def _odd(kernel: Any, dims: int) -> bool:
    values = [kernel] if isinstance(kernel, int) else list(kernel)
    odd = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 and v % 2 for v in values)
    return odd and len(values) == (1 if isinstance(kernel, int) else dims)


def torch_unet(spatial_dims: int, in_channels: int, out_channels: int, channels: Sequence[int],
               strides: Sequence[int], kernel_size: Sequence[int] | int = 3, up_kernel_size: Sequence[int] | int = 3,
               num_res_units: int = 0, act: Any = "PRELU", norm: Any = "instance", dropout: Any = 0.0,
               bias: bool = True, adn_ordering: str = "NDA") -> TorchUNet | None:
    """A :class:`TorchUNet` for MONAI ``UNet(...)`` with these arguments, or None where it would not be MONAI's
    network exactly (another activation, ordering, norm, dropout form, even kernel or inconsistent lengths)."""
    if (spatial_dims not in _CONV or not isinstance(act, str) or act.upper() != "PRELU" or adn_ordering != "NDA"
            or norm_spec(norm) is None or isinstance(dropout, bool) or not isinstance(dropout, (int, float))
            or not 0 <= float(dropout) <= 1 or len(channels) < 2 or len(strides) != len(channels) - 1
            or not _odd(kernel_size, spatial_dims) or not _odd(up_kernel_size, spatial_dims)
            or any(int(s) < 1 for s in strides) or any(int(c) < 1 for c in channels) or num_res_units < 0):
        return None
    return TorchUNet(spatial_dims, in_channels, out_channels, [int(c) for c in channels], [int(s) for s in strides],
                     kernel_size, up_kernel_size, num_res_units, norm, float(dropout), bias)
