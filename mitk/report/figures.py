"""The pictures of a report, drawn with Pillow as PNG bytes (no matplotlib, no torch).

Views follow :mod:`mitk.preview`: the array is turned to RAS order by its affine, then shown the radiological
way (the patient's right on the viewer's left; anterior or superior up); pixels keep their physical aspect.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from mitk.preview import LABEL_COLOURS, foreground_centre, slice_views, to_ras_order

VIEW_PIXELS = 256
"""The longer edge of one view in a case's section."""
THUMB_PIXELS = 128
"""The longer edge of a thumbnail in the summary table."""
EDGE_LETTERS = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"), "sagittal": ("A", "P", "S", "I")}


def data_uri(png: bytes) -> str:
    """``png`` as a ``data:`` URI for an ``<img src>``."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def volume_of(array: Any) -> np.ndarray:
    """The first channel of ``array`` as a 3-D float array (a 2-D image becomes one slice)."""
    volume = np.asarray(array)
    while volume.ndim > 3:
        volume = volume[..., 0]
    if volume.ndim == 2:
        volume = volume[..., None]
    return volume.astype(np.float32)


def window(volume: np.ndarray) -> tuple[float, float]:
    """The 1st and 99th percentiles of the finite values (a regular subsample of a large volume)."""
    sample = volume.ravel()[:: max(1, volume.size // 2_000_000)]
    finite = sample[np.isfinite(sample)]
    if not finite.size:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(finite, [1, 99]))
    return low, high if high > low else low + 1.0


def grey(view: np.ndarray, low: float, high: float) -> np.ndarray:
    """``view`` windowed to ``[low, high]`` as RGB bytes."""
    scaled = np.clip((np.nan_to_num(view, nan=low) - low) / (high - low), 0.0, 1.0)
    channel = (scaled * 255).astype(np.uint8)
    return np.repeat(channel[..., None], 3, axis=2)


def blend_labels(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Each label's colour over ``rgb`` (fill at ``alpha``, outline opaque)."""
    out = rgb.astype(np.float32)
    for value in np.unique(labels):
        if value == 0:
            continue
        colour = np.array(LABEL_COLOURS[(int(value) - 1) % len(LABEL_COLOURS)], np.float32)
        inside = labels == value
        out[inside] = (1 - alpha) * out[inside] + alpha * colour
        out[outline(inside)] = colour
    return out.astype(np.uint8)


