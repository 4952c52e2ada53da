"""Run a network's few-channel convolutions with CPU kernels that suit them: same maths, same weights.

oneDNN's blocked convolution kernels pad the channel dimension to a vector width, so layers with one to four
channels at full resolution (the last layers of a U-Net) cost many times their arithmetic. Three exact rewrites
remove most of that, measured in ``docs/benchmarks.md``:

* a transposed convolution with few output channels becomes one ordinary convolution that computes every
  stride phase at once (``stride**dims × out_channels`` channels), followed by an interleaving copy;
* a 1×1 convolution to few output channels (a segmentation head) becomes one batched matrix product;
* any other ordinary convolution with few input and output channels runs in channels-last memory order.

All compute the same sums as the module they replace (differences at float32 rounding level). They apply to
inference on CPU only; set ``MITK_CPU_KERNELS=0`` to run the network untouched.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mitk.env import env_flag

#: A layer qualifies when its channels (out for transposed and 1×1, in and out for other convolutions) are at most this.
FEW_CHANNELS = 4

_CONV: dict[int, Callable[..., torch.Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_ORDINARY = (nn.Conv2d, nn.Conv3d)
_POINTWISE = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _phase_taps(kernel: int, stride: int, padding: int) -> list[list[tuple[int, int]]]:
    """For each output phase ``r`` (output index ``stride*m + r``): the (input offset, kernel tap) pairs.

    A transposed convolution sends input ``i`` through tap ``t`` to output ``stride*i + t - padding``, so output
    ``stride*m + r`` collects input ``m + (r + padding - t) / stride`` for every tap where that is an integer.
    """
    return [[((r + padding - t) // stride, t) for t in range(kernel) if (r + padding - t) % stride == 0]
            for r in range(stride)]


class PhaseConvTranspose(nn.Module):
    """A zero-padded, ungrouped, undilated transposed convolution computed as one ordinary convolution.

    Each of the ``prod(stride)`` output phases gets its own block of output channels; the blocks are then
    interleaved into the full-resolution output.
    """

    def __init__(self, module: nn.modules.conv._ConvTransposeNd) -> None:
        super().__init__()
        dims = module.weight.ndim - 2
        self.dims = dims
        self.out_channels = module.out_channels
        self.stride = tuple(int(s) for s in module.stride)
        self.padding = tuple(int(p) for p in module.padding)
        self.output_padding = tuple(int(p) for p in module.output_padding)
        self.kernel_size = tuple(int(k) for k in module.kernel_size)
        per_dim = [_phase_taps(k, s, p) for k, s, p in zip(self.kernel_size, self.stride, self.padding, strict=True)]
        self.low = tuple(min(off for phase in taps for off, _ in phase) for taps in per_dim)
        high = tuple(max(off for phase in taps for off, _ in phase) for taps in per_dim)
        self.span = tuple(h - lo + 1 for h, lo in zip(high, self.low, strict=True))
        self.phases = list(itertools.product(*[range(s) for s in self.stride]))
        weight = module.weight.detach()  # [in, out, *kernel]
        kernel = weight.new_zeros(len(self.phases), self.out_channels, module.in_channels, *self.span)
        for index, phase in enumerate(self.phases):
            for combo in itertools.product(*[per_dim[d][r] for d, r in enumerate(phase)]):
                place = tuple(off - lo for (off, _), lo in zip(combo, self.low, strict=True))
                taps = tuple(t for _, t in combo)
                into: tuple[int | slice, ...] = (index, slice(None), slice(None), *place)
                tap: tuple[int | slice, ...] = (slice(None), slice(None), *taps)
                kernel[into] = weight[tap].T
        self.register_buffer("phase_weight", kernel.flatten(0, 1).contiguous(), persistent=False)
        bias = module.bias.detach().repeat(len(self.phases)) if module.bias is not None else None
        self.register_buffer("phase_bias", bias, persistent=False)
        self.source = module  # kept for introspection (``.source.weight``); not used in forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == self.dims + 1:  # unbatched, as torch's layers accept
            return self.forward(x.unsqueeze(0)).squeeze(0)
        sizes = x.shape[2:]
        out_sizes = [(n - 1) * s - 2 * p + k + op for n, s, p, k, op in
                     zip(sizes, self.stride, self.padding, self.kernel_size, self.output_padding, strict=True)]
        counts = [[-(-(o - r) // s) for r in range(s)] for o, s in zip(out_sizes, self.stride, strict=True)]
        # symmetric padding wide enough for the lowest and the highest input offset any phase reads
        pad = [max(0, -lo, max(c) + lo + span - 1 - n) for lo, span, c, n in
               zip(self.low, self.span, counts, sizes, strict=True)]
        y = _CONV[self.dims](x, self.phase_weight, self.phase_bias, padding=pad)
        out = y.new_empty(x.shape[0], self.out_channels, *out_sizes)
        blocks = y.unflatten(1, (len(self.phases), self.out_channels))
        for index, phase in enumerate(self.phases):
            starts = [lo + p for lo, p in zip(self.low, pad, strict=True)]
            source = tuple(slice(st, st + counts[d][r]) for d, (st, r) in enumerate(zip(starts, phase, strict=True)))
            target = tuple(slice(r, None, s) for r, s in zip(phase, self.stride, strict=True))
            into: tuple[int | slice, ...] = (slice(None), slice(None), *target)
            read: tuple[int | slice, ...] = (slice(None), index, slice(None), *source)
            out[into] = blocks[read]
        return out


class PointwiseConv(nn.Module):
    """A 1×1(×1) convolution to few channels as one batched matrix product (a network's last layer, typically)."""

    def __init__(self, module: nn.modules.conv._ConvNd) -> None:
        super().__init__()
        self.conv = module  # kept for introspection; forward uses its weight as a matrix
        self.out_channels = module.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unbatched = x.dim() == self.conv.weight.dim() - 1
        if unbatched:
            x = x.unsqueeze(0)
        weight = self.conv.weight.reshape(self.out_channels, -1)
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        if self.conv.bias is None:
            out = torch.matmul(weight, flat)
        else:
            out = torch.baddbmm(self.conv.bias.view(1, -1, 1).expand(x.shape[0], -1, 1),
                                weight.expand(x.shape[0], -1, -1), flat)
        out = out.view(x.shape[0], self.out_channels, *x.shape[2:])
        return out.squeeze(0) if unbatched else out


class ChannelsLastConv(nn.Module):
    """An ordinary convolution run in channels-last order; input and output stay in the caller's order."""

    def __init__(self, module: nn.Conv2d | nn.Conv3d) -> None:
        super().__init__()
        self.format = torch.channels_last_3d if module.weight.ndim == 5 else torch.channels_last
        module.weight.data = module.weight.data.contiguous(memory_format=self.format)
        self.conv = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.contiguous(memory_format=self.format)).contiguous()


