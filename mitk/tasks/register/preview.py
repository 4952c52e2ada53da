"""A registration preview: the fixed image and the warped moving image side by side in one PNG, to judge
alignment at a glance.

Two rows of three views (axial, coronal, sagittal) through the middle of the fixed grid, shown the
radiological way as :mod:`mitk.preview` shows them (patient's right on the viewer's left, anterior or
superior up, physical aspect ratio):

* **checkerboard**: tiles taken alternately from the fixed and the warped image, each windowed to its own
  1st–99th percentile, so that a misalignment shows as broken edges at the tile borders;
* **edges**: the warped image in grey with the fixed image's edges (the strongest 10 % of its gradient
  magnitude in each view) drawn over it in colour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mitk.image import Image

MODES = ("both", "checkerboard", "edges")
TILES = 8
"""Checkerboard tiles along the longer side of each view."""
EDGE_COLOUR = (1.0, 0.25, 0.1)


def checkerboard(first: np.ndarray, second: np.ndarray, tiles: int = TILES) -> np.ndarray:
    """A 2-D checkerboard of two equally shaped views: ``first`` on the even tiles, ``second`` on the odd ones."""
    if first.shape != second.shape:
        raise ValueError(f"views differ in shape: {first.shape} and {second.shape}")
    size = max(1, int(np.ceil(max(first.shape) / tiles)))
    rows, columns = np.indices(first.shape)
    odd = ((rows // size) + (columns // size)) % 2 == 1
    return np.where(odd, second, first)


def edges(view: np.ndarray, share: float = 0.1) -> np.ndarray:
    """The pixels of a 2-D view whose gradient magnitude is among its strongest ``share`` (none if flat)."""
    from scipy import ndimage

    values = np.asarray(view, np.float64)
    magnitude = np.hypot(ndimage.sobel(values, axis=0), ndimage.sobel(values, axis=1))
    if not np.any(magnitude > 0):
        return np.zeros(view.shape, bool)
    threshold = np.quantile(magnitude[magnitude > 0], 1.0 - share)
    return np.asarray(magnitude >= threshold)


def _scaled(volume: np.ndarray) -> np.ndarray:
    """``volume`` windowed to its 1st–99th percentile, in [0, 1]."""
    finite = volume[np.isfinite(volume)]
    if not finite.size:
        return np.zeros_like(volume, dtype=np.float32)
    step = max(1, finite.size // 4_000_000)
    low, high = np.percentile(finite[::step], [1, 99])
    if high <= low:
        high = low + 1.0
    return np.clip((np.nan_to_num(volume) - low) / (high - low), 0.0, 1.0).astype(np.float32)


def registration_views(fixed: Image, warped: Image) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """The three mid-grid views of the fixed and the warped image, each windowed to [0, 1]: (name, fixed view,
    warped view, row/column aspect). Both images must share the fixed grid."""
    from mitk.preview import slice_views, to_ras_order

    first, second = (np.asarray(image.array, np.float32) for image in (fixed, warped))
    while first.ndim > 3:
        first = first[..., 0]
    while second.ndim > 3:
        second = second[..., 0]
    if first.shape != second.shape or not np.allclose(fixed.affine, warped.affine, atol=1e-4):
        raise ValueError("the warped image is not on the fixed image's grid")
    first_ras, spacing = to_ras_order(_scaled(first), fixed.affine)
    second_ras, _ = to_ras_order(_scaled(second), fixed.affine)
    centre = tuple((n - 1) // 2 for n in first_ras.shape[:3])
    return slice_views(first_ras, second_ras, spacing, centre)


def save_registration_preview(fixed: Image, warped: Image, path: str | Path, mode: str = "both") -> Path:
    """Write a PNG of ``warped`` (the moving image on the fixed grid) against ``fixed``: a checkerboard row, an
    edge-overlay row, or both (``mode``), through the middle of the fixed grid. Returns the path.

    Needs matplotlib (the ``preview`` extra). The file is written in place: callers that need it atomic (as
    ``mitk register --preview`` does) write to a temporary name and rename it.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from mitk.preview import DPI, PANEL_INCHES, name_edges

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    views = registration_views(fixed, warped)
    rows = ["checkerboard", "edges"] if mode == "both" else [mode]
    figure = Figure(figsize=(3 * PANEL_INCHES, len(rows) * PANEL_INCHES), dpi=DPI, facecolor="black")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(len(rows), 3, left=0.03, right=0.99, top=0.97 - 0.03 / len(rows), bottom=0.01,
                               wspace=0.02, hspace=0.08)
    for row, kind in enumerate(rows):
        for column, (name, first, second, aspect) in enumerate(views):
            ax: Any = figure.add_subplot(grid[row, column])
            if kind == "checkerboard":
                ax.imshow(checkerboard(first, second), cmap="gray", vmin=0, vmax=1, aspect=aspect,
                          interpolation="nearest")
            else:
                ax.imshow(second, cmap="gray", vmin=0, vmax=1, aspect=aspect, interpolation="nearest")
                layer = np.zeros((*first.shape, 4), np.float32)
                layer[edges(first)] = (*EDGE_COLOUR, 0.9)
                ax.imshow(layer, aspect=aspect, interpolation="nearest")
            ax.set_title(f"{name}: {kind}" if column == 0 else name, color="white", fontsize=10)
            name_edges(ax, name)
            ax.set_axis_off()
        label = "fixed | warped tiles" if kind == "checkerboard" else "warped, fixed edges in red"
        figure.text(0.015, 1 - (row + 0.5) / len(rows), label, color="white", fontsize=9, rotation=90,
                    ha="center", va="center")
    target = Path(path)
    figure.savefig(target, format="png", dpi=DPI, facecolor="black")
    return target
