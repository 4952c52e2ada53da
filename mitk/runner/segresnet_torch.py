"""MONAI's SegResNet for inference, in plain torch: the same layers, ``state_dict`` keys and answer.

As :mod:`mitk.runner.unet_torch` for the UNet: ``monai.networks.nets.SegResNet`` (MONAI 1.x) with its defaults
(group norm of 8 groups, in-place ReLU, trilinear ``nontrainable`` upsampling, the final 1×1 convolution) rebuilt
from torch's layers under MONAI's module names — ``convInit.conv``, ``down_layers.i`` (a strided convolution then
``ResBlock``s: norm1, act, conv1, norm2, act, conv2, plus the input), ``up_samples.i`` (1×1 convolution, then
``upsample_non_trainable``), ``up_layers.i``, ``conv_final`` — running the same ops in the same order, so MONAI's
weights load with ``strict=True`` and the output is MONAI's bit for bit (``tests/test_torch_unet.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_DROPOUT = {2: nn.Dropout2d, 3: nn.Dropout3d}


def _conv(dims: int, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
          bias: bool = False) -> nn.Sequential:
    """MONAI's ``get_conv_layer``: a ``Convolution`` with ``conv_only`` (a Sequential holding ``conv``)."""
    block = nn.Sequential()
    block.add_module("conv", _CONV[dims](in_channels, out_channels, kernel_size=kernel_size, stride=stride,
                                         padding=(kernel_size - 1) // 2, bias=bias))
    return block


class ResBlock(nn.Module):
    """MONAI's SegResNet ``ResBlock``: norm, ReLU, conv, norm, ReLU, conv, plus the input (in place)."""

    def __init__(self, dims: int, channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups=groups, num_channels=channels)
        self.norm2 = nn.GroupNorm(num_groups=groups, num_channels=channels)
        self.act = nn.ReLU(inplace=True)
        self.conv1 = _conv(dims, channels, channels)
        self.conv2 = _conv(dims, channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        x = self.conv1(self.act(self.norm1(x)))
        x = self.conv2(self.act(self.norm2(x)))
        x += identity
        return x


class TorchSegResNet(nn.Module):
    """``monai.networks.nets.SegResNet`` with its default norm, activation and upsampling."""

    def __init__(self, spatial_dims: int = 3, init_filters: int = 8, in_channels: int = 1, out_channels: int = 2,
                 dropout_prob: float | None = None, num_groups: int = 8, blocks_down: Sequence[int] = (1, 2, 2, 4),
                 blocks_up: Sequence[int] = (1, 1, 1)) -> None:
        super().__init__()
        dims, filters = spatial_dims, init_filters
        self.dropout_prob = dropout_prob
        self.act_mod = nn.ReLU(inplace=True)  # registered first and shared with conv_final, as MONAI's
        self.convInit = _conv(dims, in_channels, filters)
        self.down_layers = nn.ModuleList()
        for level, count in enumerate(blocks_down):
            channels = filters * 2**level
            first: nn.Module = _conv(dims, channels // 2, channels, stride=2) if level > 0 else nn.Identity()
            self.down_layers.append(nn.Sequential(first, *[ResBlock(dims, channels, num_groups)
                                                           for _ in range(count)]))
        self.up_layers, self.up_samples = nn.ModuleList(), nn.ModuleList()
        levels = len(blocks_up)
        for level in range(levels):
            channels = filters * 2 ** (levels - level)
            self.up_layers.append(nn.Sequential(*[ResBlock(dims, channels // 2, num_groups)
                                                  for _ in range(blocks_up[level])]))
            upsample = nn.Sequential()
            upsample.add_module("upsample_non_trainable", nn.Upsample(
                scale_factor=(2,) * dims, mode="trilinear" if dims == 3 else "bilinear", align_corners=False))
            self.up_samples.append(nn.Sequential(_conv(dims, channels, channels // 2, kernel_size=1), upsample))
        self.conv_final = nn.Sequential(nn.GroupNorm(num_groups=num_groups, num_channels=filters),
                                        self.act_mod, _conv(dims, filters, out_channels, kernel_size=1,
                                                                     bias=True))
        if dropout_prob is not None:
            self.dropout = _DROPOUT[dims](dropout_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convInit(x)
        if self.dropout_prob is not None:
            x = self.dropout(x)
        down = []
        for layer in self.down_layers:
            x = layer(x)
            down.append(x)
        down.reverse()
        for level, (upsample, layer) in enumerate(zip(self.up_samples, self.up_layers, strict=True)):
            x = upsample(x) + down[level + 1]
            x = layer(x)
        out: torch.Tensor = self.conv_final(x)
        return out