def outline(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` with a 4-neighbour outside it."""
    padded = np.pad(mask, 1)
    interior = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def to_png(rgb: np.ndarray, aspect: float, longest: int, letters: Sequence[str] | None = None) -> bytes:
    """``rgb`` (rows × columns × 3) scaled so that pixels keep ``aspect`` (row/column spacing) and the longer edge
    is ``longest``; with ``letters`` (left, right, top, bottom) written at the edges."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    rows, columns = rgb.shape[:2]
    height, width = rows * aspect, float(columns)
    scale = longest / max(height, width, 1e-6)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    picture = PILImage.fromarray(np.ascontiguousarray(rgb), "RGB").resize(size, PILImage.Resampling.NEAREST)
    if letters is not None and min(size) >= 32:
        draw = ImageDraw.Draw(picture)
        left, right, top, bottom = letters
        w, h = size
        for text, (x, y) in ((left, (2, h // 2 - 5)), (right, (w - 9, h // 2 - 5)), (top, (w // 2 - 3, 1)),
                             (bottom, (w // 2 - 3, h - 12))):
            draw.text((x, y), text, fill=(255, 255, 0))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    return to_ras_order(array, np.asarray(affine, dtype=float))


def label_views(image: np.ndarray, affine: np.ndarray, labels: np.ndarray | None,
                longest: int = VIEW_PIXELS, views: Sequence[str] = ("axial", "coronal", "sagittal")
                ) -> list[tuple[str, bytes]]:
    """PNGs of ``labels`` (or none) over ``image`` through the labels' centre of mass, one per view."""
    volume = volume_of(image)
    label_map = np.zeros(volume.shape, np.int64) if labels is None else volume_of(labels).astype(np.int64)
    if label_map.shape != volume.shape:
        raise ValueError(f"the label map's shape {label_map.shape} is not the image's {volume.shape}")
    volume, spacing = ras(volume, affine)
    label_map, _ = ras(label_map, affine)
    low, high = window(volume)
    found = []
    for name, view, view_labels, aspect in slice_views(volume, label_map, spacing, foreground_centre(label_map)):
        if name not in views or (min(view.shape) < 2 and volume.shape[2] > 1 and name != "axial"):
            continue
        rgb = blend_labels(grey(view, low, high), view_labels)
        found.append((name, to_png(rgb, aspect, longest, EDGE_LETTERS[name])))
    return found


def box_crop(image: np.ndarray, affine: np.ndarray, box_voxel: Sequence[float], margin: float = 0.5,
             longest: int = 160) -> bytes:
    """The axial slice through the centre of a box (voxel indices of ``image``), cropped around it with
    ``margin`` times its size on each side, the box outlined in yellow."""
    volume = volume_of(image)
    i0, j0, k0, i1, j1, k1 = (float(v) for v in box_voxel)
    mask = np.zeros(volume.shape, bool)
    low_corner = [max(0, int(np.floor(v))) for v in (i0, j0, k0)]
    high_corner = [min(n, max(lo + 1, int(np.ceil(v)))) for n, lo, v in zip(volume.shape, low_corner, (i1, j1, k1),
                                                                              strict=True)]
    mask[low_corner[0]:high_corner[0], low_corner[1]:high_corner[1], low_corner[2]:high_corner[2]] = True
    volume, spacing = ras(volume, affine)
    mask, _ = ras(mask, affine)
    low, high = window(volume)
    where = np.argwhere(mask)
    if not where.size:
        raise ValueError("the box lies outside the image")
    lo, hi = where.min(axis=0), where.max(axis=0) + 1
    z = int((lo[2] + hi[2] - 1) // 2)
    pad = [int(np.ceil((hi[a] - lo[a]) * margin)) + 2 for a in range(2)]
    x0, x1 = max(0, lo[0] - pad[0]), min(volume.shape[0], hi[0] + pad[0])
    y0, y1 = max(0, lo[1] - pad[1]), min(volume.shape[1], hi[1] + pad[1])
    view = volume[x0:x1, y0:y1, z].T[::-1, ::-1]
    box = mask[x0:x1, y0:y1, z].T[::-1, ::-1]
    rgb = grey(view, low, high)
    rgb[outline(box)] = (255, 255, 0)
    return to_png(rgb, spacing[1] / spacing[0], longest)


def checkerboard(fixed: np.ndarray, warped: np.ndarray, affine: np.ndarray, tiles: int = 8,
                 longest: int = VIEW_PIXELS) -> list[tuple[str, bytes]]:
    """Per view through the volume centre: fixed and warped in alternating tiles, and the fixed image's edges
    (red) over the warped image; the two must share the fixed grid."""
    a, b = volume_of(fixed), volume_of(warped)
    if a.shape != b.shape:
        raise ValueError(f"the warped image's shape {b.shape} is not the fixed image's {a.shape}")
    a, spacing = ras(a, affine)
    b, _ = ras(b, affine)
    centre = tuple((n - 1) // 2 for n in a.shape)
    wa, wb = window(a), window(b)
    found = []
    views_a = slice_views(a, np.zeros(a.shape, np.int8), spacing, centre)
    views_b = slice_views(b, np.zeros(b.shape, np.int8), spacing, centre)
    for (name, view_a, _, aspect), (_, view_b, _, _) in zip(views_a, views_b, strict=True):
        if min(view_a.shape) < 2:
            continue
        rows, columns = view_a.shape
        r = (np.arange(rows) * tiles // rows)[:, None]
        c = (np.arange(columns) * tiles // columns)[None, :]
        board = np.where((r + c) % 2 == 0, 1, 0).astype(bool)
        mixed = np.where(board[..., None], grey(view_a, *wa), grey(view_b, *wb))
        found.append((f"{name} checkerboard", to_png(mixed, aspect, longest, EDGE_LETTERS[name])))
        edges = grey(view_b, *wb)
        edges[edge_map(view_a)] = (255, 40, 40)
        found.append((f"{name} fixed edges on warped", to_png(edges, aspect, longest, EDGE_LETTERS[name])))
    return found


def edge_map(view: np.ndarray) -> np.ndarray:
    """Strong edges of ``view``: gradient magnitude above its 90th percentile (of non-zero gradients)."""
    rows, columns = np.gradient(np.nan_to_num(view.astype(np.float32)))
    magnitude = np.hypot(rows, columns)
    positive = magnitude[magnitude > 0]
    if not positive.size:
        return np.zeros(view.shape, bool)
    return np.asarray(magnitude > np.percentile(positive, 90))
