"""Training patches for the ``retinanet`` detector, and its plan from the data (nnDetection's idea, at CPU scale).

* :class:`RandBoxPatches` — ``num_samples`` patches per case, a share ``positive_fraction`` of them centred on a
  random box with a random shift that keeps the box inside the patch (so small lesions are in most patches),
  the rest anywhere; boxes move with the patch, those whose centre falls outside are dropped, the others clipped.
* :func:`plan` — the network grid spacing and the anchor shapes from the training boxes' sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable


def crop_boxes(boxes: np.ndarray, labels: np.ndarray, start: np.ndarray, size: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (``x0 .. x1`` extents, voxel centres at integers) in a patch starting at voxel ``start``: shifted,
    those whose centre lies outside dropped, the others clipped to the patch's extent."""
    dims = len(start)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 2 * dims)
    shifted = boxes - np.concatenate([start, start]).astype(np.float32)
    centres = (shifted[:, :dims] + shifted[:, dims:]) / 2
    keep = np.all((centres >= -0.5) & (centres <= size - 0.5), axis=1)
    shifted = shifted[keep]
    low, high = np.full(dims, -0.5, np.float32), (size - 0.5).astype(np.float32)
    shifted[:, :dims] = np.clip(shifted[:, :dims], low, high)
    shifted[:, dims:] = np.clip(shifted[:, dims:], low, high)
    return shifted, np.asarray(labels)[keep]


def patch_start(shape: np.ndarray, size: np.ndarray, box: np.ndarray | None, rng: np.random.RandomState
                ) -> np.ndarray:
    """A patch origin: anywhere, or (``box`` given) such that the box lies inside the patch at a random place
    (its centre anywhere when the box is larger than the patch)."""
    dims = len(shape)
    if box is None:
        return np.array([rng.randint(0, max(1, n - s + 1)) for n, s in zip(shape, size, strict=True)])
    low, high = box[:dims], box[dims:]
    # the patch [start - 0.5, start + size - 0.5] must contain [low, high]
    first = np.ceil(high + 0.5 - size).astype(int)
    last = np.floor(low + 0.5).astype(int)
    centre = ((low + high) / 2).round().astype(int)
    first, last = np.where(first > last, centre - size // 2, first), np.where(first > last, centre - size // 2, last)
    start = np.array([rng.randint(a, b + 1) for a, b in zip(first, last, strict=True)])
    return np.clip(start, 0, np.maximum(0, shape - size))


class RandBoxPatches(Randomizable):
    """``num_samples`` training patches of ``patch_size`` per case (a list), ``positive_fraction`` of them around
    a box. Images smaller than a patch are padded with zeros (the scaled background) at the far end."""

    def __init__(self, patch_size: Sequence[int], num_samples: int, positive_fraction: float, seed: int = 0) -> None:
        self.size = np.asarray([int(n) for n in patch_size])
        self.num_samples = int(num_samples)
        self.positive_fraction = float(positive_fraction)
        self.set_random_state(seed)

    def randomize(self, data: Any = None) -> None:
        """Draws happen per patch in :meth:`__call__` (from ``self.R``, which the engine reseeds per epoch)."""

    def __call__(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        image = torch.as_tensor(data["image"])
        dims = image.ndim - 1
        size = self.size[:dims]
        shape = np.asarray(image.shape[1:])
        pad = np.maximum(0, size - shape)
        if pad.any():
            image = torch.nn.functional.pad(image, [p for n in pad[::-1] for p in (0, int(n))])
            shape = np.asarray(image.shape[1:])
        boxes = np.asarray(data["box"], dtype=np.float32).reshape(-1, 2 * dims)
        patches = []
        for _ in range(self.num_samples):
            positive = len(boxes) > 0 and self.R.random_sample() < self.positive_fraction
            box = boxes[self.R.randint(len(boxes))] if positive else None
            start = patch_start(shape, size, box, self.R)
            window = tuple(slice(int(a), int(a + s)) for a, s in zip(start, size, strict=True))
            patch_boxes, patch_labels = crop_boxes(boxes, data["label"], start, size)
            patches.append({**data, "image": image[tuple([slice(None), *window])].contiguous(), "box": patch_boxes,
                            "label": patch_labels.astype(np.int64)})
        return patches


def anchor_shapes(low: np.ndarray, high: np.ndarray, per_level: int = 2) -> list[list[float]]:
    """Base anchor shapes (network voxels, finest level; MONAI doubles them per level): ``per_level`` geometric
    steps from the small boxes' size ``low`` towards ``2·low`` (not beyond ``high``), so the finest level's
    anchors span the smallest boxes and the coarser levels the larger ones."""
    ratio = np.clip(high / low, 1.0, 2.0) ** (1.0 / per_level)
    return [[round(float(v), 2) for v in low * ratio**n] for n in range(per_level)]


def plan(config: dict[str, Any]) -> dict[str, Any]:
    """Resolve ``spacing: auto`` and ``anchors.base_shapes: auto`` from ``box_statistics`` (training box sizes
    in mm): an isotropic spacing of a quarter of the small (5th percentile) box edge, so that most lesions are
    four voxels or more across, and anchors sized from the boxes on that grid. Without statistics: 4 mm and
    anchors of 4 and 6 voxels."""
    stats = dict(config.get("box_statistics") or {})
    dims = int(config.get("spatial_dims", 3))
    has_boxes = int(stats.get("count", 0)) > 0
    if config.get("spacing") == "auto":
        edge = float(np.min(stats["p5_mm"][:dims])) / 4.0 if has_boxes else 4.0
        config["spacing"] = [round(max(edge, 0.1), 2)] * 3
    if config["anchors"].get("base_shapes") == "auto":
        if has_boxes:  # 2-D: the in-plane axes (x, y) only; the third anchor size is unused
            grid = np.asarray(config["spacing"], dtype=float)[:dims]
            low = np.asarray(stats["p5_mm"][:dims], dtype=float) / grid
            high = np.asarray(stats["p95_mm"][:dims], dtype=float) / grid
            shapes = anchor_shapes(np.maximum(low, 1.0), np.maximum(high, 1.0))
            config["anchors"]["base_shapes"] = [[*s, 1.0] if dims == 2 else s for s in shapes]
        else:
            config["anchors"]["base_shapes"] = [[4.0, 4.0, 4.0], [6.0, 6.0, 6.0]]
    return config
