"""Run a network's convolutions with the CPU kernels that suit them: same maths, same weights.

oneDNN's blocked convolution kernels pad the channel dimension to a vector width, so layers with one to four
channels at full resolution (the last layers of a U-Net) cost many times their arithmetic. The other way
round, torch sends a single 3-D image's convolution with few input values per depth plane
(``N·C·D·H ≤ 20480``, the deep layers of a U-Net or a 3-D DenseNet) to its naive ``vol2col`` kernel, which is
3–12× slower there than oneDNN's. Four exact rewrites remove most of that, measured in ``docs/benchmarks.md``:

* a transposed convolution with few output channels becomes one ordinary convolution that computes every
  stride phase at once (``stride**dims × out_channels`` channels), followed by an interleaving copy;
* a 1×1 convolution to few output channels (a segmentation head) becomes one batched matrix product;
* any other ordinary convolution with few input and output channels runs in channels-last memory order (a 3-D
  one with a kernel larger than 1×1×1 through oneDNN's convolution, as below: torch sends a small batch-1 volume
  to its naive kernel, whose 2→2-channel 64³ convolution alone took 70 % of a small U-Net's pass, ten times
  oneDNN's time, and faults in a fresh 56 MB buffer on every call);
* any other 3-D convolution with a kernel larger than 1×1×1 runs oneDNN's convolution
  (``torch.mkldnn_convolution``, the kernel torch itself picks for larger inputs), for float32 inputs while
  oneDNN is available and enabled (``torch.backends.mkldnn``);
* a 3-D max pooling runs in channels-last order, whose kernel is vectorised over channels (the maximum is
  exact: the output is bit for bit torch's, NaN and infinities included).

The rule, which keeps a rewritten network's outputs those of the untouched one up to float32 rounding:

* only layers whose type *is* one of torch's convolutions are rewritten (``type(m) is nn.Conv3d``; no subclass,
  which may change the maths, e.g. weight standardisation), ungrouped, ``padding_mode="zeros"``, transposed ones
  undilated, and only while they carry no hook of their own (forward, pre-forward, backward, state-dict or
  load-state-dict) and no parametrization (``weight_norm``, old and new, is one or the other);
* the layer stays where it is, the same object with the same parameters: only its ``forward`` is replaced (an
  instance attribute, :class:`CpuKernel`). ``state_dict`` keys, ``load_state_dict`` and hooks registered later
  (its own or torch's global module hooks) work as before, since ``nn.Module.__call__`` runs them around it;
* the kernel reads the layer's weights, bias and settings on every call, so later weight changes (in place,
  ``load_state_dict``) apply; the transposed convolution's phase weight is gathered from the weight per call
  (one indexing op, microseconds next to the convolution's milliseconds);
* ``output_size=`` to a transposed convolution is honoured exactly; a call on a non-CPU tensor, or after the
  layer's settings changed so that it no longer qualifies, runs torch's own ``forward``.

They apply to inference on CPU only (``load_model``, unless the plugin sets ``cpu_kernels = False``); set
``MITK_CPU_KERNELS=0`` to run the network untouched.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any

import torch
import torch.autograd.forward_ad as forward_ad
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from mitk.env import env_flag

#: A layer qualifies when its channels (out for transposed and 1×1, in and out for other convolutions) are at most this.
FEW_CHANNELS = 4

_CONV: dict[int, Callable[..., torch.Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_ORDINARY = (nn.Conv2d, nn.Conv3d)
_POINTWISE = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: Per-module hook tables; a layer with an entry in any of them is left alone.
_HOOK_TABLES = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
                "_load_state_dict_post_hooks")

PHASE, POINTWISE, CHANNELS_LAST, ONEDNN, MAX_POOL = ("phase-transposed", "pointwise", "channels-last", "onednn",
                                                     "channels-last-max-pool")


def _phase_taps(kernel: int, stride: int, padding: int) -> list[list[tuple[int, int]]]:
    """For each output phase ``r`` (output index ``stride*m + r``): the (input offset, kernel tap) pairs.

    A transposed convolution sends input ``i`` through tap ``t`` to output ``stride*i + t - padding``, so output
    ``stride*m + r`` collects input ``m + (r + padding - t) / stride`` for every tap where that is an integer.
    """
    return [[((r + padding - t) // stride, t) for t in range(kernel) if (r + padding - t) % stride == 0]
            for r in range(stride)]


class _PhaseGeometry:
    """Where each kernel tap of a transposed convolution lands in the phase convolution's kernel."""

    def __init__(self, kernel_size: tuple[int, ...], stride: tuple[int, ...], padding: tuple[int, ...]) -> None:
        per_dim = [_phase_taps(k, s, p) for k, s, p in zip(kernel_size, stride, padding, strict=True)]
        self.low = tuple(min(off for phase in taps for off, _ in phase) for taps in per_dim)
        high = tuple(max(off for phase in taps for off, _ in phase) for taps in per_dim)
        self.span = tuple(h - lo + 1 for h, lo in zip(high, self.low, strict=True))
        self.phases = list(itertools.product(*[range(s) for s in stride]))
        taps = 1
        for k in kernel_size:
            taps *= k
        # flat kernel tap per (phase, *span) place; ``taps`` (one past the last) stands for a zero
        index = torch.full((len(self.phases), *self.span), taps, dtype=torch.long)
        for p, phase in enumerate(self.phases):
            for combo in itertools.product(*[per_dim[d][r] for d, r in enumerate(phase)]):
                place = tuple(off - lo for (off, _), lo in zip(combo, self.low, strict=True))
                flat = 0
                for (_, t), k in zip(combo, kernel_size, strict=True):
                    flat = flat * k + t
                at: tuple[int, ...] = (p, *place)
                index[at] = flat
        self.index = index.flatten()

    def weight(self, weight: torch.Tensor) -> torch.Tensor:
        """The phase convolution's weight ``[phases*out, in, *span]`` from a transposed one ``[in, out, *kernel]``.

        One ``index_select`` and one copy, ~50 µs for MONAI UNet's 32→2 layer (whose convolution takes ~10-40 ms),
        so it is derived on every call rather than cached, and cannot go stale.
        """
        flat = F.pad(weight.flatten(2), (0, 1))  # [in, out, taps + 1], the last one zero
        gathered = flat.index_select(2, self.index.to(weight.device))
        gathered = gathered.unflatten(2, (len(self.phases), *self.span))  # [in, out, phases, *span]
        return gathered.permute(2, 1, 0, *range(3, gathered.dim())).flatten(0, 1).contiguous()


