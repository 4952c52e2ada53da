"""Training augmentation as settings: spatial, intensity and MRI-artefact transforms from MONAI (and TorchIO
for motion and ghosting, which MONAI lacks), built from a plugin's ``augmentation`` settings.

Every entry without a unit is a probability per sample (0 turns it off; a disabled augmentation adds no
transform, so the training input is exactly the preprocessed patch). ``bias_field: "auto"`` is on (0.3) for MR
(a segmentation plugin's ``intensity.mode: mr``) and off for CT and everything else; ``mitk plan`` sets it from
the data's modality (0.3 for MR, 0 for CT). Flips are per axis, on
the axes in ``flip_axes`` (``null``: the plugin's own choice; the classifiers never flip a 2-D image by default,
since a flipped radiograph swaps its patient's sides).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mitk.errors import PluginError

AUTO_BIAS_FIELD = 0.3
"""The ``bias_field: "auto"`` probability for MR images."""

AUGMENTATION_DEFAULTS: dict[str, Any] = {
    "flip": 0.0, "flip_axes": None,
    "rotate": 0.0, "rotate_deg": 15.0,
    "zoom": 0.0, "zoom_range": 0.15,
    "elastic": 0.0, "elastic_sigma": [5.0, 8.0], "elastic_magnitude": [50.0, 150.0],
    "intensity": 0.0, "scale": 0.1, "shift": 0.1,
    "gamma": 0.0, "gamma_range": [0.7, 1.5],
    "noise": 0.0, "noise_std": 0.05,
    "bias_field": "auto", "bias_coeff": 0.1,
    "gibbs": 0.0, "gibbs_alpha": [0.0, 0.5],
    "spike": 0.0,
    "motion": 0.0, "motion_deg": 5.0, "motion_mm": 5.0,
    "ghosting": 0.0, "ghosts": [4, 10],
}
"""The settings every augmenting plugin shares (a plugin may change the values, e.g. flip on for volumes)."""

AUGMENTATION_HELP: dict[str, str] = {
    "flip": "probability of a flip along each axis of flip_axes",
    "flip_axes": "axes that may be flipped (null: the plugin's default)",
    "rotate": "probability of a random rotation (image and label)",
    "rotate_deg": "largest rotation angle in degrees",
    "zoom": "probability of a random scaling (zoom) of image and label",
    "zoom_range": "scale by up to ±this fraction",
    "elastic": "probability of an elastic deformation (slow on the CPU)",
    "elastic_sigma": "smoothness of the elastic displacement [min, max] (voxels)",
    "elastic_magnitude": "size of the elastic displacement [min, max]",
    "intensity": "probability of a random intensity scale and shift",
    "scale": "intensity scale by up to ±this fraction",
    "shift": "intensity shift by up to ±this much (normalised units)",
    "gamma": "probability of a random gamma (contrast) change",
    "gamma_range": "gamma [min, max]",
    "noise": "probability of additive Gaussian noise",
    "noise_std": "standard deviation of that noise (normalised units)",
    "bias_field": "MRI: probability of a smooth multiplicative bias field; \"auto\": 0.3 for MR, 0 otherwise",
    "bias_coeff": "largest bias-field polynomial coefficient",
    "gibbs": "MRI: probability of Gibbs ringing (k-space truncation)",
    "gibbs_alpha": "ringing strength [min, max], 0..1",
    "spike": "MRI: probability of a k-space spike (herringbone artefact)",
    "motion": "MRI: probability of a motion artefact (TorchIO RandomMotion; extra mitk[augment])",
    "motion_deg": "largest rotation of each simulated movement (degrees)",
    "motion_mm": "largest translation of each simulated movement (mm)",
    "ghosting": "MRI: probability of ghosting along the phase-encoding axis (TorchIO RandomGhosting)",
    "ghosts": "number of ghosts [min, max]",
}

AUGMENTATION_SCHEMA: dict[str, tuple[type | None, ...]] = {
    "augmentation.flip_axes": (list, None),
    "augmentation.bias_field": (str, float, int),
}
"""Settings types that the defaults cannot show (for a plugin's ``settings_schema``)."""


def _probability(settings: Mapping[str, Any], name: str, modality: str | None = None) -> float:
    value = settings.get(name, AUGMENTATION_DEFAULTS.get(name, 0.0))
    if value == "auto" and name == "bias_field":
        return AUTO_BIAS_FIELD if (modality or "").upper() == "MR" else 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise PluginError(f"augmentation.{name} must be a probability from 0 to 1, got {value!r}")
    return float(value)


def _pair(settings: Mapping[str, Any], name: str) -> tuple[float, float]:
    value = settings.get(name, AUGMENTATION_DEFAULTS[name])
    values = list(value) if isinstance(value, (list, tuple)) else [value, value]
    if len(values) != 2 or not all(isinstance(v, (int, float)) for v in values) or values[0] > values[1]:
        raise PluginError(f"augmentation.{name} must be [min, max], got {value!r}")
    return float(values[0]), float(values[1])


def _number(settings: Mapping[str, Any], name: str) -> float:
    value = settings.get(name, AUGMENTATION_DEFAULTS[name])
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise PluginError(f"augmentation.{name} must be a number of at least 0, got {value!r}")
    return float(value)


def spatial_steps(settings: Mapping[str, Any], *, keys: Sequence[str], modes: Sequence[str], dims: int,
                  flip_axes: Sequence[int], padding: str = "zeros") -> list[Any]:
    """Flips, rotation, zoom and elastic deformation, applied alike to every key (``modes``: their
    interpolation, e.g. bilinear for the image, nearest for a label map); ``padding``: zeros or border."""
    import math

    from monai.transforms import Rand2DElasticd, Rand3DElasticd, RandFlipd, RandRotated, RandZoomd

    keys, modes = tuple(keys), tuple(modes)
    steps: list[Any] = []
    flip = _probability(settings, "flip")
    axes = settings.get("flip_axes")
    axes = list(flip_axes) if axes is None else axes
    if not isinstance(axes, list) or not all(isinstance(a, int) and 0 <= a < dims for a in axes):
        raise PluginError(f"augmentation.flip_axes must list axes 0..{dims - 1}, got {axes!r}")
    if flip > 0:
        steps += [RandFlipd(keys=keys, prob=flip, spatial_axis=axis) for axis in axes]
    rotate = _probability(settings, "rotate")
    if rotate > 0:
        angle = math.radians(_number(settings, "rotate_deg"))
        ranges: dict[str, Any] = ({"range_x": angle} if dims == 2
                                  else {"range_x": angle, "range_y": angle, "range_z": angle})
        steps.append(RandRotated(keys=keys, prob=rotate, mode=modes, padding_mode=padding, **ranges))
    zoom = _probability(settings, "zoom")
    if zoom > 0:
        spread = _number(settings, "zoom_range")
        steps.append(RandZoomd(keys=keys, prob=zoom, min_zoom=1.0 - spread, max_zoom=1.0 + spread,
                               mode=[{"bilinear": "trilinear" if dims == 3 else "bilinear"}.get(m, m)
                                     for m in modes], keep_size=True,
                               padding_mode="edge" if padding == "border" else "constant"))
    elastic = _probability(settings, "elastic")
    if elastic > 0:
        sigma, magnitude = _pair(settings, "elastic_sigma"), _pair(settings, "elastic_magnitude")
        if dims == 3:
            steps.append(Rand3DElasticd(keys=keys, prob=elastic, sigma_range=sigma, magnitude_range=magnitude,
                                        mode=modes, padding_mode=padding))
        else:
            steps.append(Rand2DElasticd(keys=keys, prob=elastic, spacing=sigma, magnitude_range=magnitude,
                                        mode=modes, padding_mode=padding))
    return steps


def intensity_steps(settings: Mapping[str, Any], *, key: str = "image", modality: str | None = None) -> list[Any]:
    """Scale/shift, gamma and noise, then the MRI artefacts: bias field, Gibbs ringing, k-space spikes,
    motion and ghosting (the last two from TorchIO)."""
    from monai.transforms import (
        RandAdjustContrastd,
        RandBiasFieldd,
        RandGaussianNoised,
        RandGibbsNoised,
        RandKSpaceSpikeNoised,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    steps: list[Any] = []
    intensity = _probability(settings, "intensity")
    if intensity > 0:
        steps += [RandScaleIntensityd(keys=key, factors=_number(settings, "scale"), prob=intensity),
                  RandShiftIntensityd(keys=key, offsets=_number(settings, "shift"), prob=intensity)]
    gamma = _probability(settings, "gamma")
    if gamma > 0:
        steps.append(RandAdjustContrastd(keys=key, prob=gamma, gamma=_pair(settings, "gamma_range")))
    noise = _probability(settings, "noise")
    if noise > 0:
        steps.append(RandGaussianNoised(keys=key, prob=noise, std=_number(settings, "noise_std")))
    bias = _probability(settings, "bias_field", modality)
    if bias > 0:
        coefficient = _number(settings, "bias_coeff")
        steps.append(RandBiasFieldd(keys=key, prob=bias, coeff_range=(0.0, coefficient)))
    gibbs = _probability(settings, "gibbs")
    if gibbs > 0:
        steps.append(RandGibbsNoised(keys=key, prob=gibbs, alpha=_pair(settings, "gibbs_alpha")))
    spike = _probability(settings, "spike")
    if spike > 0:
        steps.append(RandKSpaceSpikeNoised(keys=key, prob=spike))
    motion, ghosting = _probability(settings, "motion"), _probability(settings, "ghosting")
    if motion > 0 or ghosting > 0:
        from mitk.extras import require_module

        require_module("torchio", "augmentation.motion and augmentation.ghosting")
        import torchio

        if motion > 0:
            steps.append(TorchIOd(key, torchio.RandomMotion(degrees=_number(settings, "motion_deg"),
                                                            translation=_number(settings, "motion_mm"),
                                                            p=motion)))
        if ghosting > 0:
            low, high = _pair(settings, "ghosts")
            steps.append(TorchIOd(key, torchio.RandomGhosting(num_ghosts=(int(low), int(high)), p=ghosting)))
    return steps


class TorchIOd:
    """A TorchIO transform applied to ``data[key]`` (channel first, 2-D or 3-D), keeping MONAI's metadata."""

    def __init__(self, key: str, transform: Any) -> None:
        self.key = key
        self.transform = transform

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        import torch

        result = dict(data)
        image = data[self.key]
        tensor = torch.as_tensor(image).float()
        flat = tensor.ndim == 3  # (C, H, W): TorchIO wants a third spatial axis
        changed = self.transform(tensor[..., None] if flat else tensor)
        changed = torch.as_tensor(changed[..., 0] if flat else changed).to(tensor.dtype)
        if hasattr(image, "copy_meta_from"):
            from monai.data import MetaTensor

            changed = MetaTensor(changed, meta=image.meta, applied_operations=image.applied_operations)
        result[self.key] = changed
        return result
