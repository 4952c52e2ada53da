"""Test-time augmentation (TTA): the network run on flipped copies of its input, the outputs flipped back.

Flips are taken on the spatial axes a plugin declares safe (:meth:`mitk.plugin.TaskPlugin.tta_axes`), in every
combination, as nnU-Net mirrors: three axes give 8 passes (the plain one included), one axis 2. An axis of
length 1 (the slice axis of a 2-D image) is left out: flipping it changes nothing. Averaging the passes is the
caller's (:mod:`mitk.runner.ensemble`). This module names no task.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

Flip = tuple[int, ...]
"""Spatial axes flipped in one pass (0 = the first spatial axis after the channel); ``()`` is the plain pass."""


def flips(axes: Sequence[int], spatial_shape: Sequence[int] | None = None) -> list[Flip]:
    """Every combination of ``axes`` (the plain pass first), leaving out axes of length 1 in ``spatial_shape``
    and axes beyond it; ``axes=()`` gives the plain pass alone."""
    usable = sorted({int(axis) for axis in axes
                     if spatial_shape is None or (0 <= int(axis) < len(spatial_shape)
                                                   and int(spatial_shape[int(axis)]) > 1)})
    return [combination for size in range(len(usable) + 1)
            for combination in itertools.combinations(usable, size)]


def tensor_dims(flip: Flip, leading: int) -> list[int]:
    """``flip``'s spatial axes as the dimensions of a tensor with ``leading`` non-spatial axes (batch, channel)."""
    return [leading + axis for axis in flip]


def passes(members: int, flip_sets: Sequence[Flip]) -> Iterator[tuple[int, Flip]]:
    """(member index, flip) for every pass: each member with each flip."""
    for member in range(members):
        for flip in flip_sets:
            yield member, flip
