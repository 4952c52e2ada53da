"""MONAI's sliding-window inference in plain torch, for the runner's plain-tensor batches.

:class:`SlidingWindow` does what ``monai.inferers.SlidingWindowInferer(roi_size, sw_batch_size, overlap, mode)``
does with its other settings at their defaults (constant zero padding of an image smaller than the window,
``sigma_scale`` 0.125, stitching on the input's device, no buffering) — the same windows in the same order, the
same importance map (``compute_importance_map``), the same in-place weighting, accumulation and division — so
its output is bit for bit MONAI's (``tests/test_torch_unet.py``), without importing MONAI (3–5 s of a cold
process). Anything else is handed to MONAI's own inferer, unchanged: a ``MetaTensor`` or other tensor subclass
as input (MONAI returns one with its metadata), autocast (training's validation), a network whose output is not
one tensor of the window's size.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

BLEND_MODES = ("gaussian", "constant")
SIGMA_SCALE = 0.125
"""MONAI's default: the Gaussian's standard deviation is this fraction of the window side."""


def importance_map(patch_size: Sequence[int], mode: str, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32, sigma_scale: float = SIGMA_SCALE) -> torch.Tensor:
    """MONAI's ``compute_importance_map``: ones, or a separable Gaussian clamped below at its smallest value
    (at least 1e-3)."""
    device = torch.device(device)
    if mode == "constant":
        weights = torch.ones(tuple(patch_size), device=device, dtype=torch.float)
    elif mode == "gaussian":
        sigmas = [side * sigma_scale for side in patch_size]
        for axis, side in enumerate(patch_size):
            x = torch.arange(start=-(side - 1) / 2.0, end=(side - 1) / 2.0 + 1, dtype=torch.float, device=device)
            x = torch.exp(x**2 / (-2 * sigmas[axis] ** 2))
            weights = weights.unsqueeze(-1) * x[(None,) * axis] if axis > 0 else x
    else:
        raise ValueError(f"mode must be one of {', '.join(BLEND_MODES)}, got {mode!r}")
    least = max(torch.min(weights).item(), 1e-3)
    return torch.clamp_(weights.to(torch.float), min=least).to(dtype)


def scan_interval(image_size: Sequence[int], roi_size: Sequence[int], overlap: float) -> tuple[int, ...]:
    """MONAI's ``_get_scan_interval``: ``int(roi * (1 - overlap))``, at least 1; the whole side when it fits."""
    return tuple(int(roi) if roi == size else max(int(roi * (1 - overlap)), 1)
                 for size, roi in zip(image_size, roi_size, strict=True))


def window_slices(image_size: Sequence[int], roi_size: Sequence[int], interval: Sequence[int]
                  ) -> list[tuple[slice, ...]]:
    """MONAI's ``dense_patch_slices``: window starts per axis (the last one moved back inside), in row-major
    order (the last axis fastest)."""
    starts = []
    for size, roi, step in zip(image_size, roi_size, interval, strict=True):
        count = math.ceil(float(size) / step)
        last = next((d for d in range(count) if d * step + roi >= size), None)
        starts.append([d * step - max(d * step + roi - size, 0) for d in range((last + 1) if last is not None else 1)])
    return [tuple(slice(s, s + roi) for s, roi in zip(start, roi_size, strict=True))
            for start in itertools.product(*starts)]


class _NotPlain(Exception):
    """The network's output is not what the plain path stitches: MONAI's inferer takes over."""