def _rewrite(module: nn.Module) -> nn.Module | None:
    plain = isinstance(module, nn.modules.conv._ConvNd) and module.groups == 1 and module.padding_mode == "zeros"
    if (plain and isinstance(module, _TRANSPOSED) and module.out_channels <= FEW_CHANNELS
            and all(d == 1 for d in module.dilation) and isinstance(module.padding, tuple)):
        return PhaseConvTranspose(module)
    if (plain and isinstance(module, _POINTWISE) and module.out_channels <= FEW_CHANNELS
            and all(k == 1 for k in module.kernel_size) and all(s == 1 for s in module.stride)
            and module.padding in ("valid", (0,) * len(module.kernel_size))):
        return PointwiseConv(module)
    if plain and isinstance(module, _ORDINARY) and max(module.in_channels, module.out_channels) <= FEW_CHANNELS:
        return ChannelsLastConv(module)
    return None


def apply_cpu_kernels(network: nn.Module) -> int:
    """Swap qualifying layers of an inference network in place; returns how many were swapped."""
    if not env_flag("MITK_CPU_KERNELS", default=True):
        return 0
    swapped = 0
    for parent in list(network.modules()):
        if isinstance(parent, (PhaseConvTranspose, PointwiseConv, ChannelsLastConv, torch.jit.ScriptModule)):
            continue
        for name, child in list(parent.named_children()):
            replacement = _rewrite(child)
            if replacement is not None:
                setattr(parent, name, replacement)
                swapped += 1
    return swapped
