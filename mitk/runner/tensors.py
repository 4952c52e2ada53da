"""Images to tensors and back: the conversions every task runner and training recipe shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mitk.image import Image


@dataclass
class AffineTensor:
    """A channel-first tensor with its RAS affine: what a MONAI ``MetaTensor`` carries into inference, for
    preprocessing that runs without MONAI (a plugin's transforms with ``takes_affine_tensor = True``)."""

    tensor: torch.Tensor
    affine: np.ndarray
    """4×4 float64, voxel indices → RAS mm."""

    def as_tensor(self) -> torch.Tensor:
        """The plain tensor, as ``MetaTensor.as_tensor()``."""
        return self.tensor


def _channel_first(image: Image) -> torch.Tensor:
    array = image.array if image.array.ndim == 4 else image.array[..., None]
    # Keep the source's memory order (NIfTI is Fortran-ordered): a cast, not a transposing copy.
    values = np.asarray(array).astype(np.float32, order="K", copy=True)
    if any(stride < 0 for stride in values.strides):
        values = np.ascontiguousarray(values)
    return torch.from_numpy(np.moveaxis(values, -1, 0))


def to_meta_tensor(image: Image) -> Any:
    """The image as a channel-first float32 MONAI ``MetaTensor`` carrying its RAS affine."""
    from monai.data import MetaTensor

    return MetaTensor(_channel_first(image), affine=torch.as_tensor(image.affine, dtype=torch.float64))


def to_affine_tensor(image: Image) -> AffineTensor:
    """The same values as :func:`to_meta_tensor` (same memory order), as an :class:`AffineTensor`: no MONAI."""
    return AffineTensor(_channel_first(image), np.array(image.affine, dtype=np.float64))


def network_batch(meta: Any, device: torch.device | str) -> torch.Tensor:
    """A preprocessed channel-first ``MetaTensor`` as a plain one-item batch on ``device``."""
    tensor = meta.as_tensor() if hasattr(meta, "as_tensor") else torch.as_tensor(meta)
    return tensor.unsqueeze(0).to(device)
