"""Connected components of a mask with the face (6-) neighbourhood, numbered as ``scipy.ndimage.label`` numbers them.

``scipy.ndimage.label`` is fast, but importing ``scipy.ndimage`` costs about 0.2 s of CPU (SciPy 1.17 clones
NumPy's namespace and rewrites its docstrings at import), more than labelling a small image takes. So a small
mask is labelled here with NumPy alone, giving the same array: the runs of foreground along the last axis are
joined where they touch a run of a neighbouring line, the joined runs are resolved by union-find (roots hooked
to the smaller root, then pointer jumping), and components are numbered in the order of their first voxel in C
order, as SciPy numbers them. A mask of :data:`NUMPY_LIMIT` voxels or more goes to SciPy, which labels faster.
"""

from __future__ import annotations

import numpy as np

NUMPY_LIMIT = 1 << 21
"""Masks below this many voxels (a 128³ volume) are labelled with NumPy, larger ones by ``scipy.ndimage``."""


def _runs(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Each voxel's run (1, 2, … in C order of the runs' first voxels; 0 for background) and the run count."""
    start = mask.copy()
    start[..., 1:] &= ~mask[..., :-1]
    run = np.cumsum(start, dtype=np.int64 if mask.size >= 2**31 else np.int32).reshape(mask.shape)
    run *= mask
    return run, int(run.max(initial=0))


def _touching(mask: np.ndarray, run: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of runs on neighbouring lines that share a face: one pair per stretch where they overlap."""
    firsts, seconds = [], []
    for axis in range(mask.ndim - 1):
        ahead = tuple(slice(1, None) if n == axis else slice(None) for n in range(mask.ndim))
        behind = tuple(slice(None, -1) if n == axis else slice(None) for n in range(mask.ndim))
        both = mask[ahead] & mask[behind]
        stretch = both.copy()
        stretch[..., 1:] &= ~both[..., :-1]
        firsts.append(run[ahead][stretch])
        seconds.append(run[behind][stretch])
    if not firsts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(firsts).astype(np.int64), np.concatenate(seconds).astype(np.int64)


def _roots(count: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The smallest run of each run's component (index 0: background), by union-find on the touching pairs."""
    parent = np.arange(count + 1, dtype=np.int64)
    while first.size:
        a, b = parent[first], parent[second]
        apart = a != b
        if not apart.any():
            break
        first, second, a, b = first[apart], second[apart], a[apart], b[apart]
        np.minimum.at(parent, np.maximum(a, b), np.minimum(a, b))  # hook each root to the smaller root
        while True:  # pointer jumping until every run points at its root
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    return parent


def label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """``(labels, count)``: ``scipy.ndimage.label(mask)`` (the face neighbourhood; ``mask`` at least 1-D), int32
    labels from 1."""
    mask = np.ascontiguousarray(mask, dtype=bool)
    if mask.size >= NUMPY_LIMIT:
        from scipy import ndimage

        labels, count = ndimage.label(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1))
        return labels, int(count)
    run, count = _runs(mask)
    parent = _roots(count, *_touching(mask, run))
    is_root = parent == np.arange(count + 1)
    number = np.cumsum(is_root) - 1  # a root → its component's number; run 0 (background) → 0
    return number[parent].astype(np.int32)[run], int(number[-1])