@functools.lru_cache(maxsize=64)
def _geometry(kernel_size: tuple[int, ...], stride: tuple[int, ...], padding: tuple[int, ...]) -> _PhaseGeometry:
    return _PhaseGeometry(kernel_size, stride, padding)


def _phase_transposed(module: nn.modules.conv._ConvTransposeNd, x: torch.Tensor,
                      output_size: list[int] | None) -> torch.Tensor:
    """``module(x, output_size)`` computed as one ordinary convolution over all stride phases, then interleaved."""
    dims = module.weight.dim() - 2
    if x.dim() == dims + 1:  # unbatched, as torch's layers accept
        if output_size is not None and len(output_size) == dims + 1:
            output_size = list(output_size)[1:]
        return _phase_transposed(module, x.unsqueeze(0), output_size).squeeze(0)
    stride, padding = tuple(int(s) for s in module.stride), tuple(int(p) for p in module.padding)
    kernel_size = tuple(int(k) for k in module.kernel_size)
    output_padding = module._output_padding(x, output_size, list(stride), list(padding), list(kernel_size), dims,
                                            list(module.dilation))
    geometry = _geometry(kernel_size, stride, padding)
    out_channels, phases = module.out_channels, len(geometry.phases)
    sizes = x.shape[2:]
    out_sizes = [(n - 1) * s - 2 * p + k + op for n, s, p, k, op in
                 zip(sizes, stride, padding, kernel_size, output_padding, strict=True)]
    counts = [[-(-(o - r) // s) for r in range(s)] for o, s in zip(out_sizes, stride, strict=True)]
    # symmetric padding wide enough for the lowest and the highest input offset any phase reads
    pad = [max(0, -lo, max(c) + lo + span - 1 - n) for lo, span, c, n in
           zip(geometry.low, geometry.span, counts, sizes, strict=True)]
    bias = module.bias.repeat(phases) if module.bias is not None else None
    y = _CONV[dims](x, geometry.weight(module.weight), bias, padding=pad)
    out = y.new_empty(x.shape[0], out_channels, *out_sizes)
    blocks = y.unflatten(1, (phases, out_channels))
    starts = [lo + p for lo, p in zip(geometry.low, pad, strict=True)]
    for index, phase in enumerate(geometry.phases):
        source = tuple(slice(st, st + counts[d][r]) for d, (st, r) in enumerate(zip(starts, phase, strict=True)))
        target = tuple(slice(r, None, s) for r, s in zip(phase, stride, strict=True))
        into: tuple[int | slice, ...] = (slice(None), slice(None), *target)
        read: tuple[int | slice, ...] = (slice(None), index, slice(None), *source)
        out[into] = blocks[read]
    return out


def _pointwise(module: nn.modules.conv._ConvNd, x: torch.Tensor) -> torch.Tensor:
    """A 1×1(×1) convolution to few channels as one batched matrix product (a network's last layer, typically)."""
    unbatched = x.dim() == module.weight.dim() - 1
    if unbatched:
        x = x.unsqueeze(0)
    weight = module.weight.reshape(module.out_channels, -1)
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    if module.bias is None:
        out = torch.matmul(weight, flat)
    else:
        out = torch.baddbmm(module.bias.view(1, -1, 1).expand(x.shape[0], -1, 1),
                            weight.expand(x.shape[0], -1, -1), flat)
    out = out.view(x.shape[0], module.out_channels, *x.shape[2:])
    return out.squeeze(0) if unbatched else out


def _channels_last(module: nn.Conv2d | nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """An ordinary convolution run in channels-last order; input and output stay in the caller's order."""
    layout = torch.channels_last_3d if module.weight.dim() == 5 else torch.channels_last
    if x.dim() != module.weight.dim():  # unbatched: no channels-last layout for it
        return module._conv_forward(x, module.weight, module.bias)
    weight = module.weight.contiguous(memory_format=layout)
    return module._conv_forward(x.contiguous(memory_format=layout), weight, module.bias).contiguous()


def _onednn(module: nn.Conv3d, x: torch.Tensor, channels_last: bool = False) -> torch.Tensor | None:
    """A 3-D convolution through oneDNN, or None where oneDNN does not take the input (the caller runs torch's).
    ``channels_last``: input and weight in channels-last order (oneDNN's fast layout for few channels), the
    output back in the caller's contiguous order."""
    if (x.dtype != torch.float32 or module.weight.dtype != torch.float32 or x.layout != torch.strided
            or x.dim() not in (4, 5) or not torch.backends.mkldnn.is_available() or not torch.backends.mkldnn.enabled
            or (module.bias is not None and module.bias.dtype != torch.float32)
            or torch.is_autocast_enabled("cpu")  # autocast casts torch's convolutions, not this one
            or any(forward_ad.unpack_dual(t).tangent is not None for t in (x, module.weight))):  # no forward AD
        return None
    unbatched = x.dim() == 4
    if unbatched:
        x = x.unsqueeze(0)
    padding = module.padding
    assert isinstance(padding, tuple)  # kernel_kind checked it
    weight = module.weight
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
        weight = weight.contiguous(memory_format=torch.channels_last_3d)
    out = torch.mkldnn_convolution(x, weight, module.bias, list(padding), list(module.stride),
                                   list(module.dilation), module.groups)
    if channels_last:
        out = out.contiguous()
    return out.squeeze(0) if unbatched else out


def _max_pool(module: nn.MaxPool3d, x: torch.Tensor) -> torch.Tensor:
    """A 3-D max pooling in channels-last order; the output in the caller's (contiguous) order."""
    if x.dim() != 5 or not x.is_contiguous():  # unbatched, or already in another order: torch's own
        return F.max_pool3d(x, module.kernel_size, module.stride, module.padding, module.dilation,
                            ceil_mode=module.ceil_mode)
    out = F.max_pool3d(x.contiguous(memory_format=torch.channels_last_3d), module.kernel_size, module.stride,
                       module.padding, module.dilation, ceil_mode=module.ceil_mode)
    return out.contiguous()


def kernel_kind(module: nn.Module) -> str | None:
    """Which rewrite suits ``module`` as it is now configured (type and settings only, not hooks), or None."""
    kind = type(module)
    if kind is nn.MaxPool3d:
        assert isinstance(module, nn.MaxPool3d)
        return None if module.return_indices else MAX_POOL
    if kind not in _TRANSPOSED and kind not in _POINTWISE:
        return None
    assert isinstance(module, nn.modules.conv._ConvNd)
    if module.groups != 1 or module.padding_mode != "zeros":
        return None
    if kind in _TRANSPOSED:
        if (module.out_channels <= FEW_CHANNELS and all(d == 1 for d in module.dilation)
                and isinstance(module.padding, tuple)
                and all(op < s for op, s in zip(module.output_padding, module.stride, strict=True))):
            return PHASE
        return None
    if (module.out_channels <= FEW_CHANNELS and all(k == 1 for k in module.kernel_size)
            and all(s == 1 for s in module.stride) and module.padding in ("valid", (0,) * len(module.kernel_size))):
        return POINTWISE
    if kind in _ORDINARY and max(module.in_channels, module.out_channels) <= FEW_CHANNELS:
        return CHANNELS_LAST
    if kind is nn.Conv3d and any(k > 1 for k in module.kernel_size) and isinstance(module.padding, tuple):
        return ONEDNN
    return None


def _untouched(module: nn.Module) -> bool:
    """No hooks of its own, no parametrization, no ``forward`` set on the instance (by us or anyone else)."""
    return (not any(getattr(module, table, None) for table in _HOOK_TABLES)
            and not parametrize.is_parametrized(module) and "forward" not in vars(module))


class CpuKernel:
    """A convolution layer's replacement ``forward``: the CPU kernel for its ``kind``, reading the layer's current
    weights and settings on each call, or torch's own ``forward`` when the layer no longer qualifies."""

    def __init__(self, module: nn.modules.conv._ConvNd | nn.MaxPool3d, kind: str) -> None:
        self.module = module
        self.kind = kind

    def __call__(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        module = self.module
        if input.device.type != "cpu" or kernel_kind(module) != self.kind:
            return self.original(input, output_size)
        if self.kind == PHASE:
            assert isinstance(module, nn.modules.conv._ConvTransposeNd)
            return _phase_transposed(module, input, output_size)
        if output_size is not None:  # not a parameter of an ordinary convolution: let torch say so
            return self.original(input, output_size)
        if self.kind == MAX_POOL:
            assert isinstance(module, nn.MaxPool3d)
            return _max_pool(module, input)
        if self.kind == POINTWISE:
            assert isinstance(module, nn.modules.conv._ConvNd)
            return _pointwise(module, input)
        if self.kind == ONEDNN:
            assert isinstance(module, nn.Conv3d)
            out = _onednn(module, input)
            return out if out is not None else self.original(input)
        assert isinstance(module, (nn.Conv2d, nn.Conv3d))
        if isinstance(module, nn.Conv3d) and any(k > 1 for k in module.kernel_size) and isinstance(
                module.padding, tuple):
            out = _onednn(module, input, channels_last=True)
            if out is not None:
                return out
        return _channels_last(module, input)

    def original(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        """The layer's class ``forward`` (torch's), with the arguments the caller gave."""
        forward: Any = type(self.module).forward
        if output_size is None:
            return forward(self.module, input)
        return forward(self.module, input, output_size)

    def __repr__(self) -> str:
        return f"CpuKernel({self.kind})"


def rewritten(network: nn.Module) -> dict[str, CpuKernel]:
    """The layers of ``network`` that run a CPU kernel, by qualified name."""
    return {name: m.forward for name, m in network.named_modules() if isinstance(vars(m).get("forward"), CpuKernel)}


def apply_cpu_kernels(network: nn.Module) -> int:
    """Give the qualifying layers of an inference network their CPU kernel, in place; returns how many."""
    if not env_flag("MITK_CPU_KERNELS", default=True):
        return 0
    swapped = 0
    for module in network.modules():
        kind = kernel_kind(module)
        if kind is not None and _untouched(module):
            assert isinstance(module, (nn.modules.conv._ConvNd, nn.MaxPool3d))
            module.forward = CpuKernel(module, kind)  # type: ignore[method-assign]
            swapped += 1
    return swapped
