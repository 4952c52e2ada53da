"""Images to tensors and back: the conversions every task runner and training recipe shares."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mitk.image import Image


def to_meta_tensor(image: Image) -> Any:
    """The image as a channel-first float32 MONAI ``MetaTensor`` carrying its RAS affine."""
    from monai.data import MetaTensor

    array = image.array if image.array.ndim == 4 else image.array[..., None]
    # Keep the source's memory order (NIfTI is Fortran-ordered): a cast, not a transposing copy.
    values = np.asarray(array).astype(np.float32, order="K", copy=True)
    if any(stride < 0 for stride in values.strides):
        values = np.ascontiguousarray(values)
    tensor = torch.from_numpy(np.moveaxis(values, -1, 0))
    return MetaTensor(tensor, affine=torch.as_tensor(image.affine, dtype=torch.float64))


def network_batch(meta: Any, device: torch.device | str) -> torch.Tensor:
    """A preprocessed channel-first ``MetaTensor`` as a plain one-item batch on ``device``."""
    tensor = meta.as_tensor() if hasattr(meta, "as_tensor") else torch.as_tensor(meta)
    return tensor.unsqueeze(0).to(device)