class SlidingWindow:
    """``SlidingWindowInferer(roi_size, sw_batch_size, overlap, mode)`` — called as ``inferer(batch, network)``."""

    def __init__(self, roi_size: Sequence[int], sw_batch_size: int = 1, overlap: float = 0.25,
                 mode: str = "constant") -> None:
        if mode not in BLEND_MODES:
            raise ValueError(f"mode must be one of {', '.join(BLEND_MODES)}, got {mode!r}")
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap must be >= 0 and < 1, got {overlap}")
        self.roi_size = tuple(int(side) for side in roi_size)
        self.sw_batch_size, self.overlap, self.mode = int(sw_batch_size), float(overlap), mode

    def monai(self) -> Any:
        """MONAI's own inferer with these settings."""
        from monai.inferers import SlidingWindowInferer

        return SlidingWindowInferer(roi_size=list(self.roi_size), sw_batch_size=self.sw_batch_size,
                                    overlap=self.overlap, mode=self.mode)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any]) -> Any:
        plain = (type(inputs) is torch.Tensor and inputs.dim() == len(self.roi_size) + 2
                 and inputs.is_floating_point() and not _autocast())
        if plain:
            try:
                return self._infer(inputs, network)
            except _NotPlain:
                pass
        return self.monai()(inputs, network)

    def _infer(self, inputs: torch.Tensor, network: Callable[..., Any]) -> torch.Tensor:
        """``monai.inferers.sliding_window_inference`` for a plain tensor and a one-tensor network, step by step."""
        dims = inputs.dim() - 2
        dtype, device = inputs.dtype, inputs.device
        batch_size, image_size_ = inputs.shape[0], [int(n) for n in inputs.shape[2:]]
        roi = tuple(r if r > 0 else n for r, n in zip(self.roi_size, image_size_, strict=True))
        image_size = tuple(max(n, r) for n, r in zip(image_size_, roi, strict=True))
        pad_size: list[int] = []
        for k in range(inputs.dim() - 1, 1, -1):  # F.pad's order: last axis first
            diff = max(roi[k - 2] - inputs.shape[k], 0)
            pad_size.extend([diff // 2, diff - diff // 2])
        if any(pad_size):
            inputs = F.pad(inputs, pad=pad_size, mode="constant", value=0.0)
        slices = window_slices(image_size, roi, scan_interval(image_size, roi, self.overlap))
        windows = len(slices)
        weights = importance_map(roi, self.mode, device=device, dtype=dtype)[None, None].to(dtype=dtype,
                                                                                                device=device)
        output: torch.Tensor | None = None
        count: torch.Tensor | None = None
        for first in range(0, windows * batch_size, self.sw_batch_size):
            chosen = range(first, min(first + self.sw_batch_size, windows * batch_size))
            places = [(slice(i // windows, i // windows + 1), slice(None), *slices[i % windows]) for i in chosen]
            # MONAI concatenates (a copy) when it may batch windows, and passes the view when it never does
            window = torch.cat([inputs[place] for place in places]) if self.sw_batch_size > 1 else inputs[places[0]]
            predicted = network(window)
            if type(predicted) is not torch.Tensor or predicted.dim() != dims + 2 \
                    or tuple(predicted.shape[2:]) != roi:
                raise _NotPlain
            if output is None or count is None:
                output = torch.zeros([batch_size, predicted.shape[1], *image_size], dtype=dtype, device=device)
                count = torch.zeros([1, 1, *image_size], dtype=dtype, device=device)
                for place in slices:
                    index: tuple[slice, ...] = (slice(None), slice(None), *place)
                    count[index] += weights
            predicted *= weights.to(dtype=dtype, device=predicted.device)
            predicted = predicted.to(device)
            for place, values in zip(places, predicted, strict=True):
                output[place] += values
        assert output is not None and count is not None, "at least one window"
        output /= count
        if any(pad_size):
            crop = [slice(pad_size[2 * (dims - 1 - axis)], pad_size[2 * (dims - 1 - axis)] + image_size_[axis])
                    for axis in range(dims)]
            cropped: tuple[slice, ...] = (slice(None), slice(None), *crop)
            output = output[cropped]
        return output


def _autocast() -> bool:
    """Autocast on any device: MONAI's inferer runs then (training's validation), as before."""
    checks = [torch.is_autocast_enabled()]
    for device in ("cpu", "cuda"):
        with contextlib.suppress(TypeError):  # torch < 2.4 takes no device
            checks.append(torch.is_autocast_enabled(device))
    return any(checks)
