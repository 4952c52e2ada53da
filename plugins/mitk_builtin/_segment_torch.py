"""The segmentation networks' inference preprocessing without MONAI: orientation and intensity, the same numbers.

``inference_transforms`` of ``unet``/``segresnet``/``swinunetr`` is MONAI's ``Orientationd`` then
``ScaleIntensityRanged`` (CT) or :class:`ZScoreNonzerod` (MR). When no spacing change is asked for,
:class:`TorchPreprocessing` does the same with torch and nibabel's orientation helpers — the same flip and
permute of the same tensor (``torch.flip`` then a permuted view, as MONAI's ``orientation``), the same intensity
arithmetic in the same order — so the network sees bit for bit the same input, and ``mitk segment`` runs without
importing MONAI (``tests/test_torch_unet.py``). It takes the runner's :class:`~mitk.runner.tensors.AffineTensor`;
given anything else (a ``MetaTensor`` from other code) it runs MONAI's own transforms. A spacing change, an
orientation code nibabel does not read as three axes, or an unknown intensity mode build MONAI's transforms
instead (``_segment_networks``), which behave as before. ``MITK_TORCH_INFERENCE=0`` always builds MONAI's.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import numpy as np
import torch

from mitk.env import env_flag
from mitk.runner.tensors import AffineTensor

RAS_AXIS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
"""Axis letters for ``orientation`` codes in the RAS+ world the affines live in."""
KEEP = (None, "keep", "none", "")


def torch_inference() -> bool:
    """Whether MONAI-free inference pieces may be built (``MITK_TORCH_INFERENCE``, default on)."""
    return env_flag("MITK_TORCH_INFERENCE", default=True)


def zscore_nonzero_(channels: torch.Tensor) -> torch.Tensor:
    """Normalise each channel of a float tensor in place over its non-zero voxels; returns it.

    The numbers of MONAI's ``NormalizeIntensityd(nonzero=True, channel_wise=True)`` (population standard
    deviation, a zero deviation divides by 1, zeros stay zero) without its boolean-mask gathers and scatters.
    """
    for channel in channels:
        mask = channel != 0
        count = int(torch.count_nonzero(mask))
        if count == 0:
            continue
        channel.sub_(float(channel.sum()) / count).masked_fill_(~mask, 0.0)  # zeros add nothing to the sum
        std = float(torch.linalg.vector_norm(channel)) / count ** 0.5  # two-pass: centred before squaring
        channel.div_(std or 1.0)
    return channels


def scale_intensity_range(image: torch.Tensor, a_min: float, a_max: float, b_min: float, b_max: float
                          ) -> torch.Tensor:
    """MONAI's ``ScaleIntensityRange(a_min, a_max, b_min, b_max, clip=True)``, op for op, as float32."""
    if a_max - a_min == 0.0:
        warnings.warn("Divide by zero (a_min == a_max)", Warning, stacklevel=2)
        return (image - a_min + b_min).to(torch.float32)
    image = (image - a_min) / (a_max - a_min)
    image = image * (b_max - b_min) + b_min
    return torch.clamp(image, b_min, b_max).to(torch.float32)


def orientation_transform(affine: np.ndarray, spatial_shape: tuple[int, ...], axcodes: str
                          ) -> tuple[list[int], list[int], np.ndarray]:
    """For MONAI's ``Orientation(axcodes, labels=RAS_AXIS_LABELS)``: the channel-first tensor dims to flip, the
    permutation that follows, and the voxel transform the affine is multiplied by (nibabel's ``inv_ornt_aff``)."""
    from nibabel import orientations

    source = orientations.io_orientation(affine)
    target = orientations.axcodes2ornt(axcodes[: len(spatial_shape)], labels=RAS_AXIS_LABELS)
    spatial = orientations.ornt_transform(source, target)
    xform = orientations.inv_ornt_aff(spatial, spatial_shape)
    spatial[:, 0] += 1  # skip the channel dim
    full = np.concatenate([np.array([[0, 1]]), spatial])
    flips = [axis for axis, flip in enumerate(full[:, 1]) if flip == -1]
    permutation = np.arange(len(spatial_shape) + 1)
    permutation[: len(full)] = np.argsort(full[:, 0])
    return flips, [int(p) for p in permutation], xform


def reorient(image: AffineTensor, axcodes: str) -> AffineTensor:
    """``image`` with its axes flipped and permuted to ``axcodes``, as MONAI's ``orientation`` does."""
    tensor = image.tensor
    flips, permutation, xform = orientation_transform(image.affine, tuple(int(n) for n in tensor.shape[1:]),
                                                      axcodes)
    if flips:
        tensor = torch.flip(tensor, dims=flips)
    if permutation != list(range(tensor.dim())):
        tensor = tensor.permute(permutation)
    return AffineTensor(tensor, image.affine @ xform)


class TorchPreprocessing:
    """Orientation then intensity, on an :class:`AffineTensor` (``{"image": ...}`` in, the same dict out)."""

    takes_affine_tensor = True
    """The runner hands it an :class:`AffineTensor` instead of a ``MetaTensor``."""

    def __init__(self, orientation: str | None, intensity: dict[str, Any], monai: Callable[[], Any]) -> None:
        self.orientation, self.intensity = orientation, intensity
        self._monai = monai
        self._built: Any = None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        image = data["image"]
        if not isinstance(image, AffineTensor):  # a MetaTensor (or other) from other code: MONAI's own
            if self._built is None:
                self._built = self._monai()
            return dict(self._built(data))
        if self.orientation is not None:
            image = reorient(image, self.orientation)
        mode = self.intensity["mode"]
        if mode == "ct":
            image = AffineTensor(scale_intensity_range(image.tensor, *self.intensity["window"]), image.affine)
        elif mode == "mr":
            tensor = image.tensor if image.tensor.dtype == torch.float32 else image.tensor.to(torch.float32)
            zscore_nonzero_(tensor)
            image = AffineTensor(tensor, image.affine)
        return {**data, "image": image}


def torch_preprocessing(config: dict[str, Any], monai: Callable[[], Any]) -> TorchPreprocessing | None:
    """:class:`TorchPreprocessing` for ``config`` when it reproduces MONAI's steps exactly, else None (the
    caller builds MONAI's). ``monai`` builds MONAI's transforms for inputs that are not an AffineTensor."""
    if not torch_inference() or config.get("spacing") not in KEEP:
        return None
    orientation = config.get("orientation")
    if orientation in KEEP:
        orientation = None
    else:
        if not isinstance(orientation, str) or len(orientation) != 3:
            return None
        from nibabel import orientations

        try:
            axes = orientations.axcodes2ornt(orientation, labels=RAS_AXIS_LABELS)[:, 0]
        except Exception:  # MONAI's transform reports it, as before
            return None
        if sorted(axes.tolist()) != [0, 1, 2]:  # e.g. "SIL" names one axis twice: left to MONAI, as before
            return None
    intensity = dict(config.get("intensity") or {})
    mode = str(intensity.get("mode", "none")).lower()
    steps: dict[str, Any] = {"mode": mode}
    if mode == "ct":
        try:
            steps["window"] = (float(intensity["a_min"]), float(intensity["a_max"]),
                               float(intensity.get("b_min", 0.0)), float(intensity.get("b_max", 1.0)))
        except (KeyError, TypeError, ValueError):
            return None
    elif mode not in ("mr", "none"):
        return None
    return TorchPreprocessing(orientation, steps, monai)
